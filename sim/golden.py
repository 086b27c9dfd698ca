"""Golden layer operations on BFP tensors: the reference for the functional simulator and the RTL.

Activations are single images in HWC layout (batch 1, channels last, BFP blocks along channels);
layer outputs are internal-format float32 HWC arrays, which ``bfp.quantize`` re-quantises for the
next layer. Weights follow ONNX layouts and are quantised here once, offline.

Reduction order (part of the definition): kernel row, kernel column, then input channel block.
Grouped and depthwise convolutions are defined as the dense convolution with block-diagonal
(zero-expanded) weights; all-zero weight blocks add exactly nothing, so hardware may skip them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from accelml.hdl.config import EngineConfig

from . import bfp
from .bfp import BfpTensor


@dataclass(frozen=True)
class ConvGeom:
    """Geometry of a convolution or pooling window over an HWC input."""

    in_h: int
    in_w: int
    kh: int
    kw: int
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    ceil_mode: bool = False

    def out_size(self) -> tuple[int, int]:
        def one(n, k, s, d, p0, p1):
            span = n + p0 + p1 - (d * (k - 1) + 1)
            if span < 0:
                raise ValueError(f"window {k} (dilation {d}) is larger than the padded input {n + p0 + p1}")
            q, r = divmod(span, s)
            out = q + 1 + (1 if self.ceil_mode and r else 0)
            # ONNX: with ceil_mode the last window must start inside the input or left padding
            if self.ceil_mode and (out - 1) * s >= n + p0:
                out -= 1
            return out

        t, l, b, r = self.pads
        return (one(self.in_h, self.kh, self.stride[0], self.dilation[0], t, b),
                one(self.in_w, self.kw, self.stride[1], self.dilation[1], l, r))

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Row and column of every output pixel, flat, row-major."""
        oh, ow = self.out_size()
        q = np.arange(oh * ow)
        return q // ow, q % ow

    def taps(self, oy: np.ndarray, ox: np.ndarray):
        """Yield (ky, kx, iy, ix, valid) for every kernel tap, in the reduction order.

        ``oy``/``ox`` are flat output coordinates; iy/ix/valid have their shape.
        """
        for ky in range(self.kh):
            for kx in range(self.kw):
                iy = oy * self.stride[0] - self.pads[0] + ky * self.dilation[0]
                ix = ox * self.stride[1] - self.pads[1] + kx * self.dilation[1]
                valid = (iy >= 0) & (iy < self.in_h) & (ix >= 0) & (ix < self.in_w)
                yield ky, kx, iy, ix, valid

    def window_index(self, oy: np.ndarray, ox: np.ndarray, outside: int) -> np.ndarray:
        """(P, taps) int64: the flat input pixel (y * in_w + x) each tap of each output pixel reads,
        in the reduction order, or ``outside`` for a tap outside the input."""
        return np.stack([np.where(valid, iy * self.in_w + ix, outside) for _, _, iy, ix, valid in self.taps(oy, ox)],
                        axis=1).astype(np.int64)

    def gather(self, x: np.ndarray, iy: np.ndarray, ix: np.ndarray, valid: np.ndarray, fill) -> np.ndarray:
        """x[iy, ix] (HW... array) with ``fill`` where the tap lies outside the input."""
        v = x[np.clip(iy, 0, self.in_h - 1), np.clip(ix, 0, self.in_w - 1)]
        return np.where(valid.reshape(valid.shape + (1,) * (v.ndim - valid.ndim)), v, fill)


def _check_groups(cin: int, cout: int, groups: int) -> None:
    if groups < 1 or cin % groups or cout % groups:
        raise ValueError(f"groups={groups} must divide input channels {cin} and output channels {cout}")


def expand_group_weights(w: np.ndarray, groups: int) -> np.ndarray:
    """ONNX (Cout, Cin/groups, kh, kw) weights -> dense (Cout, Cin, kh, kw), zeros off the groups."""
    cout, cpg, kh, kw = w.shape
    _check_groups(cpg * groups, cout, groups)
    if groups == 1:
        return np.asarray(w)
    dense = np.zeros((cout, cpg * groups, kh, kw), dtype=np.asarray(w).dtype)
    opg = cout // groups
    for g in range(groups):
        dense[g * opg:(g + 1) * opg, g * cpg:(g + 1) * cpg] = w[g * opg:(g + 1) * opg]
    return dense


