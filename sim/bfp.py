"""Golden block-floating-point numerics: the definition of every rounding and overflow decision.

The functional simulator and the RTL are checked against this module bit for bit. The policy is
written out in docs/numerics.md; in short:

* A BFP block is ``N`` elements sharing one exponent ``x`` in ``[-bias, bias]`` (``bias =
  2**(E-1) - 1``; the all-ones field is reserved). Element ``i`` is ``m_i * 2**(x - (M - 1))``
  with a signed magnitude ``|m_i| <= 2**M - 1``.
* Quantisation: ``x = floor(log2(max|v|))``; if the largest magnitude rounds up to ``2**M`` the
  exponent is bumped by one; ``x`` is clamped to the exponent range; every element is rounded to
  nearest, ties to even; magnitudes saturate at ``2**M - 1``. An all-zero block has ``x = -bias``.
  +-Inf saturates; NaN is refused (``NumericsError`` naming the tensor).
* The internal (accumulator / multi-function unit) format is IEEE binary32 with
  round-to-nearest-even, flush-to-zero (results below 2**-126 become +0) and overflow as a fault
  (``NumericsError``), never infinity. -0 is never produced.
* A matrix-vector product sums exact integer block dot products: block ``b``'s term
  ``d_b * 2**(sa_b + sw_b)`` is converted to the internal format (RNE, FTZ), then added to the
  accumulator, starting from +0, in increasing block order.
"""

from __future__ import annotations

import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from threadpoolctl import ThreadpoolController

from accelml.hdl.config import EngineConfig
from accelml.hdl.errors import NumericsError

from . import native

__all__ = [
    "FLT_MAX", "FLT_MIN", "BfpTensor", "quantize", "dequantize", "to_internal", "block_matmul",
    "quantize_split", "quantize_planes", "quantize_min_error", "quantize_compensated", "mfu_add", "mfu_sub",
    "mfu_mul", "mfu_max", "mfu_relu", "mfu_clip", "mfu_leaky_relu", "internal_const",
]

FLT_MAX = float(np.finfo(np.float32).max)
FLT_MIN = 2.0**-126  # smallest normal binary32; anything smaller flushes to +0

# Rounding float64 to a 24-bit significand: 52 - 23 = 29 bits are dropped.
_DROP = np.uint64(29)
_HALF_MINUS_ONE = np.uint64((1 << 28) - 1)
_KEEP_MASK = np.uint64(~((1 << 29) - 1) & 0xFFFF_FFFF_FFFF_FFFF)
_ONE = np.uint64(1)


@dataclass(frozen=True)
class BfpTensor:
    """A tensor blocked along its last axis.

    ``mant`` holds signed magnitudes (int32, two's-complement in memory here; sign-magnitude in
    the external-memory encoding), shape ``(..., nblocks * N)``; ``exp`` holds the shared exponent
    ``x`` of each block, shape ``(..., nblocks)``. ``length`` is the logical length of the last
    axis before zero padding to whole blocks.
    """

    mant: np.ndarray
    exp: np.ndarray
    length: int
    block: int
    mantissa_bits: int

    @property
    def nblocks(self) -> int:
        return self.exp.shape[-1]

    @property
    def shape(self) -> tuple[int, ...]:
        return (*self.mant.shape[:-1], self.length)

    def scale_exp(self) -> np.ndarray:
        """Per-block exponent of the mantissa's unit: ``x - (M - 1)``."""
        return self.exp.astype(np.int32) - (self.mantissa_bits - 1)

    def values(self) -> np.ndarray:
        """Exact float64 values (including the zero padding)."""
        return dequantize(self)


