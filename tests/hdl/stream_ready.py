"""Stream test helpers shared by the block tests: a random ``ready`` pattern (cocotb and pytest) and
one Amaranth-simulator driver for a block with an input and an output stream."""

from __future__ import annotations

import random


class Ready:
    """``ready`` low with probability ``stall``, in runs of 1..``burst`` cycles."""

    def __init__(self, rng: random.Random, stall: float, burst: int = 1):
        self.rng, self.stall, self.burst, self.left = rng, stall, burst, 0

    def next(self) -> bool:
        if self.left > 0:
            self.left -= 1
            return False
        if self.rng.random() < self.stall:
            self.left = self.rng.randint(1, self.burst) - 1
            return False
        return True


def drive_stream(dut, inp, out, packed: list[int], expected: int, *, seed: int, gap: float, stall: float,
                 on_offer=None) -> tuple[list[int], int]:
    """Amaranth-simulator testbench for a block with one input and one output stream: offer the
    payload bits ``packed`` in order with random gaps (``gap``: probability of not offering when
    idle; ``valid`` is never withdrawn), take results with random stalls (``stall``), check that an
    offered result holds until it is taken, and stop after ``expected`` results. ``on_offer(ctx, k)``
    sets side inputs of beat ``k``. Returns (result payload bits, cycles)."""
    from amaranth.sim import Simulator

    rng = random.Random(seed)
    layout = inp.payload.shape()
    results: list[int] = []
    cycles = [0]

    async def tb(ctx):
        k, held = 0, None
        while len(results) < expected:
            cycles[0] += 1
            assert cycles[0] < 20 * len(packed) + 100, "the block stopped making progress"
            offer = k < len(packed) and (rng.random() >= gap or ctx.get(inp.valid))
            ctx.set(inp.valid, offer)
            if offer:
                ctx.set(inp.payload, layout.from_bits(packed[k]))
                if on_offer is not None:
                    on_offer(ctx, k)
            ctx.set(out.ready, rng.random() >= stall)
            if ctx.get(inp.valid) and ctx.get(inp.ready):
                k += 1
            valid = ctx.get(out.valid)
            payload = ctx.get(out.payload.as_value())
            if held is not None:
                assert valid and payload == held, "result changed before it was taken"
            held = None
            if valid and ctx.get(out.ready):
                results.append(payload)
            elif valid:
                held = payload
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return results, cycles[0]