def quantize_conv_weights(w, cfg: EngineConfig, groups: int = 1, *, name: str = "weights",
                          min_error: bool = False) -> BfpTensor:
    """ONNX conv weights (Cout, Cin/groups, kh, kw) -> BFP rows (Cout, kh*kw*cin_blocks*N).

    Each row is blocked per kernel tap along input channels (padded to whole blocks), in the
    reduction order; ``min_error``: each block's exponent chosen by ``bfp.quantize_min_error``.
    """
    taps = conv_weight_taps(w, cfg, groups)
    cout, kh, kw, k = taps.shape
    quant = bfp.quantize_min_error if min_error else bfp.quantize
    q = quant(taps, cfg, name=name)  # blocks never straddle taps: k is whole blocks
    return BfpTensor(q.mant.reshape(cout, -1), q.exp.reshape(cout, -1), kh * kw * k, cfg.native_dim, q.mantissa_bits)


def conv_weight_taps(w, cfg: EngineConfig, groups: int = 1) -> np.ndarray:
    """ONNX conv weights (Cout, Cin/groups, kh, kw) -> the float values ``quantize_conv_weights``
    rounds: (Cout, kh, kw, cin_blocks * N), groups expanded, input channels zero-padded to whole
    blocks (float32 kept, else float64)."""
    w = np.asarray(w)
    dense = expand_group_weights(w if w.dtype == np.float32 else w.astype(np.float64), groups)
    cout, cin, kh, kw = dense.shape
    n = cfg.native_dim
    taps = np.zeros((cout, kh, kw, -(-cin // n) * n), dtype=dense.dtype)
    taps[..., :cin] = dense.transpose(0, 2, 3, 1)
    return taps


def quantize_dense_weights(w, cfg: EngineConfig, *, name: str = "weights") -> BfpTensor:
    """Dense weights (J, K) (rows are outputs) -> BFP rows blocked along K."""
    w = np.asarray(w)
    return bfp.quantize(w if w.dtype == np.float32 else w.astype(np.float64), cfg, name=name)


def im2col(x: BfpTensor, geom: ConvGeom, oy=None, ox=None) -> tuple[np.ndarray, np.ndarray]:
    """Gather BFP activation blocks for output pixels: mant (P, taps*cinb*N), exp (P, taps*cinb).

    ``x`` is HWC. Taps outside the input read a zero block. Default pixels: the whole output grid.
    """
    if oy is None:
        oy, ox = geom.grid()
    h, w = geom.in_h, geom.in_w
    idx = geom.window_index(oy, ox, h * w)  # outside: the zero row appended below
    mant = np.concatenate([x.mant.reshape(h * w, -1), np.zeros((1, x.mant.shape[-1]), x.mant.dtype)])
    exp = np.concatenate([x.exp.reshape(h * w, -1), np.zeros((1, x.exp.shape[-1]), x.exp.dtype)])
    p = oy.size
    return mant[idx].reshape(p, -1), exp[idx].reshape(p, -1)


def conv2d(x: BfpTensor, wq: BfpTensor, geom: ConvGeom, cfg: EngineConfig, *, bias=None,
           acc: np.ndarray | None = None) -> np.ndarray:
    """Convolution accumulated in the MVU (and bias added in the MFU): internal float32 (OH, OW, Cout).
    ``acc`` (OH, OW, Cout): a sum to continue (its blocks come before these)."""
    if x.mant.ndim != 3:
        raise ValueError(f"conv2d expects an HWC BFP activation, got shape {x.mant.shape}")
    a_mant, a_exp = im2col(x, geom)
    if a_mant.shape[1] != wq.mant.shape[1]:
        raise ValueError(
            f"conv2d: activation columns {a_mant.shape[1]} do not match weight columns {wq.mant.shape[1]}"
        )
    if acc is not None:
        acc = acc.reshape(a_mant.shape[0], -1)
    acc = bfp.block_matmul((a_mant, a_exp), wq, cfg, acc=acc, what="conv")
    if bias is not None:
        acc = bfp.mfu_add(acc, bfp.internal_const(bias, "bias")[None, :], "conv bias")
    oh, ow = geom.out_size()
    return acc.reshape(oh, ow, -1)


def dense(x: BfpTensor, wq: BfpTensor, cfg: EngineConfig, *, bias=None) -> np.ndarray:
    """Fully connected layer on a BFP vector (K,) or matrix (P, K): internal float32 (..., J)."""
    a = x if x.mant.ndim == 2 else BfpTensor(x.mant[None], x.exp[None], x.length, x.block, x.mantissa_bits)
    acc = bfp.block_matmul(a, wq, cfg, what="dense")
    if bias is not None:
        acc = bfp.mfu_add(acc, bfp.internal_const(bias, "bias")[None, :], "dense bias")
    return acc if x.mant.ndim == 2 else acc[0]


def _pool_out(geom: ConvGeom, flat: np.ndarray, full: bool) -> np.ndarray:
    return flat.reshape(*geom.out_size(), -1) if full else flat


def max_pool(x: np.ndarray, geom: ConvGeom, oy=None, ox=None) -> np.ndarray:
    """Max over each window of internal values (HWC); taps outside the input are ignored."""
    full = oy is None
    if full:
        oy, ox = geom.grid()
    out = None
    for _, _, iy, ix, valid in geom.taps(oy, ox):
        v = geom.gather(x, iy, ix, valid, -np.inf)
        out = v if out is None else np.maximum(out, v)
    if np.isinf(out).any():
        raise ValueError("max_pool: a window lies entirely in the padding")
    return _pool_out(geom, out.astype(np.float32), full)


def avg_divisors(geom: ConvGeom, count_include_pad: bool, oy, ox) -> np.ndarray:
    """Per-output divisor: taps inside the input, or inside input + explicit pads (ONNX semantics)."""
    t, l, b, r = geom.pads
    count = np.zeros(oy.shape, np.int64)
    for _, _, iy, ix, valid in geom.taps(oy, ox):
        if count_include_pad:
            valid = (iy >= -t) & (iy < geom.in_h + b) & (ix >= -l) & (ix < geom.in_w + r)
        count += valid
    return count


def avg_pool(x: np.ndarray, geom: ConvGeom, *, count_include_pad: bool = False, oy=None, ox=None) -> np.ndarray:
    """Average pool: window sum in tap order (each add rounded), times the rounded reciprocal.

    A window with a divisor of zero (no tap inside the input, or, with ``count_include_pad``,
    inside the input and its pads) is a ValueError, checked before the sums."""
    full = oy is None
    if full:
        oy, ox = geom.grid()
    count = avg_divisors(geom, count_include_pad, oy, ox)
    if not count.all():
        where = "outside the input and its pads" if count_include_pad else "in the padding"
        raise ValueError(f"avg_pool: a window lies entirely {where} (divisor 0)")
    acc = None
    for _, _, iy, ix, valid in geom.taps(oy, ox):
        v = geom.gather(x, iy, ix, valid, 0)
        acc = bfp.to_internal(v) if acc is None else bfp.mfu_add(acc, v, "avg pool sum")
    recip = bfp.internal_const(1.0 / count, "avg pool reciprocal")
    return _pool_out(geom, bfp.mfu_mul(acc, recip[:, None], "avg pool scale"), full)


def global_avg_pool(x: np.ndarray) -> np.ndarray:
    """Global average pool of HWC internal values -> (1, 1, C)."""
    h, w, _ = x.shape
    return avg_pool(x, ConvGeom(h, w, h, w), count_include_pad=False)


def residual_add(a: np.ndarray, shortcut: BfpTensor | np.ndarray) -> np.ndarray:
    """MFU add of a layer result and a shortcut (a BFP activation is dequantised exactly first)."""
    b = dequantize_internal(shortcut) if isinstance(shortcut, BfpTensor) else shortcut
    return bfp.mfu_add(a, b, "residual add")


def dequantize_internal(t: BfpTensor) -> np.ndarray:
    """BFP -> internal format (FTZ applies), keeping only the logical channels."""
    return bfp.dequantize_internal(t)[..., : t.length]


def concat_channels(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenate internal-format HWC tensors along channels (a pure layout operation)."""
    return np.concatenate(parts, axis=-1)
