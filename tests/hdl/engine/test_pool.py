"""The pool unit's reciprocal (hdl/engine/pool.py): the hardware against its model, the model against
the golden model's ``internal_const(1 / count)``."""

from __future__ import annotations

import random

import numpy as np
import pytest

from accelml.hdl.engine.pool import RECIP_CYCLES, Reciprocal, reciprocal_bits
from accelml.sim import bfp


def _golden(counts: np.ndarray) -> np.ndarray:
    return bfp.internal_const(1.0 / counts, "avg pool reciprocal").view(np.uint32)


def test_reciprocal_model_matches_golden_below_2_20():
    counts = np.arange(1, 1 << 20)
    mismatch = np.nonzero(reciprocal_bits(counts) != _golden(counts))[0]
    assert mismatch.size == 0, f"counts {counts[mismatch[:8]]}"


@pytest.mark.slow
def test_reciprocal_model_matches_golden_below_2_24():
    for lo in range(1, 1 << 24, 1 << 22):
        counts = np.arange(lo, min(lo + (1 << 22), 1 << 24))
        mismatch = np.nonzero(reciprocal_bits(counts) != _golden(counts))[0]
        assert mismatch.size == 0, f"counts {counts[mismatch[:8]]}"


def test_reciprocal_model_rejects_out_of_range():
    with pytest.raises(ValueError, match="counts must lie in"):
        reciprocal_bits(0)


def test_reciprocal_hardware_matches_model():
    from amaranth.sim import Simulator

    rng = random.Random(4)
    counts = [1, 2, 3, 5, 7, 9, 25, 49, 255, 256, 257, (1 << 24) - 1, (1 << 24) + 1, (1 << 40) + 3, (1 << 62) - 1]
    counts += [rng.randint(1, 1 << rng.randint(1, 62)) for _ in range(40)]
    dut = Reciprocal()

    async def tb(ctx):
        for c in counts:
            ctx.set(dut.start, 1)
            ctx.set(dut.count, c)
            await ctx.tick()
            ctx.set(dut.start, 0)
            for _ in range(RECIP_CYCLES - 1):
                await ctx.tick()
            assert ctx.get(dut.done), c
            assert ctx.get(dut.result) == int(reciprocal_bits(c)), c

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
