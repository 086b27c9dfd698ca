"""Native kernels for the functional simulator: built once from ``native.c``, loaded with ctypes.

The numerics are defined in ``accelml.sim.bfp`` (numpy); the kernels here compute the same bits
faster, and the tests run both and compare them. They are built on first use with the system C
compiler (``$CC``, else ``cc``) for this machine (``-O3 -march=native``) and cached under
``$ACCELML_CACHE_DIR`` (default ``~/.cache/accelml``) by a hash of the source, the flags, the
compiler's version and the CPU; a failed build is reported once and the numpy code is used.
``ACCELML_NATIVE=0`` turns the kernels off.

ctypes releases the GIL during a call, so callers split rows across the simulator's two worker
threads.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

__all__ = ["kernels", "status", "NativeKernels"]

SOURCE = Path(__file__).with_name("native.c")
FLAGS = ["-O3", "-march=native", "-fPIC", "-shared", "-std=gnu11"]
_I64, _INT = ctypes.c_int64, ctypes.c_int
_PTR = ctypes.c_void_p


def cache_root() -> Path:
    """The user cache directory: ``$ACCELML_CACHE_DIR``, else ``~/.cache/accelml``."""
    return Path(os.environ.get("ACCELML_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "accelml"))


def cache_dir() -> Path:
    return cache_root() / "native"


def _cpu_id() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compiler() -> str | None:
    cc = os.environ.get("CC") or "cc"
    return shutil.which(cc)


# entry points: name in native.c -> (argument types, result type); see native.c for the contracts
_SIGNATURES = {
    "bfp_gemm_f32": ([_I64, _I64, _I64, _I64, _I64, _I64, _PTR, _I64, _I64, _PTR, _PTR, _PTR, _PTR, _I64, _INT],
                     _I64),
    "bfp_scale_range_i16": ([_I64, _I64, _I64, _INT, _PTR, _PTR, _PTR, _PTR], None),
    "bfp_gemm_i8": ([_I64, _I64, _I64, _I64, _I64, _I64, _PTR, _I64, _I64, _PTR, _I64, _I64, _PTR, _PTR, _PTR, _PTR,
                     _PTR, _PTR, _PTR, _I64, _INT], _I64),
    "bfp_image_u8": ([_I64, _I64, _INT, _PTR, _PTR, _PTR, _PTR, _PTR], None),
    "bfp_pack_tiles_i8": ([_I64, _I64, _I64, _INT, _PTR, _PTR, _PTR, _PTR, _PTR], None),
    "bfp_quantize_f32": ([_I64, _I64, _I64, _INT, _INT, _INT, _PTR, _PTR, _PTR], _I64),
    "bfp_scale_i16": ([_I64, _I64, _I64, _I64, _INT, _PTR, _PTR, _PTR], None),
    "bfp_scale_i32": ([_I64, _I64, _I64, _I64, _INT, _PTR, _PTR, _PTR], None),
    "bfp_dequant_i16": ([_I64, _I64, _I64, _INT, _PTR, _PTR, _PTR], None),
    "bfp_dequant_i32": ([_I64, _I64, _I64, _INT, _PTR, _PTR, _PTR], None),
    "bfp_add_f32": ([_I64, _I64, _I64, _PTR, _PTR, _I64, _PTR], _I64),
    "bfp_pack_tiles": ([_I64, _I64, _I64, _INT, _PTR, _PTR, _PTR], None),
    "bfp_load_bfp_b1": ([_I64, _I64, _I64, _I64, _INT, _INT, _INT, _PTR, _I64, _PTR, _PTR, _I64], _I64),
    "bfp_store_bfp_b1": ([_I64, _I64, _I64, _I64, _INT, _PTR, _PTR, _I64, _PTR, _I64], None),
    "bfp_load_f32": ([_I64, _I64, _I64, _PTR, _I64, _PTR, _I64], _I64),
    "bfp_quantize_rows": ([_I64, _I64, _INT, _INT, _INT, _PTR, _PTR, _PTR], _I64),
    "bfp_dequant_rows": ([_I64, _I64, _INT, _PTR, _PTR, _PTR], None),
    "bfp_pool": ([_I64, _I64, _I64, _I64, _PTR, _PTR, _INT, _PTR, _PTR], _I64),
    "bfp_mfu_chain": ([_I64, _I64, _PTR, _PTR, _I64, _INT, _PTR, _INT, _INT, _INT, _PTR, _PTR, _PTR, _INT], _I64),
    "dma_load_phase": ([_PTR, _I64, _I64, _I64, _I64, _I64, _I64, _I64, _I64, _PTR], _I64),
    "dma_store_phase": ([_PTR, _I64, _I64, _I64, _I64, _I64, _I64, _I64, _I64, _PTR], _I64),
}


class NativeKernels:
    """The loaded library with typed entry points (see native.c for the contracts)."""

    def __init__(self, path: Path):
        lib = ctypes.CDLL(str(path))
        self.path = path
        fns = {}
        for name, (args, result) in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, result
            fns[name] = fn
        self.gemm_f32, self.quantize_f32 = fns["bfp_gemm_f32"], fns["bfp_quantize_f32"]
        self.scale_range_i16 = fns["bfp_scale_range_i16"]
        self.gemm_i8, self.image_u8 = fns["bfp_gemm_i8"], fns["bfp_image_u8"]
        self.pack_tiles_i8 = fns["bfp_pack_tiles_i8"]
        # the integer MVU needs AVX-512 VNNI (an empty product answers -1 without it)
        self.has_gemm_i8 = self.gemm_i8(0, 0, 0, 1, 1, 16, *([None, 0, 0, None, 0, 0] + [None] * 7), 0, 0) == 0
        self.add_f32 = fns["bfp_add_f32"]
        self.pack_tiles = fns["bfp_pack_tiles"]
        # the simulator's DMA and multi-function unit on its register files (funcsim)
        self.load_bfp_b1, self.store_bfp_b1 = fns["bfp_load_bfp_b1"], fns["bfp_store_bfp_b1"]
        self.load_f32, self.quantize_rows = fns["bfp_load_f32"], fns["bfp_quantize_rows"]
        self.dequant_rows, self.mfu_chain = fns["bfp_dequant_rows"], fns["bfp_mfu_chain"]
        self.pool = fns["bfp_pool"]
        # the cycle model's DMA phases (accelml.sim.cycles)
        self.dma_load_phase, self.dma_store_phase = fns["dma_load_phase"], fns["dma_store_phase"]
        # by mantissa dtype
        self.scale = {np.dtype(np.int16): fns["bfp_scale_i16"], np.dtype(np.int32): fns["bfp_scale_i32"]}
        self.dequant = {np.dtype(np.int16): fns["bfp_dequant_i16"], np.dtype(np.int32): fns["bfp_dequant_i32"]}


def _build() -> Path:
    cc = _compiler()
    if cc is None:
        raise OSError("no C compiler (set CC, or install cc)")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60).stdout
    src = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([src, " ".join(FLAGS).encode(), version.encode(), _cpu_id().encode(),
                                     platform.machine().encode()])).hexdigest()[:24]
    target = cache_dir() / f"accelml_native_{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"accelml: building the simulator's native kernels with {Path(cc).name} (once per machine, about "
          f"half a minute) into {target.parent}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        r = subprocess.run([cc, *FLAGS, "-o", str(out), str(SOURCE), "-lm"], capture_output=True, text=True,
                           timeout=300)
        if r.returncode != 0:
            raise OSError(f"{cc} failed: {(r.stderr or r.stdout).strip()[:2000]}")
        os.replace(out, target)  # atomic: concurrent builders of the same key are harmless
    return target


_STATUS = "not loaded"


@functools.cache
def kernels() -> NativeKernels | None:
    """The native kernels, or None (numpy is used) when turned off or they cannot be built."""
    global _STATUS
    if os.environ.get("ACCELML_NATIVE", "1").strip().lower() in ("0", "no", "off", "false"):
        _STATUS = "off (ACCELML_NATIVE=0)"
        return None
    try:
        k = NativeKernels(_build())
    except (OSError, subprocess.SubprocessError) as e:
        _STATUS = f"unavailable ({e}); using numpy"
        warnings.warn(f"accelml: native simulator kernels unavailable, using numpy (slower): {e}",
                      RuntimeWarning, stacklevel=2)
        return None
    _STATUS = f"native ({k.path.name})"
    return k


def status() -> str:
    """How the simulator's kernels run: native (and which library) or numpy, and why."""
    kernels()
    return _STATUS


def ptr(a: np.ndarray) -> int:
    return a.ctypes.data
