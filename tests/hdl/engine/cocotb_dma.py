"""cocotb module of test_dma.py: the DMA (with its register files) under random back-pressure.

Reads ``dma_job.json`` (the EngineConfig, the memory image as hex, the commands) from the run
directory. A Python memory model answers the port with random ready / latency / response gaps,
commands arrive after random gaps and ``done`` is taken with random delays. Writes
``mem_out.hex`` (the final image) and ``codes.json`` (each command's completion code).
"""

from __future__ import annotations

import json
import random
from collections import deque

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge

from accelml.hdl.config import EngineConfig
from accelml.hdl.engine.layouts import dma_cmd_layout, mem_req_layout, word_bytes
from accelml.sim import rtl


@cocotb.test()
async def dma_under_back_pressure(dut):
    job = json.loads(open("dma_job.json").read())
    cfg = EngineConfig.from_dict(job["cfg"])
    rnd = random.Random(job["seed"])
    stall = job["stall"]
    w = word_bytes(cfg)
    mem = bytearray(bytes.fromhex(job["image"]))
    cmd_layout, req_layout = dma_cmd_layout(cfg), mem_req_layout(cfg)
    cmds = deque(job["cmds"])
    codes: list[int] = []
    inflight: deque = deque()  # (due cycle, word)
    presented = False
    current = None  # the command being offered, or waited for
    waiting = False
    gap = 0

    dut.cmd__valid.value = 0
    dut.done__ready.value = 0
    dut.mem__req__ready.value = 0
    dut.mem__resp__valid.value = 0
    dut.rst.value = 1
    Clock(dut.clk, 10, unit="ns").start()
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    cycle = 0
    while cmds or current is not None:
        await FallingEdge(dut.clk)
        cycle += 1
        if cycle > 200_000:
            raise AssertionError(f"DMA made no progress: {len(cmds)} commands left, {len(codes)} done")
        # inputs for the coming edge (never waiting for ready before asserting valid)
        if current is None and cmds and gap == 0:
            current, waiting = cmds.popleft(), False
            dut.cmd__payload.value = rtl.pack(cmd_layout, current)
        gap = max(0, gap - 1)
        dut.cmd__valid.value = int(current is not None and not waiting)
        req_ready = rnd.random() >= stall
        dut.mem__req__ready.value = int(req_ready)
        if not presented and inflight and inflight[0][0] <= cycle and rnd.random() >= stall:
            presented = True
            dut.mem__resp__payload.value = inflight[0][1]
        dut.mem__resp__valid.value = int(presented)
        done_ready = rnd.random() >= stall
        dut.done__ready.value = int(done_ready)
        await ReadOnly()
        if current is not None and not waiting and dut.cmd__ready.value:
            waiting = True
        if req_ready and dut.mem__req__valid.value:
            req = rtl.unpack(req_layout, dut.mem__req__payload.value.to_unsigned())
            base = req["addr"] * w
            if req["write"]:
                for b in range(w):
                    if req["mask"] >> b & 1:
                        mem[base + b] = req["data"] >> (8 * b) & 0xFF
            else:
                word = int.from_bytes(mem[base:base + w].ljust(w, b"\0"), "little")
                inflight.append((cycle + rnd.randint(1, 6), word))
        if presented and dut.mem__resp__ready.value:
            inflight.popleft()
            presented = False
        if done_ready and dut.done__valid.value:
            assert waiting, "done before the command was taken"
            codes.append(dut.done__payload.value.to_unsigned())
            current, gap = None, rnd.randint(0, 3)
        await RisingEdge(dut.clk)
    open("mem_out.hex", "w").write(mem.hex())
    open("codes.json", "w").write(json.dumps(codes))
    assert not inflight, "the DMA left reads unanswered"
