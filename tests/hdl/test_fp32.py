# amaranth: UnusedElaboratable=no
"""hdl/fp32.py against the golden ``accelml.sim.bfp.to_internal``, in Amaranth's simulator."""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from accelml.hdl.errors import NumericsError
from accelml.hdl.fp32 import F32Add, F32Mul, ScaledIntToF32
from accelml.sim.bfp import to_internal

FLT_MAX_BITS = 0x7F7F_FFFF


def f32_bits(x: float) -> int:
    return int(np.array(x, np.float32).view(np.uint32))


def bits_f32(b: int) -> float:
    return float(np.array(b, np.uint32).view(np.float32))


def golden(exact: float) -> int | None:
    """Expected binary32 bits, or None when the golden model reports an overflow."""
    try:
        return int(to_internal(np.array([exact]))[0:1].view(np.uint32)[0])
    except NumericsError:
        return None


def run_comb(dut, vectors, inputs, check):
    """Apply each input vector to a combinational ``dut``; ``check(vector, result, overflow)``."""
    seen = []

    async def tb(ctx):
        for vec in vectors:
            for port, value in zip(inputs, vec, strict=True):
                ctx.set(getattr(dut, port), value)
            seen.append((vec, ctx.get(dut.result), ctx.get(dut.overflow)))

    sim = Simulator(dut)
    sim.add_testbench(tb)
    sim.run()
    assert len(seen) == len(vectors)
    for vec, result, overflow in seen:
        check(vec, result, overflow)


# -- ScaledIntToF32 -----------------------------------------------------------------------------

def converter_vectors(d_width: int, s_width: int, rng: random.Random):
    lo, hi = -(1 << (d_width - 1)), (1 << (d_width - 1)) - 1
    smin, smax = -(1 << (s_width - 1)), (1 << (s_width - 1)) - 1
    vecs = [(0, 0), (0, smin), (0, smax), (1, 0), (-1, 0), (hi, 0), (lo, 0), (lo + 1, 0)]
    # FTZ boundary: 2**-126 exactly, just below, and values that round up to 2**-126.
    vecs += [(1, -126), (1, -127), (-1, -126), (-1, -127), (3, -128), (-3, -128)]
    if d_width > 25:
        vecs += [((1 << 25) - 1, -151), (-(1 << 25) + 1, -151), ((1 << 24) - 1, -150)]
        # ties to even: 25 significant bits ending in 1; kept LSB even (round down) / odd (up)
        vecs += [((1 << 24) + 1, 0), ((1 << 24) + 3, 0), (-(1 << 24) - 1, 0), (-(1 << 24) - 3, 0)]
        vecs += [(((1 << 24) + 1) << 3 | 0b100, 5), (((1 << 24) + 2) << 3 | 0b100, 5)]
        vecs += [(((1 << 24) + 1) << 3 | 0b101, 5), ((1 << 25) - 1, 0)]
        # largest finite and the smallest magnitude that rounds past it
        vecs += [((1 << 24) - 1, 104), ((1 << 25) - 1, 103), (-(1 << 25) + 1, 103), ((1 << 25) - 2, 103)]
    vecs += [((1 << 23) + 5, 104), (1, 127), (1, 128), (-1, 128), (1, smax)]
    vecs = [(d, s) for d, s in vecs if lo <= d <= hi and smin <= s <= smax]
    for _ in range(300):
        bits = rng.randint(1, d_width - 1)
        d = rng.randint(1 << (bits - 1), (1 << bits) - 1) * rng.choice((1, -1))
        # exponents around both ends of the binary32 range and in between
        target = rng.choice((-126, 127, 128, rng.randint(-140, 140)))
        s = max(smin, min(smax, target - bits + rng.randint(-2, 2)))
        vecs.append((d, s))
    return vecs


