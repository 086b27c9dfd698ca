"""External memory and its encodings of BFP and internal-format vectors.

A BFP N-vector occupies ``cfg.bfp_vector_bytes``: N elements of ``cfg.mantissa_bytes`` each
(sign-magnitude, little-endian, sign in the top bit), then one exponent byte holding the biased
field ``x + bias`` (the all-ones field is reserved and refused). A weight tile is N such vectors,
its rows. An internal-format vector is N little-endian binary32 values.
"""

from __future__ import annotations

import numpy as np

from accelml.hdl.config import EngineConfig
from accelml.hdl.errors import ExecutionError

from . import native
from .bfp import BfpTensor, to_internal

# what a load refuses, in the words every decoding path uses
BAD_BFP = "invalid BFP vector encoding (mantissa too wide or reserved exponent)"
BAD_FP = "internal-format vector holds NaN or infinity"


def encode_bfp(mant: np.ndarray, exp: np.ndarray, cfg: EngineConfig) -> bytes:
    """(n, N) signed mantissas and (n,) shared exponents -> n * bfp_vector_bytes bytes."""
    n, mb = cfg.native_dim, cfg.mantissa_bytes
    k = native.kernels() if mb == 1 else None
    if k is not None:
        m16 = np.ascontiguousarray(mant, dtype=np.int16).reshape(-1, n)
        e16 = np.ascontiguousarray(exp, dtype=np.int16).reshape(-1)
        out = bytearray(m16.shape[0] * (n + 1))
        if out:
            k.store_bfp_b1(1, m16.shape[0], 1, n, cfg.exp_bias, native.ptr(m16), native.ptr(e16),
                           0, np.frombuffer(out, np.uint8).ctypes.data, 0)
        return bytes(out)
    mant = np.asarray(mant, dtype=np.int64).reshape(-1, n)
    exp = np.asarray(exp, dtype=np.int64).reshape(-1)
    word = np.abs(mant) | ((mant < 0).astype(np.int64) << (8 * mb - 1))
    out = np.empty((mant.shape[0], n * mb + 1), dtype=np.uint8)
    out[:, : n * mb] = ((word[..., None] >> (8 * np.arange(mb))) & 0xFF).reshape(mant.shape[0], n * mb)
    out[:, -1] = exp + cfg.exp_bias
    return out.tobytes()


def decode_bfp(raw: np.ndarray, cfg: EngineConfig, *, where: str = "memory") -> tuple[np.ndarray, np.ndarray]:
    """uint8 bytes of whole vectors -> ((n, N) int32 mantissas, (n,) int16 exponents)."""
    n, mb = cfg.native_dim, cfg.mantissa_bytes
    raw = np.asarray(raw, dtype=np.uint8).reshape(-1, n * mb + 1)
    k = native.kernels() if mb == 1 else None
    if k is not None:
        raw = np.ascontiguousarray(raw)
        mant = np.empty((raw.shape[0], n), np.int16)
        exp = np.empty(raw.shape[0], np.int16)
        if k.load_bfp_b1(1, raw.shape[0], 1, n, cfg.mantissa_bits, cfg.exponent_bits, cfg.exp_bias, native.ptr(raw),
                         0, native.ptr(mant), native.ptr(exp), 0):
            raise ExecutionError(f"{where}: {BAD_BFP}")
        return mant, exp
    if mb == 1:  # the common case: one byte per element, no widening needed
        word = raw[:, :n]
    else:
        b = raw[:, : n * mb].reshape(-1, n, mb).astype(np.int64)
        word = (b << (8 * np.arange(mb))).sum(axis=-1)
    sign_bit = 1 << (8 * mb - 1)
    mag = word & (sign_bit - 1)
    field = raw[:, -1].astype(np.int32)
    if (mag > (1 << cfg.mantissa_bits) - 1).any() or (field == (1 << cfg.exponent_bits) - 1).any() \
            or (field >= 1 << cfg.exponent_bits).any():
        raise ExecutionError(f"{where}: {BAD_BFP}")
    mag = mag.astype(np.int16 if mb == 1 else np.int32)
    mant = np.where(word >= sign_bit, -mag, mag)
    return mant, (field - cfg.exp_bias).astype(np.int16)


