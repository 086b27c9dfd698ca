"""Running a compiled engine segment on a device, and the host side of its boundary.

An engine segment is a program, a constant memory image and a table of the buffers through which
the host hands tensors in and out. The host converts an IR tensor (NCHW or NC, float32) to the
engine layout (HWC, BFP, channels on the buffer's lanes, with first-layer packing where the
compiler chose it), writes it into external memory, runs the device and reads the outputs back.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from accelml.hdl.config import EngineConfig
from accelml.hdl.errors import PackageError
from accelml.hdl.program import Program
from accelml.sim import bfp, golden, layout
from accelml.sim.memory import ExternalMemory, decode_bfp, decode_fp, encode_bfp

__all__ = ["BufferView", "EngineSegment"]


@dataclass
class BufferView:
    """Where a tensor lives in external memory: ``h * w`` pixels of ``base_cb`` vectors, of which
    this tensor owns blocks ``[cb_off, cb_off + cb)``; logical channel c sits on lane ``lanes[c]``.
    A split buffer has a second plane of the same layout right after the first, holding what the
    first's quantisation misses (``bfp.quantize_split``)."""

    addr: int
    h: int
    w: int
    cb: int
    base_cb: int
    cb_off: int
    fp32: bool
    lanes: np.ndarray
    ir_shape: tuple[int, ...]
    packed: golden.ConvGeom | None = None  # first-layer packing applied by the host
    split: bool = False

    def to_json(self) -> dict:
        d = {"addr": self.addr, "h": self.h, "w": self.w, "cb": self.cb, "base_cb": self.base_cb,
             "cb_off": self.cb_off, "fp32": self.fp32, "ir_shape": list(self.ir_shape)}
        if self.split:
            d["split"] = True
        if np.array_equal(self.lanes, np.arange(len(self.lanes))):
            d["channels"] = len(self.lanes)
        else:
            d["lanes"] = self.lanes.tolist()
        if self.packed is not None:
            g = self.packed
            d["packed"] = {"in_h": g.in_h, "in_w": g.in_w, "kh": g.kh, "kw": g.kw, "stride": list(g.stride),
                           "dilation": list(g.dilation), "pads": list(g.pads)}
        return d

    @classmethod
    def from_json(cls, d: dict) -> BufferView:
        try:
            lanes = np.arange(d["channels"]) if "channels" in d else np.asarray(d["lanes"], np.int64)
            packed = None
            if "packed" in d:
                p = d["packed"]
                packed = golden.ConvGeom(p["in_h"], p["in_w"], p["kh"], p["kw"], tuple(p["stride"]),
                                         tuple(p["dilation"]), tuple(p["pads"]))
            return cls(int(d["addr"]), int(d["h"]), int(d["w"]), int(d["cb"]), int(d["base_cb"]), int(d["cb_off"]),
                       bool(d["fp32"]), lanes, tuple(d["ir_shape"]), packed, bool(d.get("split", False)))
        except (KeyError, TypeError, ValueError) as e:
            raise PackageError(f"malformed buffer entry in the manifest: {e!r}") from None

    def problem(self, cfg: EngineConfig, mem_bytes: int) -> str | None:
        """Why this entry cannot describe a tensor in an engine memory of ``mem_bytes``, or None."""
        n = cfg.native_dim
        if min(self.addr, self.cb_off) < 0 or min(self.h, self.w, self.cb, self.base_cb) <= 0:
            return "negative address or empty extent"
        if self.cb_off + self.cb > self.base_cb:
            return f"blocks {self.cb_off}..{self.cb_off + self.cb - 1} outside the buffer's {self.base_cb}"
        if self.lanes.ndim != 1 or (self.lanes.size and (self.lanes.min() < 0 or self.lanes.max() >= self.cb * n)):
            return f"lanes outside the {self.cb * n} lanes of its blocks"
        end = self.addr + (2 if self.split else 1) * self.h * self.w * self.base_cb * self._vector_bytes(cfg)
        if end > mem_bytes:
            return f"ends at byte {end}, past the segment's {mem_bytes}-byte memory"
        return None

    def _vector_bytes(self, cfg: EngineConfig) -> int:
        return cfg.fp_vector_bytes if self.fp32 else cfg.bfp_vector_bytes

    def _rows(self, cfg: EngineConfig, lo: bool = False) -> tuple[int, int, int]:
        """(first byte, pixel stride, bytes per pixel) of this tensor in plane ``lo``."""
        vb = self._vector_bytes(cfg)
        plane = self.h * self.w * self.base_cb if lo else 0
        return self.addr + (plane + self.cb_off) * vb, self.base_cb * vb, self.cb * vb

    def write(self, mem: ExternalMemory, x: np.ndarray, cfg: EngineConfig, name: str) -> None:
        """Quantise an IR tensor into this buffer."""
        if tuple(x.shape) != self.ir_shape:
            raise PackageError(f"input {name!r}: expected shape {self.ir_shape}, got {tuple(x.shape)}")
        hwc = layout.to_hwc(x)
        if self.packed is not None:
            hwc = layout.pack_first_layer(hwc, self.packed)
        x = layout.on_lanes(hwc, self.lanes, self.cb, cfg.native_dim)
        for lo, q in enumerate(bfp.quantize_planes(x, cfg, split=self.split, name=name)):
            blob = np.frombuffer(encode_bfp(q.mant.reshape(-1, cfg.native_dim), q.exp.reshape(-1), cfg), np.uint8)
            start, stride, row = self._rows(cfg, bool(lo))
            mem.scatter(start, blob.reshape(self.h * self.w, row), stride, f"input {name!r}")

    def read(self, mem: ExternalMemory, cfg: EngineConfig, name: str) -> np.ndarray:
        """This buffer's tensor, in its IR shape, float32 (a split buffer: its planes' exact sum)."""
        where = f"output {name!r}"
        values = 0.0
        for lo in (False, True) if self.split else (False,):
            start, stride, row = self._rows(cfg, lo)
            raw = mem.gather(start, self.h * self.w, row, stride, where)
            if self.fp32:
                values = values + decode_fp(raw, cfg, where=where).astype(np.float64)
            else:
                mant, exp = decode_bfp(raw, cfg, where=where)
                t = bfp.BfpTensor(mant.reshape(1, -1), exp.reshape(1, -1), mant.size, cfg.native_dim,
                                  cfg.mantissa_bits)
                values = values + bfp.dequantize(t)
        hwc = values.reshape(self.h, self.w, -1)[..., self.lanes]
        return layout.from_hwc(hwc, self.ir_shape)


