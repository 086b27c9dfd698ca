"""Functional-simulator speed: a 3x3 conv 56x56x64 -> 64 next to a float32 numpy im2col GEMM.

Both run on the same data in the same process, interleaved; the best of several repeats of each
is reported, and the ratio is the figure (absolute times depend on this machine).

    python tests/bench/bench_funcsim.py [--preset a10] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from accelml.hdl.config import preset
from accelml.hdl.program import assemble_program
from accelml.sim import bfp, golden
from accelml.sim.funcsim import FuncSim
from accelml.sim.layout import MemoryImage, read_bfp, weight_tiles

H = W = 56
CIN = COUT = 64


def conv_program(cfg) -> str:
    n = cfg.native_dim
    cb, cob = CIN // n, COUT // n
    return f"""
seti r1, 0
ld vrf, r0, r1, 1, {H * W * cb}
seti r2, 0x100000
ld mrf, r0, r2, 1, {cob * 9 * cb}
cfg in_h, r0, {H}
cfg in_w, r0, {W}
cfg in_cb, r0, {cb}
cfg kh, r0, 3
cfg kw, r0, 3
cfg pad_t, r0, 1
cfg pad_l, r0, 1
cfg out_w, r0, {W}
cfg npix, r0, {H * W}
cfg cob, r0, {cob}
mvc r0, r0, r0, 0
qnt r0, r0, {H * W * cob}
seti r3, 0x200000
st vrf, r0, r3, 1, {H * W * cob}
halt
"""


def float_im2col_gemm(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    xp = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    cols = np.concatenate([xp[ky:ky + H, kx:kx + W] for ky in range(3) for kx in range(3)], axis=-1)
    wm = w.transpose(2, 3, 1, 0).reshape(9 * CIN, COUT)
    return cols.reshape(H * W, 9 * CIN) @ wm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="a10")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    cfg = preset(args.preset)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((H, W, CIN)).astype(np.float32)
    w = (rng.standard_normal((COUT, CIN, 3, 3)) * np.sqrt(2 / (9 * CIN))).astype(np.float32)
    xq = bfp.quantize(x, cfg)
    wq = golden.quantize_conv_weights(w, cfg)
    img = MemoryImage(cfg)
    img.put_bfp("x", xq, at=0)
    img.put_bfp("w", weight_tiles(wq, 9, CIN // cfg.native_dim), at=0x100000)
    program = assemble_program(conv_program(cfg), cfg)
    macs = H * W * COUT * 9 * CIN

    t_sim, t_f32 = [], []
    for _ in range(args.repeats):
        mem = img.build(extra=0x200000)
        sim = FuncSim(cfg, mem)
        t0 = time.perf_counter()
        stats = sim.run(program)
        t_sim.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref = float_im2col_gemm(x, w)
        t_f32.append(time.perf_counter() - t0)

    # the run is checked, not just timed: bit-exact with the golden conv, close to float32
    expected = bfp.quantize(golden.conv2d(xq, wq, golden.ConvGeom(H, W, 3, 3, pads=(1, 1, 1, 1)), cfg), cfg)
    mant, exp = read_bfp(mem, 0x200000, expected.exp.size, cfg)
    assert np.array_equal(mant.reshape(expected.mant.shape), expected.mant), "funcsim != golden"
    err = np.abs(bfp.dequantize(expected).reshape(H * W, COUT) - ref).max() / np.abs(ref).max()

    best_sim, best_f32 = min(t_sim), min(t_f32)
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, numpy {np.__version__}, "
          f"python {platform.python_version()}")
    print(f"command: python tests/bench/bench_funcsim.py --preset {args.preset} --repeats {args.repeats}")
    print(f"3x3 conv {H}x{W}x{CIN} -> {COUT}, padding 1, {macs / 1e6:.1f} M MACs, preset {cfg.describe()}")
    print(f"  funcsim program (load, MVC, quantise, store): best {best_sim * 1e3:8.1f} ms   "
          f"{macs / best_sim / 1e9:6.2f} G MAC/s")
    print(f"  float32 numpy im2col + GEMM               : best {best_f32 * 1e3:8.1f} ms   "
          f"{macs / best_f32 / 1e9:6.2f} G MAC/s")
    print(f"  ratio funcsim / float32                   : {best_sim / best_f32:6.2f}x   (goal: at most 3x)")
    print(f"  bit-exact with golden conv: yes; max |BFP - float32| / max|float32| = {err:.2e}")
    print(f"  modelled: {stats.cycles} cycles, {stats.instructions} instructions, "
          f"MVU utilisation {100 * stats.macs / (stats.cycles * cfg.peak_macs_per_cycle):.1f} %")


if __name__ == "__main__":
    main()
