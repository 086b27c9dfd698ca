"""cocotb module of test_dma.py: ``accelml_byte_shift`` against Python's shifts.

Reads ``shift_job.json`` (the operand's bits, the result widths, the operands) from the run
directory; drives every operand with every amount of the 4-bit input and writes ``checked.txt``
(how many pairs were compared).
"""

from __future__ import annotations

import json

import cocotb
from cocotb.triggers import Timer


@cocotb.test()
async def byte_shifts(dut):
    job = json.loads(open("shift_job.json").read())
    checked = 0
    for x in job["values"]:
        for s in range(16):
            dut.value.value = x
            dut.amount.value = s
            await Timer(1, "ns")
            for w in job["widths"]:
                cut = (1 << w) - 1
                got = (int(getattr(dut, f"left{w}").value), int(getattr(dut, f"right{w}").value))
                assert got == ((x << 8 * s) & cut, (x >> 8 * s) & cut), (x, s, w, got)
            checked += 1
    open("checked.txt", "w").write(f"{checked}\n")