@dataclass
class EngineSegment:
    cfg: EngineConfig
    program: Program
    image: bytes  # the constant part of external memory, placed at address 0
    mem_bytes: int
    inputs: dict[str, BufferView]
    outputs: dict[str, BufferView]
    decoded: dict = field(default_factory=dict, repr=False)  # decodes of the constant image, kept across runs
    _spare: list = field(default_factory=list, repr=False)  # memories of finished runs, for reuse
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def memory(self) -> ExternalMemory:
        """A fresh external memory holding the constant image, write-protected."""
        mem = ExternalMemory(self.cfg, max(self.mem_bytes, len(self.image)))
        mem.write(0, self.image, "constant image")
        mem.freeze(len(self.image), self.decoded)
        return mem

    def _take_memory(self) -> ExternalMemory:
        """A memory in the fresh state: a finished run's, its writable part cleared (the constant
        image is write-protected, so it is intact), or a new one. Concurrent runs get their own."""
        with self._lock:
            mem = self._spare.pop() if self._spare else None
        if mem is None:
            return self.memory()
        mem.data[mem.frozen:] = 0
        return mem

    def run(self, feeds: dict[str, np.ndarray], device) -> dict[str, np.ndarray]:
        """Write the inputs, run the program on ``device``, read the outputs."""
        missing = [name for name in self.inputs if name not in feeds]
        if missing:
            raise PackageError(f"missing input {missing[0]!r}")
        mem = self._take_memory()
        try:
            for name, view in self.inputs.items():
                view.write(mem, np.asarray(feeds[name], dtype=np.float32), self.cfg, name)
            device.execute(self.program, mem)
            return {name: view.read(mem, self.cfg, name) for name, view in self.outputs.items()}
        finally:
            with self._lock:
                self._spare.append(mem)
