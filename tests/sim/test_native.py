"""The native simulator kernels (sim/native.c) against the numpy definitions in sim/bfp.py and
sim/memory.py, bit for bit, on random data and on the corners of the formats.

Each test computes a result twice, once with the kernels and once with them switched off (the
module-level ``native.kernels`` replaced by one that returns None), and compares every bit.
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accelml.hdl.config import preset
from accelml.hdl.errors import ExecutionError, NumericsError
from accelml.sim import bfp, memory, native

# ecp5's format (N=8, M=7) with room for the widest case's accumulators (its preset holds 1,024);
# a10's formats on an MRF that is not banked, which takes any number of output blocks an mvc
A10 = dataclasses.replace(preset("a10"), mrf_banked=False, name="a10-unbanked")
CONFIGS = [preset("tiny"), dataclasses.replace(preset("ecp5"), fvrf_vectors=2048), A10,
           preset("tiny").with_format("ms-fp9"), A10.with_format("msfp12"), A10.with_format("mxint8")]
IDS = ["tiny", "ecp5", "msfp16", "ms-fp9", "msfp12", "mxint8"]

pytestmark = pytest.mark.skipif(native.kernels() is None, reason=f"native kernels: {native.status()}")


@contextlib.contextmanager
def numpy_only():
    saved = native.kernels
    native.kernels = lambda: None
    try:
        yield
    finally:
        native.kernels = saved


def both(fn, *args, **kwargs):
    """fn's result with the native kernels, then with numpy only."""
    r1 = fn(*args, **kwargs)
    with numpy_only():
        r2 = fn(*args, **kwargs)
    return r1, r2


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def nasty(rng, shape, scale_spread=40) -> np.ndarray:
    """float32 values over a wide exponent range, with zero blocks, ties, subnormals and signed zeros."""
    x = rng.standard_normal(shape) * np.exp2(rng.integers(-scale_spread, scale_spread, shape))
    flat = x.reshape(-1)
    k = flat.size
    flat[rng.integers(0, k, k // 20)] = 0.0
    flat[rng.integers(0, k, k // 40)] = -0.0
    flat[rng.integers(0, k, k // 40)] = np.ldexp(rng.integers(1, 1 << 10, k // 40) + 0.5, -6)  # ties after scaling
    flat[rng.integers(0, k, k // 80)] = np.float32(1e-40)  # subnormal binary32
    with np.errstate(over="ignore"):  # beyond binary32: +-Inf, which saturates
        return x.astype(np.float32)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_quantize_matches_numpy(cfg):
    rng = np.random.default_rng(1)
    for shape in [(1, cfg.native_dim), (7, 3 * cfg.native_dim + 5), (300, 64)]:
        x = nasty(rng, shape)
        x[0, : cfg.native_dim] = 0.0  # an all-zero block
        if x.shape[0] > 2:
            x[1, 0], x[2, 1] = np.inf, -np.inf  # +-Inf saturate
            x[2, 2] = np.float32(3e38)  # beyond ms-fp9's exponent range: clamps and saturates
        q1, q2 = both(bfp.quantize, x, cfg)
        assert same_bits(q1.mant, q2.mant) and same_bits(q1.exp, q2.exp)
        assert (q1.length, q1.block, q1.mantissa_bits) == (q2.length, q2.block, q2.mantissa_bits)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), spread=st.integers(1, 140))
def test_quantize_matches_numpy_random(seed, spread):
    cfg = preset("a10")
    x = nasty(np.random.default_rng(seed), (5, 48), scale_spread=spread)
    q1, q2 = both(bfp.quantize, x, cfg)
    assert same_bits(q1.mant, q2.mant) and same_bits(q1.exp, q2.exp)


def test_quantize_refuses_nan_naming_the_tensor_in_both():
    x = np.zeros((4, 16), np.float32)
    x[3, 5] = np.nan
    for ctx in (contextlib.nullcontext(), numpy_only()):
        with ctx, pytest.raises(NumericsError, match="conv7.out: contains NaN"):
            bfp.quantize(x, preset("a10"), name="conv7.out")


def random_bfp(rng, cfg, rows, k, spread):
    return bfp.quantize(nasty(rng, (rows, k), spread), cfg)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
@pytest.mark.parametrize("p,kblocks,j", [(1, 1, 1), (5, 3, 17), (40, 9, 48), (130, 4, 33), (200, 20, 70)])
def test_block_matmul_matches_numpy(cfg, p, kblocks, j):
    """Row split (p >= 96), panel split (few rows, several panels), ragged panels, continued sums."""
    rng = np.random.default_rng(p * 1000 + j)
    n = cfg.native_dim
    a = random_bfp(rng, cfg, p, kblocks * n, 6)
    w = random_bfp(rng, cfg, j, kblocks * n, 6)
    acc = (rng.standard_normal((p, j)) * 4).astype(np.float32)
    for start in (None, acc):
        r1, r2 = both(bfp.block_matmul, a, w, cfg, acc=start)
        assert same_bits(r1, r2)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), spread=st.integers(1, 60), shift=st.integers(-120, 100))
def test_block_matmul_matches_numpy_across_exponent_ranges(seed, spread, shift):
    """Ranges that take the native path, and ones that fall back (subnormal units, overflow)."""
    cfg = preset("a10")
    rng = np.random.default_rng(seed)
    a = random_bfp(rng, cfg, 9, 64, spread)
    with np.errstate(over="ignore"):
        w = bfp.quantize(nasty(rng, (20, 64), spread) * np.float32(2.0**shift), cfg)
    try:
        r1 = bfp.block_matmul(a, w, cfg)
    except NumericsError as e:
        with numpy_only(), pytest.raises(NumericsError):
            bfp.block_matmul(a, w, cfg)
        assert "overflow" in str(e)
        return
    with numpy_only():
        r2 = bfp.block_matmul(a, w, cfg)
    assert same_bits(r1, r2)


def test_block_matmul_overflow_is_refused_by_both():
    cfg = preset("a10")
    big = np.full((2, 64), 2.0**100, np.float32)
    a, w = bfp.quantize(big, cfg), bfp.quantize(big, cfg)
    for ctx in (contextlib.nullcontext(), numpy_only()):
        with ctx, pytest.raises(NumericsError, match="overflow"):
            bfp.block_matmul(a, w, cfg)


def test_scale_range_matches_nonzero_block_range():
    """The scaled image's exponent range equals bfp.nonzero_block_range, whose zero blocks count
    except at the smallest exponent; the scaled values equal the mantissas times their units."""
    k = native.kernels()
    rng = np.random.default_rng(8)
    n, m_bits = 16, 7
    for case in range(8):
        blocks = int(rng.integers(1, 40))
        mant = rng.integers(-127, 128, (blocks, n)).astype(np.int16)
        exp = rng.integers(-20, 20, blocks).astype(np.int16)
        zero = rng.random(blocks) < [0.0, 0.3, 1.0, 0.5, 0.9, 0.0, 0.2, 0.6][case]
        mant[zero] = 0
        if case == 5:
            exp[:] = 3  # one exponent everywhere
        if case == 6:
            exp[zero] = exp.min() - 1  # the zero blocks alone at the smallest exponent
        if case == 7:
            exp[zero] = exp.max() + 1  # zero blocks above every live one still count
        sexp = exp.astype(np.int32) - (m_bits - 1)
        want = bfp.nonzero_block_range(mant, sexp, n)
        out = np.empty((blocks, n), np.float32)
        r = np.empty(4, np.int64)
        k.scale_range_i16(0, blocks, n, m_bits, native.ptr(mant), native.ptr(exp), native.ptr(out), native.ptr(r))
        lo, live, second, hi = (int(v) for v in r)
        got = (lo, hi) if live else ((second, hi) if second != np.iinfo(np.int64).max else None)
        assert got == want, case
        assert same_bits(out, (mant * np.ldexp(np.float32(1), sexp)[:, None]).astype(np.float32))
        if not k.has_gemm_i8:
            continue
        u8, shift = np.empty((blocks, n), np.uint8), np.empty(blocks, np.int32)
        k.image_u8(blocks, n, m_bits, native.ptr(mant), native.ptr(exp), native.ptr(u8), native.ptr(shift),
                   native.ptr(r))
        lo, live, second, hi = (int(v) for v in r)
        assert ((lo, hi) if live else ((second, hi) if second != np.iinfo(np.int64).max else None)) == want
        assert same_bits(u8, (mant + 128).astype(np.uint8))
        assert same_bits(shift, np.where(mant.any(axis=1), sexp * 2**23, 0).astype(np.int32))


def _conv_sim(cfg, h, w, cb, cob, kh, kw, stride, dil, pads, *, gi=0, go=0, ob0=0, npix=None, pix0=0, seed=0,
              shift=(0, 0)):
    """FuncSim after a window MVC (then a second one accumulating onto it) on random operands."""
    from accelml.hdl.program import assemble_program
    from accelml.sim.funcsim import FuncSim
    from accelml.sim.layout import MemoryImage

    rng = np.random.default_rng(seed)
    n = cfg.native_dim
    oh = (h + pads[0] + pads[2] - dil * (kh - 1) - 1) // stride + 1
    ow = (w + pads[1] + pads[3] - dil * (kw - 1) - 1) // stride + 1
    npix = oh * ow - pix0 if npix is None else npix
    tiles = cob * kh * kw * (gi or cb)
    with np.errstate(over="ignore"):
        x = bfp.quantize(nasty(rng, (h * w, cb * n), 8) * np.float32(2.0 ** shift[0]), cfg)
        wt = bfp.quantize(nasty(rng, (tiles * n, n), 8) * np.float32(2.0 ** shift[1]), cfg)
    x.mant[: 2 * w] = 0  # whole zero rows
    img = MemoryImage(cfg)
    img.put_bfp("x", x, at=0)
    waddr = img.put_bfp("w", wt)
    text = f"""
seti r1, 0
ld vrf, r0, r1, 1, {h * w * cb}
seti r2, {waddr}
ld mrf, r0, r2, 1, {tiles}
cfg in_h, r0, {h}
cfg in_w, r0, {w}
cfg in_cb, r0, {cb}
cfg kh, r0, {kh}
cfg kw, r0, {kw}
cfg stride_h, r0, {stride}
cfg stride_w, r0, {stride}
cfg dil_h, r0, {dil}
cfg dil_w, r0, {dil}
cfg pad_t, r0, {pads[0]}
cfg pad_l, r0, {pads[1]}
cfg pad_b, r0, {pads[2]}
cfg pad_r, r0, {pads[3]}
cfg out_w, r0, {ow}
cfg pix0, r0, {pix0}
cfg npix, r0, {npix}
cfg cob, r0, {cob}
cfg ob0, r0, {ob0}
cfg gi, r0, {gi}
cfg go, r0, {go}
seti r3, 8
mvc r3, r0, r0, 0
seti r4, {8 + npix * cob}
mvc r4, r0, r0, 0
mvc r3, r0, r0, 1
halt
"""
    sim = FuncSim(cfg, img.build(extra=0x100))
    sim.run(assemble_program(text, cfg))
    return sim.fvrf[: 8 + 2 * npix * cob].copy()


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
@pytest.mark.parametrize("shape", [
    dict(h=9, w=7, cb=3, cob=5, kh=3, kw=3, stride=1, dil=1, pads=(1, 1, 1, 1)),
    dict(h=11, w=10, cb=2, cob=9, kh=3, kw=2, stride=2, dil=1, pads=(-2, 0, 1, 0), pix0=3, npix=13),
    dict(h=6, w=8, cb=1, cob=3, kh=2, kw=3, stride=1, dil=2, pads=(2, 1, 0, 2)),
    dict(h=5, w=5, cb=4, cob=4, kh=3, kw=3, stride=1, dil=1, pads=(1, 1, 1, 1), gi=1, go=1),
    dict(h=5, w=6, cb=4, cob=5, kh=1, kw=1, stride=1, dil=1, pads=(0, 0, 0, 0), gi=2, go=3, ob0=1),
    dict(h=5, w=7, cb=2, cob=20, kh=1, kw=1, stride=1, dil=1, pads=(0, 0, 0, 0)),
], ids=["3x3", "band-stride2", "dilated", "depthwise", "grouped", "1x1-wide"])
@pytest.mark.parametrize("integer", [True, False], ids=["int8", "f32"])
def test_window_mvc_matches_numpy(cfg, shape, integer, monkeypatch):
    """The MVC's native paths (windows read in place from the image, on 8-bit integers or scaled
    binary32 operands; the accumulators written or continued in the FVRF) against numpy's im2col
    and block_matmul, bit for bit."""
    from accelml.sim import funcsim

    if integer and not native.kernels().has_gemm_i8:
        pytest.skip("no AVX-512 VNNI")
    monkeypatch.setattr(funcsim, "INTEGER_MVU", integer)
    r1, r2 = both(_conv_sim, cfg, **shape)
    assert same_bits(r1, r2)
    assert np.abs(r1).max() > 0


@pytest.mark.parametrize("shift", [(-60, -60), (-66, -52), (-40, -90), (50, 45), (60, 52), (100, 0), (-110, 100)])
@pytest.mark.parametrize("integer", [True, False], ids=["int8", "f32"])
def test_window_mvc_at_the_edges_of_the_exponent_range(shift, integer, monkeypatch):
    """Operands scaled towards the limits of the native paths (units near 2**-126, sums near the
    top of binary32): where a path is exact it matches numpy bit for bit, elsewhere the general
    path runs; an overflow is refused by both."""
    from accelml.sim import funcsim

    if integer and not native.kernels().has_gemm_i8:
        pytest.skip("no AVX-512 VNNI")
    monkeypatch.setattr(funcsim, "INTEGER_MVU", integer)
    shape = dict(h=5, w=4, cb=2, cob=3, kh=3, kw=3, stride=1, dil=1, pads=(1, 1, 1, 1))
    try:
        r1 = _conv_sim(preset("a10"), **shape, shift=shift)
    except NumericsError as e:
        assert "overflow" in str(e)
        with numpy_only(), pytest.raises(NumericsError, match="overflow"):
            _conv_sim(preset("a10"), **shape, shift=shift)
        return
    with numpy_only():
        r2 = _conv_sim(preset("a10"), **shape, shift=shift)
    assert same_bits(r1, r2)


def test_pool_kernel_matches_golden_including_the_flush_boundary():
    """bfp_pool against golden.max_pool / avg_pool on internal-format values, with a window
    average just below 2**-126 where binary32's own subnormal rounding would keep 2**-126 but the
    definition (round to 24 bits, then flush) gives +0."""
    from accelml.sim import golden
    from accelml.sim.layout import pixel_grid, window_index

    k = native.kernels()
    rng = np.random.default_rng(21)
    h, w, n, cb = 5, 7, 16, 2
    x = bfp.internal_const(rng.standard_normal((h, w, cb * n)) * np.exp2(rng.integers(-20, 20, (h, w, cb * n))))
    x[0, 0, 0], x[0, 1, 0], x[0, 2, 0] = np.float32(3 * 2.0**-126 - 2.0**-148), 0.0, 0.0
    big = x.copy()
    big[4, 5:7, 0] = np.float32(3e38)  # a window sum that overflows
    for geom in (golden.ConvGeom(h, w, 1, 3, (1, 1), (1, 1), (0, 0, 0, 0)),
                 golden.ConvGeom(h, w, 3, 3, (2, 2), (1, 1), (1, 1, 1, 1)),
                 golden.ConvGeom(h, w, 2, 3, (1, 2), (2, 1), (1, 0, 2, 1))):
        oh, ow = geom.out_size()
        pixels = (0, oh * ow, ow)
        idx, ip = window_index(geom, pixels)
        oy, ox = pixel_grid(pixels)
        img = np.ascontiguousarray(x.reshape(h * w, cb * n))
        out = np.empty((oh * ow, cb * n), np.float32)
        assert k.pool(oh * ow, idx.shape[1], cb, n, native.ptr(img), ip, 0, None, native.ptr(out)) == 0
        assert same_bits(out, golden.max_pool(x, geom, oy, ox))
        for incl in (False, True):
            recip = bfp.internal_const(1.0 / golden.avg_divisors(geom, incl, oy, ox))
            assert k.pool(oh * ow, idx.shape[1], cb, n, native.ptr(img), ip, 1, native.ptr(recip),
                          native.ptr(out)) == 0
            assert same_bits(out, golden.avg_pool(x, geom, count_include_pad=incl, oy=oy, ox=ox))
            bimg = np.ascontiguousarray(big.reshape(h * w, cb * n))
            assert k.pool(oh * ow, idx.shape[1], cb, n, native.ptr(bimg), ip, 1, native.ptr(recip),
                          native.ptr(out)) == 1
            with pytest.raises(NumericsError, match="avg pool sum: overflow"):
                golden.avg_pool(big, geom, count_include_pad=incl, oy=oy, ox=ox)
    first = golden.avg_pool(x, golden.ConvGeom(h, w, 1, 3), oy=np.array([0]), ox=np.array([0]))
    assert first[0, 0] == 0.0  # the case the flush boundary is about


@pytest.mark.parametrize("integer", [True, False], ids=["int8", "f32"])
def test_an_mvc_overflow_leaves_its_destination_as_it_was(integer, monkeypatch):
    """A sum continued (acc = 1) from accumulators near the top of binary32 overflows: refused on
    every path, with the FVRF destination holding what it held before."""
    from accelml.hdl.program import assemble_program
    from accelml.sim import funcsim
    from accelml.sim.funcsim import FuncSim
    from accelml.sim.layout import MemoryImage

    if integer and not native.kernels().has_gemm_i8:
        pytest.skip("no AVX-512 VNNI")
    monkeypatch.setattr(funcsim, "INTEGER_MVU", integer)
    cfg = preset("a10")
    rng = np.random.default_rng(22)
    img = MemoryImage(cfg)
    img.put_bfp("x", bfp.quantize((np.abs(rng.standard_normal((4, 32))) + 1) * 2.0**50, cfg), at=0)
    waddr = img.put_bfp("w", bfp.quantize((np.abs(rng.standard_normal((4 * 16, 16))) + 1) * 2.0**50, cfg))
    acc = np.full((8, 16), np.finfo(np.float32).max, np.float32)
    acc[::2] = 1.0
    faddr = img.put_fp("acc", acc)
    text = f"""
seti r1, 0
ld vrf, r0, r1, 1, 8
seti r2, {waddr}
ld mrf, r0, r2, 1, 4
seti r3, {faddr}
seti r4, 100
ld fvrf, r4, r3, 1, 8
cfg in_w, r0, 4
cfg in_cb, r0, 2
cfg out_w, r0, 4
cfg npix, r0, 4
cfg cob, r0, 2
mvc r4, r0, r0, 1
halt
"""
    for ctx in (contextlib.nullcontext(), numpy_only()):
        sim = FuncSim(cfg, img.build(extra=0x100))
        with ctx, pytest.raises(NumericsError, match="instruction 12 \\(mvc\\).*overflow"):
            sim.run(assemble_program(text, cfg))
        assert same_bits(sim.fvrf[100:108], acc)


ONE_BYTE = [(c, i) for c, i in zip(CONFIGS, IDS, strict=True) if c.mantissa_bytes == 1]


@pytest.mark.parametrize("cfg", [c for c, _ in ONE_BYTE], ids=[i for _, i in ONE_BYTE])
@pytest.mark.parametrize("vpi", [1, 0], ids=["vrf", "mrf"])
def test_register_file_dma_matches_the_memory_encoding(cfg, vpi):
    """bfp_load_bfp_b1 / bfp_store_bfp_b1 (2-D DMA between memory and the VRF or MRF) against
    memory.decode_bfp / encode_bfp, with row strides on both sides; a refused load writes nothing."""
    k = native.kernels()
    rng = np.random.default_rng(12)
    n = cfg.native_dim
    vpi = vpi or n
    rows, items, mem_stride, chip_stride = 3, 5, 7 * vpi * (n + 1) + 3, 6
    t = random_bfp(rng, cfg, rows * items * vpi, n, 30)
    mant, exp = t.mant.astype(np.int16), t.exp.reshape(-1)
    blob = np.frombuffer(memory.encode_bfp(mant, exp, cfg), np.uint8).reshape(rows, -1)
    raw = np.zeros(rows * mem_stride, np.uint8)
    for r in range(rows):
        raw[r * mem_stride: r * mem_stride + blob.shape[1]] = blob[r]
    entries = (rows - 1) * chip_stride + items
    dm = np.full((entries * vpi, n), 99, np.int16)
    de = np.full(entries * vpi, 99, np.int16)
    assert k.load_bfp_b1(rows, items, vpi, n, cfg.mantissa_bits, cfg.exponent_bits, cfg.exp_bias, native.ptr(raw),
                         mem_stride, native.ptr(dm), native.ptr(de), chip_stride) == 0
    want_m, want_e = memory.decode_bfp(blob.reshape(-1), cfg)
    for r in range(rows):
        sel = slice(r * chip_stride * vpi, (r * chip_stride + items) * vpi)
        got = slice(r * items * vpi, (r + 1) * items * vpi)
        assert same_bits(dm[sel], want_m[got].astype(np.int16)) and same_bits(de[sel], want_e[got])
    assert (dm[items * vpi: chip_stride * vpi] == 99).all()  # the gap between rows is untouched
    out = np.zeros_like(raw)
    k.store_bfp_b1(rows, items, vpi, n, cfg.exp_bias, native.ptr(dm), native.ptr(de), chip_stride, native.ptr(out),
                   mem_stride)
    assert same_bits(out, raw)
    for bad in ("exponent", "mantissa"):
        if bad == "mantissa" and cfg.mantissa_bits == 7:
            continue  # every magnitude byte fits
        broken = raw.copy()
        last = (rows - 1) * mem_stride + (items * vpi - 1) * (n + 1)
        broken[last + (n if bad == "exponent" else 1)] = 0xFF if bad == "exponent" else 1 << cfg.mantissa_bits
        before = dm.copy()
        assert k.load_bfp_b1(rows, items, vpi, n, cfg.mantissa_bits, cfg.exponent_bits, cfg.exp_bias,
                             native.ptr(broken), mem_stride, native.ptr(dm), native.ptr(de), chip_stride) == 1
        assert same_bits(dm, before)
        with pytest.raises(ExecutionError):
            memory.decode_bfp(broken[last: last + n + 1], cfg)


def test_internal_format_load_matches_decode_fp():
    k = native.kernels()
    cfg = preset("a10")
    rng = np.random.default_rng(13)
    v = nasty(rng, (40, 16), 140)
    v = np.where(np.isinf(v), np.float32(1.0), v).astype(np.float32)
    v[0, :3] = [-0.0, 1e-40, -(2.0**-126)]
    out = np.full((40, 16), 7, np.float32)
    assert k.load_f32(4, 10, 16, native.ptr(v), 10 * 64, native.ptr(out), 10) == 0
    assert same_bits(out, memory.decode_fp(v.view(np.uint8), cfg))
    for bad in (np.nan, np.inf, -np.inf):
        w = v.copy()
        w[39, 15] = bad
        out[:] = 7
        assert k.load_f32(4, 10, 16, native.ptr(w), 10 * 64, native.ptr(out), 10) == 1
        assert (out == 7).all()
        with pytest.raises(ExecutionError):
            memory.decode_fp(w.view(np.uint8), cfg)


@pytest.mark.parametrize("cfg", [c for c, _ in ONE_BYTE], ids=[i for _, i in ONE_BYTE])
def test_quantize_and_dequantize_rows_match_numpy(cfg):
    """bfp_quantize_rows (qnt into the VRF's int16 mantissas) and bfp_dequant_rows (deq) against
    bfp.quantize and bfp.dequantize_internal with numpy only; a NaN row is refused before any write."""
    k = native.kernels()
    rng = np.random.default_rng(14)
    n = cfg.native_dim
    x = nasty(rng, (500, n), 140)
    x[0] = 0.0
    x[1, 0], x[2, 1], x[2, 2] = np.inf, -np.inf, np.float32(3e38)
    x[3] = np.float32(2.0**-140)  # below every unit: clamps at the smallest exponent
    x[4, :2] = [np.float32(127.5 * 2**-6), np.float32(-126.5 * 2**-6)]  # ties
    mant = np.empty((500, n), np.int16)
    exp = np.empty(500, np.int16)
    assert k.quantize_rows(500, n, cfg.mantissa_bits, cfg.exp_min, cfg.exp_max, native.ptr(x), native.ptr(mant),
                           native.ptr(exp)) == 0
    with numpy_only():
        want = bfp.quantize(x, cfg)
    assert same_bits(mant, want.mant.astype(np.int16)) and same_bits(exp, want.exp[:, 0])
    vals = np.empty((500, n), np.float32)
    k.dequant_rows(500, n, cfg.mantissa_bits, native.ptr(mant), native.ptr(exp), native.ptr(vals))
    with numpy_only():
        assert same_bits(vals, bfp.dequantize_internal(want))
    x[321, n - 1] = np.nan
    before = mant.copy()
    assert k.quantize_rows(500, n, cfg.mantissa_bits, cfg.exp_min, cfg.exp_max, native.ptr(x), native.ptr(mant),
                           native.ptr(exp)) == 322
    assert same_bits(mant, before)


@pytest.mark.parametrize("cfg", [preset("a10"), preset("a10").with_format("msfp12")], ids=["msfp16", "msfp12"])
def test_quantize_rows_at_the_exponent_bump(cfg):
    """Block maxima just below, at and above 2**M - 1/2 units (where the exponent is bumped), at
    every exponent from the subnormals to the top of the range."""
    k = native.kernels()
    m_bits = cfg.mantissa_bits
    edge = np.float32(1 - 2.0**-(m_bits + 1))  # (2**M - 1/2) / 2**M
    sig = np.concatenate([edge + np.arange(-3, 4, dtype=np.float32) * np.float32(2.0**-23),
                          np.float32([1.0, 1.5, 2 - 2.0**-23])])
    vals = (sig[None, :] * np.ldexp(np.float32(1), np.arange(-149, 128))[:, None]).astype(np.float32)
    vals = vals[np.isfinite(vals)]
    x = np.zeros((vals.size, 16), np.float32)
    x[:, 0] = vals
    x[:, 1] = -vals / 3
    mant, exp = np.empty((vals.size, 16), np.int16), np.empty(vals.size, np.int16)
    assert k.quantize_rows(vals.size, 16, m_bits, cfg.exp_min, cfg.exp_max, native.ptr(x), native.ptr(mant),
                           native.ptr(exp)) == 0
    with numpy_only():
        want = bfp.quantize(x, cfg)
    assert same_bits(mant, want.mant.astype(np.int16)) and same_bits(exp, want.exp[:, 0])


@pytest.mark.parametrize("cfg", [c for c, _ in ONE_BYTE], ids=[i for _, i in ONE_BYTE])
@pytest.mark.parametrize("relu", [0, 1])
@pytest.mark.parametrize("stages", ["add", "quantize", "store"])
def test_mfu_chain_matches_its_instructions(cfg, relu, stages):
    """bfp_mfu_chain (vop add, vact relu, qnt, st in one pass) against mfu_add_periodic, mfu_relu,
    quantize and encode_bfp with numpy only, in place and to a separate destination; an overflow
    anywhere is refused before any write."""
    k = native.kernels()
    rng = np.random.default_rng(15)
    n, rows, period = cfg.native_dim, 300, 7
    a = nasty(rng, (rows, n), 60)
    a = np.where(np.isinf(a), np.float32(2.0), a).astype(np.float32)
    a[3, :4] = [2.0**-126 * 1.5, 0.0, 3e38, -(2.0**-126)]
    b = nasty(rng, (period, n), 60)
    b = np.where(np.isinf(b), np.float32(-2.0), b).astype(np.float32)
    b[3, :4] = [-(2.0**-126), 0.0, -3e38, 2.0**-126 * 1.25]
    with numpy_only():
        want = bfp.mfu_add_periodic(a, b)
        if relu:
            want = bfp.mfu_relu(want)
        q = bfp.quantize(want, cfg)
        enc = np.frombuffer(memory.encode_bfp(q.mant.astype(np.int16), q.exp.reshape(-1), cfg), np.uint8)
    for in_place in (True, False):
        src = a.copy()
        dst = src if in_place else np.full_like(a, 5)
        vm, ve = np.zeros((rows, n), np.int16), np.zeros(rows, np.int16)
        mem = np.zeros(rows * (n + 1), np.uint8)
        quant, store = stages != "add", stages == "store"
        assert k.mfu_chain(rows, n, native.ptr(src), native.ptr(b), period, relu, native.ptr(dst), cfg.mantissa_bits,
                           cfg.exp_min, cfg.exp_max, native.ptr(vm) if quant else None,
                           native.ptr(ve) if quant else None, native.ptr(mem) if store else None, cfg.exp_bias) == 0
        assert same_bits(dst, want)
        if quant:
            assert same_bits(vm, q.mant.astype(np.int16)) and same_bits(ve, q.exp[:, 0])
        assert same_bits(mem, enc if store else np.zeros_like(mem))
    big = a.copy()
    big[rows - 1, 0] = np.float32(3e38)
    bb = b.copy()
    bb[(rows - 1) % period, 0] = np.float32(3e38)
    before = big.copy()
    assert k.mfu_chain(rows, n, native.ptr(big), native.ptr(bb), period, relu, native.ptr(big), cfg.mantissa_bits,
                       cfg.exp_min, cfg.exp_max, None, None, None, cfg.exp_bias) == rows
    assert same_bits(big, before)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_dequantize_internal_matches_numpy(cfg):
    rng = np.random.default_rng(3)
    t = random_bfp(rng, cfg, 50, 4 * cfg.native_dim, 140)  # reaches exp_min: values flush to zero
    t.exp[0, 0] = cfg.exp_min
    t.mant[0, :3] = [1, -5, (1 << cfg.mantissa_bits) - 1]
    for mant in (t.mant, t.mant.astype(np.int16)):
        tt = bfp.BfpTensor(mant, t.exp, t.length, t.block, t.mantissa_bits)
        r1, r2 = both(bfp.dequantize_internal, tt)
        assert same_bits(r1, r2)
    if cfg.exponent_bits == 8:  # below 2**-126: flushed to +0 by both
        assert same_bits(r1[0, :3], np.zeros(3, np.float32))


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_encode_decode_match_numpy(cfg):
    rng = np.random.default_rng(4)
    t = random_bfp(rng, cfg, 30, 2 * cfg.native_dim, 30)
    mant, exp = t.mant.reshape(-1, cfg.native_dim).astype(np.int16), t.exp.reshape(-1)
    b1, b2 = both(memory.encode_bfp, mant, exp, cfg)
    assert b1 == b2
    raw = np.frombuffer(b1, np.uint8)
    (m1, e1), (m2, e2) = both(memory.decode_bfp, raw, cfg)
    assert same_bits(m1, m2) and same_bits(e1, e2)
    assert np.array_equal(m1, mant) and np.array_equal(e1, exp)


def test_decode_refuses_invalid_encodings_in_both():
    cfg = preset("a10")
    good = np.frombuffer(memory.encode_bfp(np.zeros((2, 16), np.int16), np.zeros(2, np.int16), cfg), np.uint8)
    reserved = good.copy()
    reserved[-1] = 0xFF  # the all-ones exponent field
    for raw in (reserved,):
        for ctx in (contextlib.nullcontext(), numpy_only()):
            with ctx, pytest.raises(ExecutionError, match="vector 9: invalid BFP vector encoding"):
                memory.decode_bfp(raw, cfg, where="vector 9")
    cfg3 = preset("a10").with_format("msfp12")  # 3-bit mantissas: magnitude 8 does not fit
    wide = np.frombuffer(memory.encode_bfp(np.zeros((1, 16), np.int16), np.zeros(1, np.int16), cfg3), np.uint8).copy()
    wide[0] = 8
    for ctx in (contextlib.nullcontext(), numpy_only()):
        with ctx, pytest.raises(ExecutionError, match="invalid BFP vector encoding"):
            memory.decode_bfp(wide, cfg3)


@settings(max_examples=300, deadline=None)
@given(a=st.floats(-(2.0**127), 2.0**127, width=32), b=st.floats(-(2.0**127), 2.0**127, width=32))
def test_mfu_add_binary32_path_is_the_definition(a, b):
    """The binary32 add (used when both operands are binary32) against the float64 definition."""
    x, y = np.array([a, -a, a], np.float32), np.array([b, -b, np.float32(-a)], np.float32)
    try:
        r1 = bfp.mfu_add(x, y)
    except NumericsError:
        with pytest.raises(NumericsError):
            bfp.to_internal(x.astype(np.float64) + y.astype(np.float64))
        return
    assert same_bits(r1, bfp.to_internal(x.astype(np.float64) + y.astype(np.float64)))


def test_mfu_add_periodic_matches_numpy():
    rng = np.random.default_rng(6)
    a = nasty(rng, (9000, 16), 60)
    a[3, :4] = [2.0**-126 * 1.5, -0.0, 3e38, -(2.0**-126)]
    b = nasty(rng, (3, 16), 60)
    b[0, :4] = [-(2.0**-126), -0.0, -3e38, 2.0**-126 * 1.25]
    r1, r2 = both(bfp.mfu_add_periodic, a, b)
    assert same_bits(r1, r2)
    assert same_bits(r1, bfp.to_internal(a.astype(np.float64) + np.tile(b, (3000, 1)).astype(np.float64)))
    big = np.full((5000, 16), 3e38, np.float32)
    for ctx in (contextlib.nullcontext(), numpy_only()):
        with ctx, pytest.raises(NumericsError, match="bias: overflow"):
            bfp.mfu_add_periodic(big, big[:1], "bias")


def test_mfu_add_flushes_tiny_sums_and_never_returns_negative_zero():
    x = np.array([2.0**-126 * 1.5, -0.0, 1.0], np.float32)
    y = np.array([-(2.0**-126), -0.0, -1.0], np.float32)
    r = bfp.mfu_add(x, y)
    assert same_bits(r, np.zeros(3, np.float32))


def test_funcsim_runs_match_numpy_and_golden(tmp_path):
    """A reduced MobileNet-V2 (dense, depthwise and residual layers) through the package runtime
    with and without the kernels, against the golden layer ops run with numpy only."""
    from accelml.compiler import compile_model, models
    from accelml.runtime import load, save_package

    cm = compile_model(models.build("mobilenet_v2", "reduced"), config="ecp5", name="mnv2")
    rng = np.random.default_rng(5)
    feeds = {i["name"]: rng.standard_normal(i["shape"]).astype(np.float32) for i in cm.inputs}
    feeds2 = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in feeds.items()}
    with numpy_only():
        want, want2 = cm.run_golden(feeds), cm.run_golden(feeds2)
    model = load(save_package(cm, tmp_path / "mnv2.accel"))
    out1, out2 = both(model.run, feeds)
    first = model.device.last_stats
    # a second run reuses the prepared weights, the timing and the memory image: new data, same bits
    out3 = model.run(feeds2)
    again = model.device.last_stats
    for name in want:
        assert same_bits(out1[name], want[name]), name
        assert same_bits(out2[name], want[name]), name
        assert same_bits(out3[name], want2[name]), name
    assert (again.cycles, again.instructions, again.macs) == (first.cycles, first.instructions, first.macs)
    assert again.cycles > 0


def test_status_names_the_library():
    assert native.status().startswith("native (accelml_native_")
