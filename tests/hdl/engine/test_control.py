# amaranth: UnusedElaboratable=no
"""hdl/engine/control.py alone under Amaranth's simulator: a run the watchdog stops while a unit
still runs an instruction, then a new run, which waits for that unit and drops its error."""

from __future__ import annotations

from amaranth.sim import Simulator

from accelml.hdl.config import preset
from accelml.hdl.engine.control import Control
from accelml.hdl.engine.status import ErrorCode
from accelml.hdl.isa import Instruction, Opcode, Space, encode

CFG = preset("tiny")


def test_a_new_run_waits_for_a_unit_left_running_and_drops_its_error():
    ctl = Control(CFG, imem_depth=16)
    words = [encode(Instruction.make(Opcode.LD, space=Space.VRF, rc=0, rm=0, rows=1, length=1)),
             encode(Instruction.make(Opcode.HALT))]
    seen = {}

    async def bench(ctx):
        for i, w in enumerate(words):
            ctx.set(ctl.imem_we, 1)
            ctx.set(ctl.imem_waddr, i)
            ctx.set(ctl.imem_wdata, w)
            await ctx.tick()
        ctx.set(ctl.imem_we, 0)
        ctx.set(ctl.prog_len, len(words))
        ctx.set(ctl.mem_size, 4096)
        ctx.set(ctl.max_steps, 100)
        ctx.set(ctl.max_cycles, 20)
        ctx.set(ctl.dma_load_cmd.ready, 1)  # the load unit takes the command and never finishes it
        ctx.set(ctl.start, 1)
        await ctx.tick()
        ctx.set(ctl.start, 0)
        for _ in range(40):
            await ctx.tick()
        seen["first"] = (ctx.get(ctl.done), ctx.get(ctl.error_code), ctx.get(ctl.error_pc))
        ctx.set(ctl.max_cycles, 1000)
        ctx.set(ctl.start, 1)  # a new run while the load is still in flight
        await ctx.tick()
        ctx.set(ctl.start, 0)
        for _ in range(5):
            await ctx.tick()
        seen["waiting"] = (ctx.get(ctl.steps), ctx.get(ctl.running))
        ctx.set(ctl.dma_load_done.valid, 1)  # the old load ends with an error
        ctx.set(ctl.dma_load_done.payload, ErrorCode.BAD_BFP)
        await ctx.tick()
        ctx.set(ctl.dma_load_done.valid, 0)
        for _ in range(20):  # the new run's load is dispatched; finish it cleanly
            await ctx.tick()
        ctx.set(ctl.dma_load_done.valid, 1)
        ctx.set(ctl.dma_load_done.payload, ErrorCode.NONE)
        await ctx.tick()
        ctx.set(ctl.dma_load_done.valid, 0)
        for _ in range(10):
            await ctx.tick()
        seen["second"] = (ctx.get(ctl.done), ctx.get(ctl.error), ctx.get(ctl.steps))

    sim = Simulator(ctl)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen["first"] == (1, ErrorCode.CYCLE_BUDGET, 0)  # stopped, naming the load in flight
    assert seen["waiting"] == (0, 1)  # running, but no instruction fetched while the old load runs
    assert seen["second"] == (1, 0, 2)  # the old load's error dropped; the new run halts cleanly
