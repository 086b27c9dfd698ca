"""cocotb module for tests/sim/test_rtl.py: one test that passes and, on request, one that fails."""

from __future__ import annotations

import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge


@cocotb.test()
async def adds(dut):
    dut.a.value = 0
    dut.b.value = 0
    dut.rst.value = 1
    Clock(dut.clk, 10, unit="ns").start()
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    for a, b in [(1, 2), (255, 255), (100, 27)]:
        await RisingEdge(dut.clk)
        dut.a.value = a
        dut.b.value = b
        await RisingEdge(dut.clk)
        await FallingEdge(dut.clk)
        assert dut.total.value.to_unsigned() == a + b


@cocotb.test(skip=os.environ.get("RTL_SMOKE_FAIL") != "1")
async def fails_on_purpose(dut):
    Clock(dut.clk, 10, unit="ns").start()
    await ClockCycles(dut.clk, 1)
    assert dut.total.value.to_unsigned() == 12345, "deliberate failure"
