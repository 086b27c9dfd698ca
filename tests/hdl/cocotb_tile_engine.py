"""cocotb tests of the tile engine (run by test_tile_engine.py through accelml.sim.rtl).

The configuration comes as JSON in ``TILE_ENGINE_CFG``. One coroutine drives the input stream
(with optional gaps), the output ``ready`` (with optional stalls) and samples both streams at the
falling clock edge, when everything has settled for the next rising edge. Every result is
compared bit for bit with the golden model (tile_engine_vectors.Scoreboard). The stream rules
are checked too: an offered result must stay valid and unchanged until it is taken.
"""

from __future__ import annotations

import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge
from stream_ready import Ready
from tile_engine_vectors import Scoreboard, corner_steps, pack_step, random_jobs, unpack_result

from accelml.hdl.config import EngineConfig

CFG = EngineConfig.from_json(os.environ["TILE_ENGINE_CFG"])


def rng_for(name: str) -> random.Random:
    return random.Random(f"{name}/{cocotb.RANDOM_SEED}")


async def reset(dut) -> None:
    dut.step__valid.value = 0
    dut.step__payload.value = 0
    dut.result__ready.value = 0
    dut.rst.value = 1
    Clock(dut.clk, 10, unit="ns").start()
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


async def run(dut, steps, rng: random.Random, *, gap: float = 0.0, ready: Ready | None = None):
    """Stream ``steps`` in, collect every result; return (results, cycles, input stall cycles)."""
    packed = [pack_step(CFG, s) for s in steps]
    want = sum(s.last for s in steps)
    results = []
    k = 0
    offering = False
    held = None  # payload of a result offered but not taken
    cycles = blocked = 0
    limit = 50 * len(steps) + 200
    while len(results) < want:
        # just after a rising edge: drive this cycle's inputs
        if not offering and k < len(steps) and rng.random() >= gap:
            offering = True
            dut.step__payload.value = packed[k]
        dut.step__valid.value = int(offering)
        take = ready.next() if ready is not None else True
        dut.result__ready.value = int(take)
        await FallingEdge(dut.clk)
        cycles += 1
        assert cycles < limit, f"no progress: {len(results)} of {want} results after {cycles} cycles"
        if offering:
            if dut.step__ready.value:
                k += 1
                offering = False
            else:
                blocked += 1
        valid = bool(dut.result__valid.value)
        payload = dut.result__payload.value.to_unsigned() if valid else None
        if held is not None:
            assert valid and payload == held, "an offered result changed or vanished before it was taken"
        held = None
        if valid and take:
            results.append(unpack_result(CFG, payload))
        elif valid:
            held = payload
        await RisingEdge(dut.clk)
    dut.step__valid.value = 0
    await ClockCycles(dut.clk, 8)
    assert not dut.result__valid.value, "a result appeared that no step asked for"
    return results, cycles, blocked


def check(dut, steps, results) -> None:
    board = Scoreboard(CFG)
    expected = board.expected(steps)
    assert len(results) == len(expected), f"{len(results)} results, expected {len(expected)}"
    for k, (exp, (acc, overflow)) in enumerate(zip(expected, results, strict=True)):
        assert overflow == exp.overflow, (
            f"result {k}: overflow flag {overflow}, expected {exp.overflow} (rows {exp.rows})")
        for j, want in enumerate(exp.rows):
            if want is not None:
                assert acc[j] == want, f"result {k} row {j}: got {acc[j]:#010x}, expected {want:#010x}"
    dut._log.info(
        "%d steps, %d results (%d with overflow) match the golden model; %d row(s) where "
        "block_matmul's fast path reports a spurious overflow were taken from the definition",
        len(steps), len(results), sum(e.overflow for e in expected), board.golden_divergences)


@cocotb.test()
async def corner_cases(dut):
    """Zeros, full-scale mantissas, FTZ and overflow at the exponent extremes, cancellation, chains."""
    await reset(dut)
    rng = rng_for("corner_cases")
    steps = corner_steps(CFG, rng)
    results, _, _ = await run(dut, steps, rng)
    check(dut, steps, results)


@cocotb.test()
async def corner_cases_with_gaps_and_backpressure(dut):
    await reset(dut)
    rng = rng_for("corner_cases_bp")
    steps = corner_steps(CFG, rng)
    results, _, blocked = await run(dut, steps, rng, gap=0.3, ready=Ready(rng, 0.5, burst=6))
    check(dut, steps, results)
    assert blocked > 0, "back-pressure never reached the input"


@cocotb.test()
async def random_jobs_with_gaps_and_backpressure(dut):
    await reset(dut)
    rng = rng_for("random")
    steps = random_jobs(CFG, rng, 250)
    results, _, _ = await run(dut, steps, rng, gap=0.2, ready=Ready(rng, 0.3, burst=3))
    check(dut, steps, results)


@cocotb.test()
async def full_rate(dut):
    """With no gaps and ``ready`` always high the engine takes a step every cycle."""
    await reset(dut)
    rng = rng_for("full_rate")
    steps = random_jobs(CFG, rng, 60, max_blocks=4)
    results, cycles, blocked = await run(dut, steps, rng)
    check(dut, steps, results)
    assert blocked == 0, f"input stalled {blocked} cycles with the output always ready"
    assert cycles == len(steps) + 4, f"{cycles} cycles for {len(steps)} steps (latency 4)"


@cocotb.test()
async def long_output_stalls(dut):
    """Single-step jobs back to back while ``ready`` drops for up to 40 cycles at a time."""
    await reset(dut)
    rng = rng_for("long_stalls")
    steps = [s for s in random_jobs(CFG, rng, 80, max_blocks=1)]
    results, _, blocked = await run(dut, steps, rng, ready=Ready(rng, 0.2, burst=40))
    check(dut, steps, results)
    assert blocked > 40