def quantize(x, cfg: EngineConfig, *, name: str = "tensor") -> BfpTensor:
    """Quantise ``x`` (any float array) to BFP along its last axis in blocks of ``cfg.native_dim``.

    binary32 input is processed in binary32 (exact: every scaled magnitude that can round to a
    nonzero mantissa is a normal binary32 number), anything else in float64.
    """
    x = np.asarray(x)
    dtype = np.float32 if x.dtype == np.float32 and cfg.mantissa_bits <= 24 else np.float64
    a = x.astype(dtype, copy=False)
    if a.ndim == 0:
        raise NumericsError(f"{name}: cannot quantise a scalar; BFP blocks run along the last axis")
    n, m_bits = cfg.native_dim, cfg.mantissa_bits
    length = a.shape[-1]
    nb = max(1, -(-length // n))
    if nb * n != length:
        a = np.concatenate([a, np.zeros((*a.shape[:-1], nb * n - length), dtype)], axis=-1)
    k = native.kernels() if dtype is np.float32 else None
    if k is not None and (q := _quantize_native(k, a, cfg, nb, length, name)) is not None:
        return q
    a = a.reshape(*a.shape[:-1], nb, n)
    mag = np.abs(a)
    amax = mag.max(axis=-1)
    if np.isnan(amax).any():
        raise NumericsError(f"{name}: contains NaN, which no BFP block can represent")
    if np.isinf(amax).any():  # +-Inf saturates like any huge value
        mag = np.minimum(mag, np.finfo(dtype).max)
        amax = mag.max(axis=-1)
    _, e = np.frexp(amax)  # amax = f * 2**e, f in [0.5, 1): floor(log2 amax) = e - 1
    xexp = e.astype(np.int32) - 1
    top = np.rint(np.ldexp(amax, (m_bits - 1) - xexp))
    xexp = xexp + (top >= (1 << m_bits))  # the block maximum rounded up to 2**M: bump
    xexp = np.clip(xexp, cfg.exp_min, cfg.exp_max)
    xexp = np.where(amax == 0, cfg.exp_min, xexp)
    mq = np.rint(np.ldexp(mag, ((m_bits - 1) - xexp)[..., None]))
    np.minimum(mq, (1 << m_bits) - 1, out=mq)
    mq = mq.astype(np.int32)
    mant = np.where(a < 0, -mq, mq)
    return BfpTensor(
        mant=mant.reshape(*mant.shape[:-2], nb * n),
        exp=xexp.astype(np.int16),
        length=length,
        block=n,
        mantissa_bits=m_bits,
    )


def quantize_min_error(x, cfg: EngineConfig, *, name: str = "tensor") -> BfpTensor:
    """Error-aware rounding for constants (weights): like ``quantize``, but a block takes the
    shared exponent ``x - 1`` instead of ``quantize``'s ``x`` where that gives the block's elements,
    rounded to nearest (ties to even) and saturated at ``2**M - 1``, a smaller sum of squared errors
    against ``x``'s values (ties keep ``x``; ``x - 1`` never below the exponent range). With ``x - 1``
    the block maximum saturates: this pays when it lies just above a power of two and the other
    elements gain a bit. (``x + 1`` never pays: its grid is a subset of ``x``'s, which saturates
    nothing.) Only blocks whose largest ``quantize`` mantissa is at most
    ``(2**M - 1 + sqrt(N)) / 2 + 1`` are tried: beyond, the maximum's saturation error alone
    exceeds what the other elements can gain. The output is an ordinary BFP tensor: the engine and
    the simulators need nothing new to use it."""
    base = quantize(x, cfg, name=name)
    n, m_bits, nb = cfg.native_dim, cfg.mantissa_bits, base.exp.shape[-1]
    mant = base.mant.reshape(-1, nb, n)
    exp = base.exp.reshape(-1, nb)
    top = np.abs(mant).max(axis=-1)
    tried = np.nonzero((top > 0) & (top <= ((1 << m_bits) - 1 + math.sqrt(n)) / 2 + 1) & (exp > cfg.exp_min))
    if not tried[0].size:
        return base
    v = np.zeros((*base.mant.shape[:-1], nb * n))
    v[..., : base.length] = np.asarray(x, np.float64)
    v = v.reshape(-1, nb, n)[tried]
    a = np.minimum(np.abs(v), np.finfo(np.float64).max)
    cur = exp[tried].astype(np.int32)
    err = ((a - np.ldexp(np.abs(mant[tried]).astype(np.float64), (cur - (m_bits - 1))[..., None])) ** 2).sum(-1)
    mq = np.minimum(np.rint(np.ldexp(a, (m_bits - cur)[..., None])), (1 << m_bits) - 1)
    better = ((a - np.ldexp(mq, (cur - m_bits)[..., None])) ** 2).sum(-1) < err
    if not better.any():
        return base
    mant, exp = mant.copy(), exp.copy()
    rows = tuple(t[better] for t in tried)
    mant[rows] = np.where(v[better] < 0, -mq[better], mq[better]).astype(np.int32)
    exp[rows] = (cur[better] - 1).astype(np.int16)
    return BfpTensor(mant=mant.reshape(base.mant.shape), exp=exp.reshape(base.exp.shape), length=base.length,
                     block=n, mantissa_bits=m_bits)


def quantize_compensated(w, hess: np.ndarray, cfg: EngineConfig, *, keep_zeros: bool = True, damp: float = 0.01,
                         name: str = "tensor", columns: int = 128) -> BfpTensor:
    """Error-compensating rounding of weight rows ``w`` (R, K), blocks of N along K (GPTQ adapted
    to shared exponents): each block keeps ``quantize``'s exponent (from the block maximum of
    ``w``); the columns are rounded in the reduction order, each to nearest with magnitudes
    saturated at ``2**M - 1``, and each column's rounding error is spread over the columns not yet
    rounded through the inverse of ``hess`` (K, K), the second moment of the layer's inputs
    (``sum x x^T`` over the samples' input windows, dampened by ``damp`` times its mean diagonal),
    so as to lower ``|(Wq - W) x|^2`` on those inputs rather than each weight's own error. With
    ``keep_zeros`` the zero weights of ``w`` stay zero (grouped convolutions' expanded weights, the
    padding lanes). Columns go ``columns`` at a time with one update of the rest per group (lazy
    batch updates, the same result). The output is an ordinary BFP tensor."""
    w = np.array(w, np.float64)
    base = quantize(w, cfg, name=name)
    n, m_bits = cfg.native_dim, cfg.mantissa_bits
    rows, k = w.shape
    if base.length != k or k % n:
        raise ValueError(f"{name}: quantize_compensated needs whole blocks along K, got K = {k}")
    h = np.array(hess, np.float64)
    mean_diag = float(np.mean(np.diag(h)))
    if not np.isfinite(mean_diag) or mean_diag <= 0:
        return base
    h[np.diag_indices(k)] += damp * mean_diag
    try:
        hinv = np.linalg.cholesky(np.linalg.inv(h)).T  # upper factor: the sequential update's rows
    except np.linalg.LinAlgError:
        return base
    step = np.ldexp(1.0, np.repeat(base.exp.astype(np.int32) - (m_bits - 1), n, axis=-1))
    top = float((1 << m_bits) - 1)
    free = (w != 0) if keep_zeros else np.ones_like(w, bool)
    mant = np.zeros((rows, k), np.int32)
    work = w.copy()
    for b0 in range(0, k, columns):
        b1 = min(b0 + columns, k)
        blk = work[:, b0:b1].copy()
        errs = np.zeros((rows, b1 - b0))
        for j in range(b1 - b0):
            i = b0 + j
            mq = np.clip(np.rint(blk[:, j] / step[:, i]), -top, top) * free[:, i]
            mant[:, i] = mq.astype(np.int32)
            e = (blk[:, j] - mq * step[:, i]) / hinv[i, i]
            errs[:, j] = e
            blk[:, j + 1:] -= np.outer(e, hinv[i, i + 1:b1]) * free[:, i + 1:b1]
        work[:, b1:] -= (errs @ hinv[b0:b1, b1:]) * free[:, b1:]
    return BfpTensor(mant=mant, exp=base.exp.copy(), length=k, block=n, mantissa_bits=m_bits)


def quantize_split(x, cfg: EngineConfig, *, name: str = "tensor") -> tuple[BfpTensor, BfpTensor]:
    """``x`` stored as two BFP tensors, ``x ~ hi + lo``: ``hi = quantize(x)`` and ``lo`` quantises
    what ``hi`` misses, computed as the engine computes it (DEQ of ``hi``, an MFU subtract from
    the internal value, QNT). About twice the mantissa bits of one tensor."""
    hi = quantize(x, cfg, name=name)
    rest = mfu_sub(to_internal(x, name), dequantize_internal(hi)[..., : hi.length], f"{name} residual")
    return hi, quantize(rest, cfg, name=f"{name} residual")


def quantize_planes(x, cfg: EngineConfig, *, split: bool, name: str = "tensor") -> tuple[BfpTensor, ...]:
    """``x`` as a buffer stores it: one BFP tensor, or with ``split`` the two of ``quantize_split``."""
    return quantize_split(x, cfg, name=name) if split else (quantize(x, cfg, name=name),)


def _quantize_native(k, a: np.ndarray, cfg: EngineConfig, nb: int, length: int, name: str) -> BfpTensor | None:
    """quantize's definition for binary32 input, in the native kernel (blocks split across
    threads); None for a format whose exponent range the kernel does not handle."""
    n = cfg.native_dim
    lead = a.shape[:-1]
    a = np.ascontiguousarray(a)
    blocks = a.size // n
    mant = np.empty((*lead, nb * n), np.int32)
    exp = np.empty((*lead, nb), np.int16)
    status = run_parallel([(k.quantize_f32, b0, b1, n, cfg.mantissa_bits, cfg.exp_min, cfg.exp_max, native.ptr(a),
                            native.ptr(mant), native.ptr(exp)) for b0, b1 in split_rows(blocks, min_rows=2048)])
    if any(s < 0 for s in status):  # a format outside the kernel's range: the numpy definition
        return None
    if any(status):
        raise NumericsError(f"{name}: contains NaN, which no BFP block can represent")
    return BfpTensor(mant=mant, exp=exp, length=length, block=n, mantissa_bits=cfg.mantissa_bits)


def _expand(t_exp: np.ndarray, block: int) -> np.ndarray:
    return np.repeat(t_exp, block, axis=-1)


def dequantize(t: BfpTensor) -> np.ndarray:
    """Exact float64 values of a BFP tensor (padding included)."""
    return np.ldexp(t.mant.astype(np.float64), _expand(t.scale_exp(), t.block))


def dequantize_internal(t: BfpTensor) -> np.ndarray:
    """BFP -> internal format, float32 of the same shape (padding lanes included): the exact
    values rounded as ``to_internal`` does (they need no rounding; values below 2**-126 flush)."""
    k = native.kernels()
    if k is None or t.mant.dtype not in k.dequant or t.mantissa_bits > 24:
        return to_internal(dequantize(t), "dequantise")
    mant = np.ascontiguousarray(t.mant)
    exp = np.ascontiguousarray(t.exp, dtype=np.int16)
    out = np.empty(mant.shape, np.float32)
    blocks = exp.size
    fn = k.dequant[mant.dtype]
    run_parallel([(fn, b0, b1, t.block, t.mantissa_bits, native.ptr(mant), native.ptr(exp), native.ptr(out))
                   for b0, b1 in split_rows(blocks, min_rows=2048)])
    return out


def overflow(what: str, accumulator: bool = False) -> NumericsError:
    """The error of a result beyond the internal format's range (an MFU result, or a sum of products)."""
    if accumulator:
        return NumericsError(f"{what}: accumulator overflow beyond the internal format's range")
    return NumericsError(f"{what}: overflow beyond the internal format's range (|x| > {FLT_MAX:.4g})")


def to_internal(v, what: str = "value") -> np.ndarray:
    """Round exact (or float64-computed) values to the internal format: binary32, RNE, FTZ.

    Results computed in float64 from binary32 operands are correctly rounded by this for
    add, subtract and multiply (53 >= 2 * 24 + 2, so double rounding is innocuous).
    """
    v = np.ascontiguousarray(v, dtype=np.float64)
    bits = v.view(np.uint64)
    bits = (bits + _HALF_MINUS_ONE + ((bits >> _DROP) & _ONE)) & _KEEP_MASK
    r = bits.view(np.float64)
    mag = np.abs(r)
    if not (mag <= FLT_MAX).all():
        raise overflow(what)
    return np.where(mag < FLT_MIN, 0.0, r).astype(np.float32)


def internal_const(v, what: str = "constant") -> np.ndarray:
    """A host constant (bias, scale, clip bound) in the internal format."""
    a = np.asarray(v, dtype=np.float64)
    if np.isnan(a).any():
        raise NumericsError(f"{what}: contains NaN")
    return to_internal(a, what)


# ---------------------------------------------------------------------------------------------
# Matrix-vector unit: block dot products and accumulation
# ---------------------------------------------------------------------------------------------

# Block products computed ahead of the in-order accumulation (bounds memory to a few P x J).
_WINDOW = 4
_TASK_ELEMENTS = 1 << 18  # output elements (rows x cols x blocks) per task
# Shared by every caller: submitting is thread-safe and no task submits to the pool, so concurrent
# runs (a server's request threads) queue their tasks here without deadlock; results are per task.
_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="accelml-mvu")
# Many small GEMMs (inner dimension N) run far faster on one BLAS thread than on a team that
# spins up and synchronises for each; see benchmarks.
_BLAS = ThreadpoolController()


def nonzero_block_range(mant: np.ndarray, sexp: np.ndarray, block: int) -> tuple[int, int] | None:
    """(min, max) unit exponent over blocks with a nonzero mantissa; None if all are zero.

    Zero blocks (and padding) carry the smallest exponent, so only blocks at the smallest exponent
    present need their mantissas looked at.
    """
    lowest = int(sexp.min()) if sexp.size else 0
    at_lowest = sexp == lowest
    blocks = mant.reshape(*sexp.shape, block)
    lowest_live = bool((blocks[at_lowest] != 0).any()) if at_lowest.any() else False
    if lowest_live:
        return lowest, int(sexp.max())
    rest = sexp[~at_lowest]
    if rest.size == 0:
        return None
    return int(rest.min()), int(rest.max())


def _matmul_quiet(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):  # per thread: overflow is checked by the caller
        return np.matmul(a, b)


_PANEL = 16  # weight columns per native micro-tile panel (NR in native.c)
_MIN_ROWS_PER_THREAD = 48


def split_rows(rows: int, align: int = 1, min_rows: int = _MIN_ROWS_PER_THREAD) -> list[tuple[int, int]]:
    """Row ranges for the two worker threads (one range when too small to be worth it)."""
    if rows < 2 * min_rows:
        return [(0, rows)]
    mid = (rows // 2) // align * align
    return [(0, mid), (mid, rows)]


def run_parallel(calls) -> list:
    """Run ``(fn, *args)`` calls side by side, the last on the calling thread and the others on
    the worker threads (native kernels release the GIL); wait for all and return their results in
    order."""
    calls = list(calls)
    if not calls:
        return []
    futures = [_POOL.submit(fn, *args) for fn, *args in calls[:-1]]
    fn, *args = calls[-1]
    last = fn(*args)
    return [f.result() for f in futures] + [last]


def _scaled_native(k, mant: np.ndarray, exp: np.ndarray, n: int, m_bits: int,
                   rows_out: int | None = None) -> np.ndarray:
    """(R, K) mantissas times their block's unit, binary32, in a (rows_out >= R, K) array whose
    extra rows are zero."""
    r, kdim = mant.shape
    if mant.dtype not in k.scale:
        mant = mant.astype(np.int32)
    mant = np.ascontiguousarray(mant)
    exp = np.ascontiguousarray(exp, dtype=np.int16)
    rows_out = r if rows_out is None else rows_out
    out = np.empty((rows_out, kdim), np.float32)
    if rows_out > r:
        out[r:] = 0
    fn = k.scale[mant.dtype]
    run_parallel([(fn, r0, r1, kdim // n, n, m_bits, native.ptr(mant), native.ptr(exp), native.ptr(out))
                   for r0, r1 in split_rows(r)])
    return out


def fast_path(a_range, w_range, cfg: EngineConfig) -> tuple[bool, bool]:
    """(fast, exact32) for operands whose nonzero blocks' unit exponents span ``a_range`` and
    ``w_range`` (``nonzero_block_range``): ``fast`` when block products can be formed from
    scaled binary32/binary64 operands without meeting a subnormal or overflowing, ``exact32``
    when they are exact in binary32 (the native kernel's condition, with ``fast``)."""
    (amin, amax), (wmin, wmax) = a_range, w_range
    m_bits = cfg.mantissa_bits
    dbits = 2 * m_bits + int(math.log2(cfg.native_dim))  # |block dot product| < 2**dbits
    no_subnormal = amin >= -126 and wmin >= -126 and amin + wmin >= -126
    # the fast path forms scaled operands and their products in floating point: each product and
    # partial sum of a block must stay finite (the definition is the exact integer dot product)
    in_range = amax + m_bits < 128 and wmax + m_bits < 128 and amax + wmax + dbits < 128
    return no_subnormal and in_range, dbits <= 24


def gemm_parts(p: int, panels: int, j: int) -> list[tuple[int, int, int, int]]:
    """How a product of ``p`` rows and ``j`` columns (``panels`` weight panels of 16) is split
    across the two worker threads: (first row, end row, first panel, columns) per part; by rows,
    or for few rows by panels (in whole micro-tiles of 4 panels where there are enough)."""
    if p >= 2 * _MIN_ROWS_PER_THREAD or panels < 2:
        return [(p0, p1, 0, j) for p0, p1 in split_rows(p, 6)]
    half = max(1, (panels // 2) // 4 * 4) if panels >= 8 else panels // 2
    return [(0, p, 0, half * _PANEL), (0, p, half, j - half * _PANEL)]


def gemm(k, x: np.ndarray, ldx: int, wp: np.ndarray, out: np.ndarray, j: int, n: int, what: str, *,
         taps: int = 1, gi: int | None = None, xoff: int = 0, idx: np.ndarray | None = None,
         zeros: np.ndarray | None = None, init: bool = False) -> np.ndarray:
    """The native kernel on scaled operands (``bfp_gemm_f32`` in native.c): ``x`` binary32 rows
    (row stride ``ldx`` elements), or with ``idx`` (P, taps) the pixels of a scaled image each
    window tap reads; ``wp`` packed weight panels (ceil(J/16), taps * gi, n, 16); accumulating
    into ``out`` (P, J) in place (rows may be strided, elements contiguous), from +0 with
    ``init``. Rows (or, for few rows, weight panels) are split across the two worker threads.
    Callers have checked ``fast_path``."""
    p = out.shape[0]
    kb = wp.shape[1]
    gi = kb // taps if gi is None else gi
    panels = wp.shape[0]
    if out.dtype != np.float32 or out.shape != (p, j) or (p and out.strides[1] != 4) or taps * gi != kb:
        raise ValueError(f"{what}: accumulator must be float32 ({p}, {j}) with contiguous rows")
    if idx is not None and (idx.dtype != np.int64 or idx.shape != (p, taps) or not idx.flags.c_contiguous):
        raise ValueError(f"{what}: window index must be int64 ({p}, {taps})")
    ldo = out.strides[0] // 4 if p > 1 else j
    xp, wpp, op = native.ptr(x), native.ptr(wp), native.ptr(out)
    ip = native.ptr(idx) if idx is not None else None
    zp = native.ptr(zeros) if zeros is not None else None
    panel_bytes = kb * n * _PANEL * 4
    status = run_parallel([(k.gemm_f32, p0, p1, jj, taps, gi, n, xp, ldx, xoff, ip, zp, wpp + pt * panel_bytes,
                            op + pt * _PANEL * 4, ldo, int(init)) for p0, p1, pt, jj in gemm_parts(p, panels, j)])
    if any(status):
        raise overflow(what, accumulator=True)
    return out


def _block_matmul_native(k, a_mant, a_exp, w_mant, w_exp, out, n, m_bits, what) -> np.ndarray:
    j, kdim = w_mant.shape
    xs = _scaled_native(k, a_mant, a_exp, n, m_bits)
    panels = -(-j // _PANEL)
    wpad = _scaled_native(k, w_mant, w_exp, n, m_bits, panels * _PANEL)
    wp = np.ascontiguousarray(wpad.reshape(panels, _PANEL, kdim // n, n).transpose(0, 2, 3, 1))
    return gemm(k, xs, kdim, wp, np.ascontiguousarray(out, dtype=np.float32), j, n, what)


def block_matmul(
    a: BfpTensor | tuple[np.ndarray, np.ndarray],
    w: BfpTensor | tuple[np.ndarray, np.ndarray],
    cfg: EngineConfig,
    *,
    acc: np.ndarray | None = None,
    what: str = "matrix-vector product",
) -> np.ndarray:
    """``acc[p, j] (+)= sum over blocks b, in order, of conv(dot(a[p, b], w[j, b]))``.

    ``a`` is ``(P, K)`` activations, ``w`` is ``(J, K)`` weights (rows are output channels), both
    BFP-blocked along K; either a BfpTensor or a ``(mant, exp)`` pair. Returns float32 ``(P, J)``
    in the internal format. When ``acc`` is given the sum continues from it (K split in order).
    """
    a_mant, a_exp = (a.mant, a.exp) if isinstance(a, BfpTensor) else a
    w_mant, w_exp = (w.mant, w.exp) if isinstance(w, BfpTensor) else w
    n, m_bits = cfg.native_dim, cfg.mantissa_bits
    p, k = a_mant.shape
    j, kw = w_mant.shape
    if k != kw or k % n or a_exp.shape != (p, k // n) or w_exp.shape != (j, k // n):
        raise ValueError(f"{what}: shapes {a_mant.shape}/{a_exp.shape} x {w_mant.shape}/{w_exp.shape} do not match")
    kb = k // n
    sa = a_exp.astype(np.int32) - (m_bits - 1)
    sw = w_exp.astype(np.int32) - (m_bits - 1)
    out = np.zeros((p, j), np.float32) if acc is None else np.array(acc, dtype=np.float32, copy=True)
    if kb == 0 or p == 0 or j == 0:
        return out

    ar = nonzero_block_range(a_mant, sa, n)
    wr = nonzero_block_range(w_mant, sw, n)
    if ar is None or wr is None:  # every term is an exact zero
        return out
    fast, exact32 = fast_path(ar, wr, cfg)
    if fast and exact32:
        k = native.kernels()
        if k is not None:
            return _block_matmul_native(k, a_mant, a_exp, w_mant, w_exp, out, n, m_bits, what)
    if fast:
        # Every nonzero term is a multiple of 2**-126 and at least 2**-126, so every partial sum
        # is too: binary32 additions never meet a subnormal, and numpy's RNE add is the definition.
        dtype = np.float32 if exact32 else np.float64
        xs = np.empty((kb, p, n), dtype)  # block-major copies, scaled by each block's unit
        np.multiply(a_mant.reshape(p, kb, n).transpose(1, 0, 2), np.ldexp(dtype(1), sa).T[:, :, None],
                    out=xs, casting="unsafe")
        ws = np.empty((kb, n, j), dtype)
        np.multiply(w_mant.reshape(j, kb, n).transpose(1, 2, 0), np.ldexp(dtype(1), sw).T[:, None, :],
                    out=ws, casting="unsafe")
        with np.errstate(over="ignore", invalid="ignore"), _BLAS.limit(limits=1, user_api="blas"):
            # each block product is exact: |partial sums| < 2**24 (or 2**53) units of 2**(sa+sw);
            # products are computed ahead on worker threads, summed here strictly in block order
            pending = deque()
            # several blocks per task, so that each task is worth handing to a thread
            group = int(min(kb, max(1, _TASK_ELEMENTS // max(1, p * j))))
            starts = range(0, kb, group)
            for i, b0 in enumerate(starts):
                pending.append(_POOL.submit(_matmul_quiet, xs[b0:b0 + group], ws[b0:b0 + group]))
                last = i == len(starts) - 1
                while pending and (len(pending) >= _WINDOW or last):
                    for d in pending.popleft().result():  # strictly in block order
                        out += d if exact32 else to_internal(d, what)
        if not np.isfinite(out).all():
            raise overflow(what, accumulator=True)
        return out

    # General path: some terms may underflow; apply the definition one block at a time.
    a64 = np.ldexp(a_mant.astype(np.float64), _expand(sa, n))
    w64 = np.ldexp(w_mant.astype(np.float64), _expand(sw, n))
    for b in range(kb):
        sl = slice(b * n, (b + 1) * n)
        term = to_internal(a64[:, sl] @ w64[:, sl].T, what)
        out = to_internal(out.astype(np.float64) + term, what)
    return out


# ---------------------------------------------------------------------------------------------
# Multi-function unit operations on internal-format (float32) values
# ---------------------------------------------------------------------------------------------

def mfu_add_periodic(a: np.ndarray, b: np.ndarray, what: str = "add") -> np.ndarray:
    """``mfu_add`` of (R, n) binary32 vectors ``a`` and vectors ``b`` repeating with its period
    (``a[r] + b[r % len(b)]``), e.g. a bias for every pixel."""
    k = native.kernels()
    rows, n = a.shape
    period = b.shape[0]
    if k is None or a.dtype != np.float32 or b.dtype != np.float32 or b.shape[1:] != (n,) or not period:
        return mfu_add(a, b[np.arange(rows) % period] if period != rows else b, what)
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    out = np.empty_like(a)
    status = run_parallel([(k.add_f32, r0, r1, n, native.ptr(a), native.ptr(b), period, native.ptr(out))
                           for r0, r1 in split_rows(rows, min_rows=4096)])
    if any(status):
        raise overflow(what)
    return out


def mfu_add(a, b, what: str = "add") -> np.ndarray:
    if getattr(a, "dtype", None) == np.float32 and getattr(b, "dtype", None) == np.float32:
        # Two binary32 operands: the exact sum is a multiple of 2**-149, so binary32's RNE add is
        # the definition's rounding; a result below 2**-126 is exact there and flushes to +0.
        with np.errstate(over="ignore"):
            r = np.add(a, b)
        mag = np.abs(r)
        if not (mag <= FLT_MAX).all():
            raise overflow(what)
        return np.where(mag < FLT_MIN, np.float32(0), r)
    return to_internal(np.asarray(a, np.float64) + np.asarray(b, np.float64), what)


def mfu_sub(a, b, what: str = "subtract") -> np.ndarray:
    """``a - b``: the add of ``-b`` (negation is exact), rounded as ``mfu_add``."""
    return mfu_add(a, np.negative(b), what)


def mfu_mul(a, b, what: str = "multiply") -> np.ndarray:
    return to_internal(np.asarray(a, np.float64) * np.asarray(b, np.float64), what)


def mfu_max(a, b) -> np.ndarray:
    return np.maximum(np.asarray(a, np.float32), np.asarray(b, np.float32))


def mfu_relu(a) -> np.ndarray:
    return np.maximum(np.asarray(a, np.float32), np.float32(0))


def mfu_clip(a, lo, hi) -> np.ndarray:
    return np.minimum(np.maximum(np.asarray(a, np.float32), np.float32(lo)), np.float32(hi))


def mfu_leaky_relu(a, alpha, what: str = "leaky relu") -> np.ndarray:
    """``x < 0 ? to_internal(x * alpha) : x``: only negative elements are multiplied, so only
    their products can overflow."""
    a = np.asarray(a, np.float32)
    out = a.copy()
    negative = a < 0
    out[negative] = mfu_mul(a[negative], np.float32(alpha), what)
    return out
