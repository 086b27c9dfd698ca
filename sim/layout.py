"""Placing tensors in an external-memory image, in the layouts the engine's instructions read.

* Activations: pixel-major BFP vectors, channel blocks minor (``(H*W*CB)`` vectors).
* Weights: N x N tiles in MVC order ``(output block, kernel tap, input block of the group)``.
* Internal-format constants (bias, scales): binary32 N-vectors.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from accelml.hdl.config import EngineConfig

from . import golden, native
from .bfp import BfpTensor
from .memory import ExternalMemory, decode_bfp, encode_bfp, encode_fp


def weight_tiles(wq: BfpTensor, taps: int, in_cb: int, *, gi: int = 0, go: int = 0, ob0: int = 0):
    """Quantised conv/dense weight rows (Cout, taps*in_cb*N) -> MRF tiles for an MVC.

    Returns (mant (tiles, N, N), exp (tiles, N)) ordered (output block, tap, input block), with
    only the group's ``gi`` input blocks per output block when ``gi`` is set (grouped/depthwise).
    Output rows are zero-padded to whole blocks.
    """
    n = wq.block
    cout = wq.mant.shape[0]
    cob = -(-cout // n)
    mant = np.zeros((cob * n, taps, in_cb, n), wq.mant.dtype)
    exp = np.full((cob * n, taps, in_cb), int(wq.exp.min()), np.int16)
    mant[:cout] = wq.mant.reshape(cout, taps, in_cb, n)
    exp[:cout] = wq.exp.reshape(cout, taps, in_cb)
    mant = mant.reshape(cob, n, taps, in_cb, n)
    exp = exp.reshape(cob, n, taps, in_cb)
    if gi:
        go = go or cob
        sel = [((ob0 + ob) // go) * gi + np.arange(gi) for ob in range(cob)]
        mant = np.stack([mant[ob][:, :, sel[ob]] for ob in range(cob)])
        exp = np.stack([exp[ob][:, :, sel[ob]] for ob in range(cob)])
    # (cob, rows, taps, blocks, lanes) -> (cob, taps, blocks, rows, lanes)
    tiles_m = mant.transpose(0, 2, 3, 1, 4).reshape(-1, n, n)
    tiles_e = exp.transpose(0, 2, 3, 1).reshape(-1, n)
    return tiles_m, tiles_e


@dataclass
class MemoryImage:
    """Named regions in an external-memory image, allocated in order with 64-byte alignment."""

    cfg: EngineConfig
    regions: dict = field(default_factory=dict)  # name -> (address, nbytes)
    chunks: list = field(default_factory=list)  # (address, bytes)
    top: int = 0

    def reserve(self, name: str, nbytes: int, at: int | None = None) -> int:
        if name in self.regions:
            raise ValueError(f"memory region {name!r} is already placed")
        addr = at if at is not None else -(-self.top // 64) * 64
        self.regions[name] = (addr, nbytes)
        self.top = max(self.top, addr + nbytes)
        return addr

    def put(self, name: str, blob: bytes, at: int | None = None) -> int:
        addr = self.reserve(name, len(blob), at)
        self.chunks.append((addr, blob))
        return addr

    def put_bfp(self, name: str, t: BfpTensor | tuple, at: int | None = None) -> int:
        mant, exp = (t.mant, t.exp) if isinstance(t, BfpTensor) else t
        return self.put(name, encode_bfp(mant, exp, self.cfg), at)

    def put_fp(self, name: str, values, at: int | None = None) -> int:
        return self.put(name, encode_fp(values), at)

    def build(self, extra: int = 0) -> ExternalMemory:
        mem = ExternalMemory(self.cfg, -(-(self.top + extra) // 64) * 64)
        for addr, blob in self.chunks:
            mem.write(addr, blob, "image")
        return mem


def read_bfp(mem: ExternalMemory, addr: int, vectors: int, cfg: EngineConfig) -> tuple[np.ndarray, np.ndarray]:
    raw = mem.read(addr, vectors * cfg.bfp_vector_bytes, "read back")
    return decode_bfp(raw, cfg, where=f"read back at {addr:#x}")


# -- host-side conversions at the engine boundary (IR tensors are NCHW / NC, the engine HWC) --

def pixel_grid(pixels: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of output pixels ``pixels`` = (pix0, npix, out_w)."""
    pix0, npix, out_w = pixels
    q = pix0 + np.arange(npix)
    return q // out_w, q % out_w


def window_index(geom: golden.ConvGeom, pixels: tuple | None = None) -> tuple[np.ndarray, int]:
    """``geom.window_index`` of output pixels ``pixels`` (pix0, npix, out_w; default all), with -1
    for a tap outside the input (a zero block in native.c, the last row of an array that ends
    with a zero row), and its address; kept per geometry and pixels (read-only, shared by every
    thread: ``functools.lru_cache`` is thread-safe)."""
    if pixels is None:
        oh, ow = geom.out_size()
        pixels = (0, oh * ow, ow)
    return _window_index(geom, pixels)


@functools.lru_cache(maxsize=512)
def _window_index(geom: golden.ConvGeom, pixels: tuple) -> tuple[np.ndarray, int]:
    a = np.ascontiguousarray(geom.window_index(*pixel_grid(pixels), -1), dtype=np.int64)
    a.flags.writeable = False
    return a, native.ptr(a)


def pack_first_layer(x_hwc: np.ndarray, geom: golden.ConvGeom) -> np.ndarray:
    """(H, W, C) -> (OH, OW, kh*kw*C): each output pixel's window, tap-major, zeros outside."""
    h, w, c = x_hwc.shape
    flat = np.concatenate([x_hwc.reshape(h * w, c), np.zeros((1, c), x_hwc.dtype)])  # index -1: the zero row
    oh, ow = geom.out_size()
    return flat[window_index(geom)[0]].reshape(oh, ow, -1)


def to_hwc(x: np.ndarray) -> np.ndarray:
    """IR tensor (1, C, H, W) or (1, C) -> (H, W, C); binary32 stays binary32 (quantising it is
    exact either way), anything else becomes float64."""
    x = np.asarray(x)
    x = x if x.dtype == np.float32 else x.astype(np.float64)
    return x[0].transpose(1, 2, 0) if x.ndim == 4 else x.reshape(1, 1, -1)


def from_hwc(y: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(H, W, C) -> the IR shape (NCHW or flattened NC, row-major over C, H, W)."""
    nchw = y.transpose(2, 0, 1)[None]
    return np.ascontiguousarray(nchw.reshape(shape), dtype=np.float32)


def on_lanes(hwc: np.ndarray, lanes: np.ndarray, cb: int, n: int) -> np.ndarray:
    """Logical channels of an (H, W, C) tensor scattered onto their physical lanes: (H*W, cb*N)
    float32, unused lanes zero; ready to quantise into a buffer's blocks."""
    pixels = hwc.shape[0] * hwc.shape[1]
    phys = np.zeros((pixels, cb * n), np.float32)
    c = len(lanes)
    if np.array_equal(lanes, np.arange(c)):  # the identity: a slice, not a scatter
        phys[:, :c] = hwc.reshape(pixels, c)
    else:
        phys[:, lanes] = hwc.reshape(pixels, -1)
    return phys
