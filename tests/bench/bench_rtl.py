"""Engine RTL: Verilator build time and simulation speed, next to the functional simulator.

For each preset: the seconds to emit the Verilog and to build it (in a fresh cache directory, so
the build is real), then one long DMA program (``--iterations`` passes of a nested loop that
loads weight tiles, BFP and binary32 vectors and stores them back, strided and unaligned, then
dequantises, takes a maximum and quantises 16 vectors) run on
the Verilated engine and on the functional simulator, with the same result checked byte for byte.
Reported: simulated cycles per wall second of the RTL run (the run includes the simulator's
start-up and the image's load and dump, so long runs measure the engine) and the ratio of the two
simulators' wall times, measured side by side in one run.

    python tests/bench/bench_rtl.py [--presets tiny ecp5] [--iterations 2000] [--optimize=-O2]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from accelml.hdl.config import preset
from accelml.hdl.program import assemble
from accelml.sim.rtl_engine import EngineSim, funcsim_outcome


def long_program(cfg, iterations: int) -> str:
    vb, tb, fb = cfg.bfp_vector_bytes, cfg.tile_bytes, cfg.fp_vector_bytes
    return f"""
seti r1, 0
seti r2, {16 * tb + 3}
seti r3, {16 * tb + 3 + 64 * vb + 5}
loop r0, {iterations}, 14
cfg  mem_stride, r0, 0
ld   mrf, r0, r1, 1, 16
ld   vrf, r0, r2, 4, 16
cfg  mem_stride, r0, {4 * fb + 1}
ld   fvrf, r0, r3, 2, 4
seti r4, {1 << 16}
cfg  mem_stride, r0, 0
st   mrf, r0, r4, 2, 8
seti r5, {(1 << 16) + 16 * tb + 7}
cfg  mem_stride, r0, {16 * vb + 2}
st   vrf, r0, r5, 4, 16
deq  r0, r0, 16
vop  max, r0, r0, r0, 16, 0
qnt  r0, r0, 16
halt
"""


def image(cfg) -> bytes:
    a = np.random.default_rng(0).integers(0, 256, 1 << 17, dtype=np.uint8)
    a[(a & 0x7F) == 0x7F] ^= 1  # every byte decodes in every encoding
    return a.tobytes()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "ecp5"])
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--optimize", default="-O2", help="C++ optimisation of the Verilated model")
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    for name in args.presets:
        cfg = preset(name)
        with tempfile.TemporaryDirectory() as cache:
            sim = EngineSim(cfg, optimize=args.optimize, cache_dir=Path(cache))
            t0 = time.perf_counter()
            sim.verilog()
            emit = time.perf_counter() - t0
            build = sim.build()
            program = assemble(long_program(cfg, args.iterations))
            img = image(cfg)
            t0 = time.perf_counter()
            got = sim.run(program, img)
            rtl_wall = time.perf_counter() - t0
            t0 = time.perf_counter()
            ref = funcsim_outcome(cfg, program, img)
            fs_wall = time.perf_counter() - t0
        if got.error.name != "NONE" or ref.error.name != "NONE":
            raise SystemExit(f"{name}: the program stopped: RTL {got.error.name} at {got.error_pc}, "
                             f"funcsim {ref.message}")
        same = got.error == ref.error and bool((got.memory == ref.memory).all())
        print(f"{name}: emit {emit:.1f} s, Verilator build ({args.optimize}) {build:.1f} s; "
              f"{got.cycles} cycles, {got.steps} instructions in {rtl_wall:.2f} s = "
              f"{got.cycles / rtl_wall:,.0f} cycles/s; funcsim {fs_wall:.3f} s "
              f"(RTL / funcsim = {rtl_wall / fs_wall:.0f}x); bit-exact: {same}; busy {got.busy}")


if __name__ == "__main__":
    main()