@pytest.mark.parametrize(("d_width", "s_width"), [(17, 11), (11, 11), (49, 11), (53, 10)])
def test_scaled_int_to_f32(d_width, s_width):
    rng = random.Random(d_width * 1000 + s_width)
    vecs = converter_vectors(d_width, s_width, rng)
    outcomes = {"ftz": 0, "overflow": 0, "rounded": 0}

    def check(vec, result, overflow):
        d, s = vec
        exact = float(np.ldexp(float(d), s))
        assert float(d) * 2.0**s == exact  # the float64 value is exact here
        want = golden(exact)
        if want is None:
            outcomes["overflow"] += 1
            assert overflow == 1, f"d={d} s={s}: overflow not flagged"
            return
        assert overflow == 0, f"d={d} s={s}: spurious overflow"
        assert result == want, f"d={d} s={s}: got {result:#010x} want {want:#010x}"
        outcomes["ftz"] += d != 0 and want == 0
        outcomes["rounded"] += bits_f32(want) != exact and want != 0

    run_comb(ScaledIntToF32(d_width, s_width), vecs, ("d", "s"), check)
    # the vectors really reach the interesting cases
    assert outcomes["ftz"] > 0 and outcomes["overflow"] > 0
    assert (outcomes["rounded"] > 0) == (d_width > 25)


@pytest.mark.parametrize(
    ("args", "message"),
    [((1.5, 11), "d_width must be an integer"), ((1, 11), "d_width must be in"),
     ((17, 64), "s_width must be in")],
)
def test_scaled_int_to_f32_rejects_parameters(args, message):
    with pytest.raises((TypeError, ValueError), match=message):
        ScaledIntToF32(*args)


# -- F32Add -------------------------------------------------------------------------------------

def rand_f32(rng: random.Random, exp_lo=1, exp_hi=254) -> int:
    return rng.getrandbits(1) << 31 | rng.randint(exp_lo, exp_hi) << 23 | rng.getrandbits(23)


def adder_vectors(rng: random.Random):
    one, two = f32_bits(1.0), f32_bits(2.0)
    tiny = 1 << 23  # 2**-126
    vecs = [
        (0, 0), (0, one), (one, 0), (one, one), (one, one | 1 << 31), (one | 1 << 31, one),
        (FLT_MAX_BITS, FLT_MAX_BITS), (FLT_MAX_BITS | 1 << 31, FLT_MAX_BITS | 1 << 31),
        (FLT_MAX_BITS, FLT_MAX_BITS | 1 << 31),
        (FLT_MAX_BITS, f32_bits(2.0**103)),  # exactly half an ulp: tie, rounds up to 2**128
        (FLT_MAX_BITS, f32_bits(2.0**102)),  # below half an ulp: stays
        (tiny, tiny), (tiny | 1 << 31, tiny), (tiny + 1, tiny | 1 << 31),  # 2**-149: FTZ
        (f32_bits(1.5 * 2.0**-126), f32_bits(-1.25 * 2.0**-126)),  # 2**-128: FTZ
        (f32_bits(2.0**-125), f32_bits(-(2.0**-126))),  # exactly 2**-126: kept
        (f32_bits(1 + 2.0**-23), f32_bits(-1.0)),  # one ulp left
        (one, f32_bits(2.0**-24)),  # tie, LSB even: down
        (f32_bits(1 + 2.0**-23), f32_bits(2.0**-24)),  # tie, LSB odd: up
        (one, f32_bits(2.0**-24 + 2.0**-47)),  # just above the tie
        (two, f32_bits(-(2.0**-25))), (two, f32_bits(-(2.0**-24) - 2.0**-48)),
        (f32_bits(2.0**24), f32_bits(-0.5)), (f32_bits(2.0**24), f32_bits(-0.5 - 2.0**-20)),
        (f32_bits(2.0 - 2.0**-23), f32_bits(2.0**-24)),  # carry out of rounding
    ]
    for _ in range(150):  # anything goes
        vecs.append((rand_f32(rng), rand_f32(rng)))
    for _ in range(150):  # close exponents, often opposite signs: cancellation
        a = rand_f32(rng)
        e = (a >> 23) & 0xFF
        eb = max(1, min(254, e + rng.randint(-27, 27) if rng.random() < 0.5 else e + rng.randint(-1, 1)))
        frac = a & 0x7FFFFF if rng.random() < 0.3 else rng.getrandbits(23)
        b = rng.getrandbits(1) << 31 | eb << 23 | frac
        vecs.append((a, b))
    for _ in range(60):  # near the bottom (FTZ) and the top (overflow) of the range
        vecs.append((rand_f32(rng, 1, 4), rand_f32(rng, 1, 4)))
        vecs.append((rand_f32(rng, 252, 254), rand_f32(rng, 252, 254)))
    return vecs


