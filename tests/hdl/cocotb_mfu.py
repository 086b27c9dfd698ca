"""cocotb tests of the multi-function unit (run by test_mfu.py through accelml.sim.rtl).

The design is ``hdl.mfu.Mfu`` (the four units side by side); the configuration comes as JSON in
``MFU_CFG``, and the golden model runs its numpy definition (``ACCELML_NATIVE=0``, set by the
caller). For each unit one coroutine drives its input stream (random gaps), its output ``ready``
(random stalls) and samples both at the falling clock edge; every output beat is compared bit for
bit with ``accelml.sim.bfp`` (mfu_vectors.check_results), and the stream rules are checked: an
offered result stays valid and unchanged until taken, and no result appears unasked.
"""

from __future__ import annotations

import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge
from mfu_vectors import Checked, check_results, pack_beat, random_beats, unpack_result
from stream_ready import Ready

from accelml.hdl.config import EngineConfig
from accelml.hdl.mfu import UNITS

CFG = EngineConfig.from_json(os.environ["MFU_CFG"])
BEATS = int(os.environ.get("MFU_BEATS", "2000"))


def rng_for(name: str) -> random.Random:
    return random.Random(f"{name}/{cocotb.RANDOM_SEED}")


async def reset(dut) -> None:
    for unit in UNITS:
        getattr(dut, f"{unit}_i__valid").value = 0
        getattr(dut, f"{unit}_i__payload").value = 0
        getattr(dut, f"{unit}_o__ready").value = 0
    for port in ("clip_lo", "clip_hi", "alpha"):
        getattr(dut, port).value = 0
    dut.rst.value = 1
    Clock(dut.clk, 10, unit="ns").start()
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


async def run(dut, unit: str, beats, rng: random.Random, *, gap: float = 0.0, ready: Ready | None = None):
    """Stream ``beats`` into ``unit``; return (results, cycles, input stall cycles)."""
    i_valid, i_payload, i_ready = (getattr(dut, f"{unit}_i__{s}") for s in ("valid", "payload", "ready"))
    o_valid, o_payload, o_ready = (getattr(dut, f"{unit}_o__{s}") for s in ("valid", "payload", "ready"))
    packed = [pack_beat(CFG, unit, b) for b in beats]
    results, k, offering, held = [], 0, False, None
    cycles = blocked = 0
    limit = 50 * len(beats) + 200
    while len(results) < len(beats):
        if not offering and k < len(beats) and rng.random() >= gap:
            offering = True
            i_payload.value = packed[k]
            if unit == "vact":
                for port, value in beats[k].params.items():
                    getattr(dut, port).value = value
        i_valid.value = int(offering)
        take = ready.next() if ready is not None else True
        o_ready.value = int(take)
        await FallingEdge(dut.clk)
        cycles += 1
        assert cycles < limit, f"{unit}: no progress, {len(results)} of {len(beats)} results after {cycles} cycles"
        if offering:
            if i_ready.value:
                k += 1
                offering = False
            else:
                blocked += 1
        valid = bool(o_valid.value)
        payload = o_payload.value.to_unsigned() if valid else None
        if held is not None:
            assert valid and payload == held, f"{unit}: an offered result changed or vanished before it was taken"
        held = None
        if valid and take:
            results.append(unpack_result(CFG, unit, payload))
        elif valid:
            held = payload
        await RisingEdge(dut.clk)
    i_valid.value = 0
    await ClockCycles(dut.clk, 8)
    assert not o_valid.value, f"{unit}: a result appeared that no beat asked for"
    return results, cycles, blocked


async def exercise(dut, unit: str) -> None:
    await reset(dut)
    tally = Checked()
    # full rate: one beat per cycle, the result `latency` cycles later
    rng = rng_for(f"{unit}/full")
    beats = random_beats(CFG, unit, rng, 100)
    results, cycles, blocked = await run(dut, unit, beats, rng)
    check_results(CFG, unit, beats, results, tally)
    assert blocked == 0, f"{unit}: input stalled {blocked} cycles with the output always ready"
    assert cycles == len(beats) + UNITS[unit].latency, f"{unit}: {cycles} cycles for {len(beats)} beats"
    # back-pressure: random gaps on the input and stalls (some long) on the output
    rng = rng_for(f"{unit}/stalls")
    beats = random_beats(CFG, unit, rng, BEATS)
    results, _, blocked = await run(dut, unit, beats, rng, gap=0.2, ready=Ready(rng, 0.3, burst=8))
    check_results(CFG, unit, beats, results, tally)
    assert blocked > 0, f"{unit}: back-pressure never reached the input"
    assert 0 < tally.errors < tally.beats, f"{unit}: {tally.errors} of {tally.beats} beats flagged"
    dut._log.info("%s: %d beats (%d flagged, %d slots compared) match the golden model",
                  unit, tally.beats, tally.errors, tally.slots)


@cocotb.test()
async def deq(dut):
    await exercise(dut, "deq")


@cocotb.test()
async def qnt(dut):
    await exercise(dut, "qnt")


@cocotb.test()
async def vop(dut):
    await exercise(dut, "vop")


@cocotb.test()
async def vact(dut):
    await exercise(dut, "vact")