def encode_fp(values: np.ndarray) -> bytes:
    return np.ascontiguousarray(values, dtype="<f4").tobytes()


def decode_fp(raw: np.ndarray, cfg: EngineConfig, *, where: str = "memory") -> np.ndarray:
    v = np.ascontiguousarray(raw, dtype=np.uint8).view("<f4").reshape(-1, cfg.native_dim)
    if not np.isfinite(v).all():
        raise ExecutionError(f"{where}: {BAD_FP}")
    return to_internal(v.astype(np.float64), where)


def bfp_rows(t: BfpTensor) -> tuple[np.ndarray, np.ndarray]:
    """A BFP tensor as (vectors, N) mantissas and (vectors,) exponents, block-major."""
    return t.mant.reshape(-1, t.block), t.exp.reshape(-1)


class ExternalMemory:
    """A byte-addressed external memory image with bounds checks."""

    def __init__(self, cfg: EngineConfig, size: int):
        if size > cfg.mem_bytes:
            raise ExecutionError(f"memory image of {size} bytes exceeds {cfg.name}'s {cfg.mem_bytes} bytes")
        self.cfg = cfg
        self.data = np.zeros(size, dtype=np.uint8)
        self.frozen = 0  # bytes [0, frozen) are the read-only constant image (weights, biases)
        self.decoded: dict = {}  # decoded reads of the constant image, reusable while it is unchanged

    def freeze(self, nbytes: int, decoded: dict | None = None) -> None:
        """Make the first ``nbytes`` read-only; ``decoded`` may carry decodes from an identical image."""
        self.frozen = nbytes
        if decoded is not None:
            self.decoded = decoded

    @property
    def size(self) -> int:
        return self.data.size

    def _check(self, addr: int, nbytes: int, what: str) -> None:
        if addr < 0 or addr + nbytes > self.data.size:
            raise ExecutionError(
                f"{what}: external memory access [{addr:#x}, {addr + nbytes:#x}) outside the "
                f"{self.data.size}-byte image"
            )

    def write(self, addr: int, blob: bytes | np.ndarray, what: str = "write") -> None:
        arr = np.frombuffer(blob, dtype=np.uint8) if isinstance(blob, bytes | bytearray) else blob
        self._check(addr, arr.size, what)
        self.data[addr: addr + arr.size] = arr

    def read(self, addr: int, nbytes: int, what: str = "read") -> np.ndarray:
        self._check(addr, nbytes, what)
        return self.data[addr: addr + nbytes]

    def _rows(self, addr: int, rows: int, row_bytes: int, stride: int, what: str) -> np.ndarray:
        """A (rows, row_bytes) view of the image starting at addr, rows ``stride`` bytes apart."""
        if rows > 1 and stride < row_bytes:
            raise ExecutionError(f"{what}: memory stride {stride} is smaller than a row of {row_bytes} bytes")
        if not (rows and row_bytes):
            return np.zeros((rows, row_bytes), np.uint8)
        self._check(addr, (rows - 1) * stride + row_bytes, what)
        return np.lib.stride_tricks.as_strided(self.data[addr:], shape=(rows, row_bytes), strides=(stride, 1))

    def gather(self, addr: int, rows: int, row_bytes: int, stride: int, what: str) -> np.ndarray:
        return self._rows(addr, rows, row_bytes, stride, what).copy()

    def scatter(self, addr: int, block: np.ndarray, stride: int, what: str) -> None:
        if addr < self.frozen and block.size:
            raise ExecutionError(f"{what}: write at {addr:#x} into the read-only constant image (< {self.frozen:#x})")
        self._rows(addr, *block.shape, stride, what)[...] = block