def test_f32_add():
    vecs = adder_vectors(random.Random(2024))
    outcomes = {"ftz": 0, "overflow": 0, "zero": 0}

    def check(vec, result, overflow):
        a, b = vec
        want = golden(bits_f32(a) + bits_f32(b))
        if want is None:
            outcomes["overflow"] += 1
            assert overflow == 1, f"{a:#010x} + {b:#010x}: overflow not flagged"
            return
        assert overflow == 0, f"{a:#010x} + {b:#010x}: spurious overflow"
        assert result == want, f"{a:#010x} + {b:#010x}: got {result:#010x} want {want:#010x}"
        outcomes["zero"] += want == 0
        outcomes["ftz"] += want == 0 and bits_f32(a) != -bits_f32(b)

    run_comb(F32Add(), vecs, ("a", "b"), check)
    assert outcomes["ftz"] > 3 and outcomes["overflow"] > 3 and outcomes["zero"] > 3


# -- F32Mul -------------------------------------------------------------------------------------

def test_f32_mul():
    rng = random.Random(77)
    one = f32_bits(1.0)
    vecs = [(0, one), (one, 0), (one, one), (FLT_MAX_BITS, one), (FLT_MAX_BITS, f32_bits(2.0)),
            (f32_bits(2.0**-63), f32_bits(2.0**-63)),  # exactly 2**-126: kept
            (f32_bits(2.0**-64), f32_bits(2.0**-63)),  # 2**-127: FTZ
            (f32_bits(2.0 - 2.0**-23), f32_bits(2.0**-64)),  # rounds up to 2**-126: kept
            (f32_bits(1 + 2.0**-23), f32_bits(1 + 2.0**-23)),  # 1 + 2**-22 + 2**-46: rounds down
            (f32_bits(1 + 3 * 2.0**-23), f32_bits(1 + 2.0**-1)),  # tie cases around the last bit
            (f32_bits(-2.0**100), 0x0000_0001), (f32_bits(1.5), 0x0040_0001),  # subnormal operands: exact
            (0x7F80_0000, one), (one, 0xFF80_0000), (0x7FC0_0000, one), (0x7F80_0000, 0)]  # Inf, NaN: refused
    for _ in range(300):
        a = rand_f32(rng)
        ea = (a >> 23) & 0xFF
        # products near the bottom and the top of the range, and anywhere
        target = rng.choice((127, 126, 128, 381, 380, rng.randint(128, 380)))
        eb = max(1, min(254, target - ea))
        vecs.append((a, rng.getrandbits(1) << 31 | eb << 23 | rng.getrandbits(23)))
    outcomes = {"ftz": 0, "overflow": 0}

    def check(vec, result, overflow):
        a, b = vec
        with np.errstate(invalid="ignore"):  # Inf * 0 is NaN: refused like an overflow
            want = golden(float(np.float64(bits_f32(a)) * np.float64(bits_f32(b))))
        if want is None:
            outcomes["overflow"] += 1
            assert overflow == 1, f"{a:#010x} * {b:#010x}: overflow not flagged"
            return
        assert overflow == 0, f"{a:#010x} * {b:#010x}: spurious overflow"
        assert result == want, f"{a:#010x} * {b:#010x}: got {result:#010x} want {want:#010x}"
        outcomes["ftz"] += want == 0 and a & 0x7FFF_FFFF != 0 and b & 0x7FFF_FFFF != 0

    run_comb(F32Mul(), vecs, ("a", "b"), check)
    assert outcomes["ftz"] > 3 and outcomes["overflow"] > 3
