"""Property tests of the golden BFP numerics (docs/numerics.md)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from accelml.hdl.config import preset
from accelml.hdl.errors import NumericsError
from accelml.sim import bfp

CONFIGS = [preset("tiny"), preset("a10"), preset("tiny").with_format("ms-fp9"),
           preset("tiny").with_format("msfp12"), preset("tiny").with_format("mxint8"), preset("wide")]
IDS = ["tiny", "msfp16", "ms-fp9", "msfp12", "mxint8", "wide"]

finite = st.floats(min_value=-2.0**100, max_value=2.0**100, allow_nan=False, allow_infinity=False, width=32)


def block_arrays(cfg, elements=finite):
    return hnp.arrays(np.float32, st.integers(1, 3).map(lambda k: (k * cfg.native_dim,)), elements=elements)


def ulp(t: bfp.BfpTensor) -> np.ndarray:
    return np.repeat(np.ldexp(1.0, t.scale_exp()), t.block, axis=-1)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_error_within_half_ulp_when_not_saturated(cfg, data):
    x = data.draw(block_arrays(cfg)).astype(np.float64)
    t = bfp.quantize(x, cfg)
    err = np.abs(bfp.dequantize(t) - x)
    # exponents that did not clamp at the top: error is at most half a unit in the last place
    top = np.repeat(t.exp == cfg.exp_max, cfg.native_dim)
    assert (err[~top] <= 0.5 * ulp(t)[~top]).all()
    assert (np.abs(t.mant) <= (1 << cfg.mantissa_bits) - 1).all()
    assert ((t.exp >= cfg.exp_min) & (t.exp <= cfg.exp_max)).all()


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_representable_values_round_trip(cfg, data):
    n, m = cfg.native_dim, cfg.mantissa_bits
    x = data.draw(st.integers(cfg.exp_min + 2, cfg.exp_max - 2))
    mant = np.array(data.draw(st.lists(st.integers(-(2**m - 1), 2**m - 1), min_size=n, max_size=n)))
    mant[0] = data.draw(st.sampled_from([-1, 1])) * data.draw(st.integers(2 ** (m - 1), 2**m - 1))  # normalised
    values = np.ldexp(mant.astype(np.float64), x - (m - 1))
    t = bfp.quantize(values, cfg)
    np.testing.assert_array_equal(bfp.dequantize(t), values)
    np.testing.assert_array_equal(t.mant, mant)
    assert int(t.exp[0]) == x


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_quantisation_is_monotonic_within_a_block(cfg, data):
    x = np.sort(data.draw(block_arrays(cfg)).astype(np.float64)[: cfg.native_dim])
    q = bfp.dequantize(bfp.quantize(x, cfg))
    assert (np.diff(q) >= 0).all()


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_block_dot_products_equal_exact_integer_arithmetic(cfg, data):
    """One block: the MVU term is the exact integer dot product, scaled, then rounded once."""
    n, m = cfg.native_dim, cfg.mantissa_bits
    ints = st.lists(st.integers(-(2**m - 1), 2**m - 1), min_size=n, max_size=n)
    am = np.array([data.draw(ints)], np.int32)
    wm = np.array(data.draw(st.lists(ints, min_size=1, max_size=4)), np.int32)
    xa = data.draw(st.integers(-20, 20))
    xw = data.draw(st.integers(-20, 20))
    out = bfp.block_matmul((am, np.array([[xa]])), (wm, np.full((len(wm), 1), xw)), cfg)
    exact = [int(np.dot(am[0].astype(object), row.astype(object))) for row in wm]
    scale = (xa - (m - 1)) + (xw - (m - 1))
    for got, d in zip(out[0], exact, strict=True):
        expected = np.float32(d * 2.0**scale) if d.bit_length() <= 24 else np.float32(
            bfp.to_internal(math.ldexp(float(d), scale)))
        assert got == expected and (d.bit_length() > 24 or float(got) == math.ldexp(d, scale))


@pytest.mark.parametrize("cfg", CONFIGS[:2], ids=IDS[:2])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_accumulation_is_sequential_binary32_in_block_order(cfg, data):
    n = cfg.native_dim
    kb = data.draw(st.integers(1, 6))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    a = bfp.quantize(rng.standard_normal((3, kb * n)) * 10.0 ** rng.integers(-3, 3, (3, 1)), cfg)
    w = bfp.quantize(rng.standard_normal((5, kb * n)), cfg)
    got = bfp.block_matmul(a, w, cfg)
    av, wv = bfp.dequantize(a), bfp.dequantize(w)
    ref = np.zeros((3, 5), np.float32)
    for b in range(kb):
        s = slice(b * n, (b + 1) * n)
        ref = (ref + (av[:, s] @ wv[:, s].T).astype(np.float32)).astype(np.float32)
    np.testing.assert_array_equal(got, ref)


def test_fast_and_general_paths_agree_including_underflow():
    """Tiny exponents force the general path; where both apply they must agree bit for bit."""
    cfg = preset("a10")
    rng = np.random.default_rng(7)
    a = bfp.quantize(rng.standard_normal((4, 64)), cfg)
    w = bfp.quantize(rng.standard_normal((6, 64)), cfg)
    fast = bfp.block_matmul(a, w, cfg)
    # same mantissas, exponents shifted so that some products underflow: general path
    a_small = bfp.BfpTensor(a.mant, (a.exp - 60).astype(np.int16), a.length, a.block, a.mantissa_bits)
    w_small = bfp.BfpTensor(w.mant, (w.exp - 60).astype(np.int16), w.length, w.block, w.mantissa_bits)
    general = bfp.block_matmul(a_small, w_small, cfg)
    assert np.isfinite(general).all()
    # scaled by 2**-120 exactly where nothing flushed
    expected = np.ldexp(fast.astype(np.float64), -120)
    kept = np.abs(expected) >= 2.0**-126 * 2**30
    np.testing.assert_array_equal(general[kept], expected[kept].astype(np.float32))
    tiny = bfp.BfpTensor(a.mant, np.full_like(a.exp, cfg.exp_min), a.length, a.block, a.mantissa_bits)
    assert (bfp.block_matmul(tiny, w_small, cfg) == 0).all()  # every term below 2**-126: flushed


def test_zero_block_is_exact_and_uses_the_minimum_exponent():
    cfg = preset("tiny")
    t = bfp.quantize(np.zeros(8), cfg)
    assert (t.mant == 0).all() and (t.exp == cfg.exp_min).all()
    assert (bfp.dequantize(t) == 0).all()
    assert not np.signbit(bfp.dequantize(bfp.quantize(-np.zeros(4), cfg))).any()


def test_nan_is_refused_naming_the_tensor():
    with pytest.raises(NumericsError, match="conv1.input.*NaN"):
        bfp.quantize(np.array([1.0, np.nan, 0, 0]), preset("tiny"), name="conv1.input")


def test_infinity_saturates_to_the_largest_block():
    cfg = preset("tiny")
    t = bfp.quantize(np.array([np.inf, -np.inf, 1.0, 0.0]), cfg)
    assert int(t.exp[0]) == cfg.exp_max
    assert list(t.mant[:2]) == [127, -127]
    assert t.mant[2] == 0  # 1.0 is far below the block's unit
    big = bfp.quantize(np.array([np.finfo(np.float32).max, 1, 1, 1]), cfg)
    assert int(big.exp[0]) == cfg.exp_max and big.mant[0] == 127  # rounds past 2**M: saturates


def test_rounding_is_to_nearest_even_and_bumps_the_exponent():
    cfg = preset("tiny")  # M = 7: a block with max in [64, 128) has unit 1
    t = bfp.quantize(np.array([100.0, 2.5, 3.5, -2.5]), cfg)
    assert list(t.mant) == [100, 2, 4, -2]
    t = bfp.quantize(np.array([127.6, 1.0, 0, 0]), cfg)  # 127.6 rounds to 128 = 2**M: exponent + 1
    assert int(t.exp[0]) == 7 and list(t.mant[:2]) == [64, 0]


def test_internal_format_rounding_ftz_and_overflow():
    assert bfp.to_internal(np.array([1 + 2.0**-24]))[0] == np.float32(1.0)  # tie to even
    assert bfp.to_internal(np.array([1 + 3 * 2.0**-24]))[0] == np.float32(1 + 2.0**-22)  # tie to even (up)
    assert bfp.to_internal(np.array([2.0**-127]))[0] == 0  # below 2**-126: flushed
    assert not np.signbit(bfp.to_internal(np.array([-2.0**-130, -0.0]))).any()  # never -0
    assert bfp.to_internal(np.array([2.0**-126]))[0] == np.float32(2.0**-126)
    with pytest.raises(NumericsError, match="overflow"):
        bfp.to_internal(np.array([4e38]))
    with pytest.raises(NumericsError, match="overflow"):
        bfp.mfu_add(np.float32(3e38), np.float32(3e38))


@settings(max_examples=300, deadline=None)
@given(a=st.floats(-(2.0**100), 2.0**100, width=32), b=st.floats(-(2.0**100), 2.0**100, width=32))
def test_mfu_add_and_mul_are_binary32_with_ftz(a, b):
    """Internal-format add and multiply equal IEEE binary32 with results below 2**-126 flushed."""
    a32, b32 = np.float32(a), np.float32(b)
    if abs(a32) < 2.0**-126 or abs(b32) < 2.0**-126:
        return  # internal values are never subnormal
    with np.errstate(over="ignore"):
        cases = ((bfp.mfu_add, a32 + b32), (bfp.mfu_mul, a32 * b32))
    for fn, want in cases:
        if np.isinf(want):
            with pytest.raises(NumericsError, match="overflow"):
                fn(a32, b32)
            continue
        got = fn(a32, b32)
        want = np.float32(0) if abs(want) < 2.0**-126 else want
        assert got == want and (want < 0 or not np.signbit(got))


def test_block_dot_defined_by_the_exact_integer_sum_even_when_products_would_overflow():
    """127 * 2**121 times 127 * 2**-6 overflows binary32, but the block's integer dot product is 1."""
    cfg = preset("tiny")
    a = (np.array([[127, -127, 1, 0]]), np.array([[127]]))
    w = (np.array([[127, 127, 1, 0]]), np.array([[0]]))
    out = bfp.block_matmul(a, w, cfg)
    assert out[0, 0] == np.float32(2.0**115)  # d = 1, scale (127 - 6) + (0 - 6)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_binary32_input_quantises_exactly_as_float64(cfg):
    """quantize works in binary32 for binary32 input; it must equal the float64 definition."""
    rng = np.random.default_rng(3)
    for scale in (1e-38, 1e-20, 1e-3, 1.0, 1e20, 1e38):
        x = rng.standard_normal((200, 4 * cfg.native_dim)) * 10.0 ** rng.integers(-6, 6, (200, 1)) * scale
        x = np.clip(x, -3e38, 3e38).astype(np.float32)
        x[0, :5] = [0.0, -0.0, np.inf, -np.inf, 1e-45]
        a, b = bfp.quantize(x, cfg), bfp.quantize(x.astype(np.float64), cfg)
        np.testing.assert_array_equal(a.mant, b.mant)
        np.testing.assert_array_equal(a.exp, b.exp)


def test_blocks_at_the_smallest_exponent_are_not_mistaken_for_zero():
    """A live block at the minimum exponent (tiny values) must send block_matmul to the exact path."""
    cfg = preset("a10")
    rng = np.random.default_rng(5)
    a = bfp.quantize(rng.standard_normal((3, 32)), cfg)
    w = bfp.quantize(rng.standard_normal((4, 32)), cfg)
    tiny_exp = a.exp.copy()
    tiny_exp[:, 0] = cfg.exp_min  # the first block of each row: live mantissas at 2**-127
    t = bfp.BfpTensor(a.mant, tiny_exp, a.length, a.block, a.mantissa_bits)
    av, wv = bfp.dequantize(t), bfp.dequantize(w)
    ref = np.zeros((3, 4), np.float32)
    for b in range(2):
        s = slice(b * 16, (b + 1) * 16)
        ref = bfp.to_internal(ref.astype(np.float64) + bfp.to_internal(av[:, s] @ wv[:, s].T))
    np.testing.assert_array_equal(bfp.block_matmul(t, w, cfg), ref)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_split_quantisation_is_the_engines_recipe_and_adds_a_mantissa(cfg):
    """quantize_split: the first plane is plain quantisation; the second quantises the internal-format
    difference the engine computes (DEQ, subtract, QNT), which leaves about M more bits."""
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((64, 3 * cfg.native_dim)) * np.exp2(rng.integers(-4, 5, (64, 1)))).astype(np.float32)
    hi, lo = bfp.quantize_split(x, cfg, name="x")
    plain = bfp.quantize(x, cfg)
    assert np.array_equal(hi.mant, plain.mant) and np.array_equal(hi.exp, plain.exp)
    rest = bfp.mfu_sub(x, bfp.dequantize_internal(hi))
    again = bfp.quantize(rest, cfg)
    assert np.array_equal(lo.mant, again.mant) and np.array_equal(lo.exp, again.exp)
    e1 = np.abs(bfp.dequantize(hi) - x).max()
    e2 = np.abs(bfp.dequantize(hi) + bfp.dequantize(lo) - x).max()
    assert e1 > 0 and e2 <= e1 * 2.0 ** -(cfg.mantissa_bits - 2), (e1, e2)


def test_leaky_relu_multiplies_only_negative_elements():
    """``x < 0 ? to_internal(x * alpha) : x``: a positive element whose product with alpha would
    overflow passes unchanged; a negative one overflows."""
    alpha = np.float32(2.0**100)
    x = np.array([2.0**100, -1.5, 0.0], np.float32)
    np.testing.assert_array_equal(bfp.mfu_leaky_relu(x, alpha), np.array([2.0**100, -1.5 * 2.0**100, 0.0], np.float32))
    with pytest.raises(NumericsError, match="leaky relu"):
        bfp.mfu_leaky_relu(np.array([-(2.0**100)], np.float32), alpha)
