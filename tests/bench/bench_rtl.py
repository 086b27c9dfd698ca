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

``--resnet50 PRESET`` instead: compile ResNet-50 (``compiler.models``, synthetic weights; ``--size``
full or reduced; ``--precision``, default balanced; ``--threads``, Verilator threads of the
engine, default 1; ``--repeats``, RTL runs, default 1; ``--set FIELD=VALUE``, the preset with an
EngineConfig field changed, repeatable) for the preset, print what the RTL run needs
(instructions per engine segment, image and memory bytes, the instruction-memory depth and
memory-model size of its build), then run one image on onnxruntime (float32), on the functional
simulator and on the RTL through the same device code (``runtime.device``: ``accelml run --device
rtl``), assert the two engine results equal bit for bit and print the wall times side by side,
their ratios, RTL cycles and MACs per wall second, the Verilator build time and the engine's
emission (a first run; later runs read the Verilog from the user cache). With ``--repeats K`` the
RTL runs K times, each checked bit for bit; every run's time and the median are printed, and the
ratios are of the fastest run, as onnxruntime's figure is its fastest of 20 (on this shared machine
one RTL run of ResNet-50 took 38 to 81 s). An engine stop or a
network the preset cannot hold ends the run with the typed error's one line.

    python tests/bench/bench_rtl.py --resnet50 ecp5 [--size reduced] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from accelml.hdl.config import EngineConfig, preset
from accelml.hdl.errors import ConfigError
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


def _timed(fn, repeat: int = 1):
    """(result of the last call, seconds of the fastest of ``repeat`` calls)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def _configured(name: str, overrides: list[str] | None = None):
    """Preset ``name`` with ``FIELD=VALUE`` overrides (a JSON value, else the string), named after them."""
    cfg = preset(name)
    if not overrides:
        return cfg
    data = cfg.to_dict()
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE")
        try:
            data[key] = json.loads(value)
        except json.JSONDecodeError:
            data[key] = value
    data["name"] = "-".join([name, *(o.replace("=", "") for o in overrides)])
    try:
        return EngineConfig.from_dict(data)
    except ConfigError as e:
        raise SystemExit(f"--set: {e}") from None


def resnet50(name: str, size: str, precision: str = "balanced", threads: int = 1, repeats: int = 1,
             overrides: list[str] | None = None) -> None:
    """The ``--resnet50`` mode (see the module doc)."""
    import onnxruntime as ort

    from accelml.compiler import compile_model, models
    from accelml.hdl.errors import AccelmlError
    from accelml.runtime import save_package
    from accelml.runtime.device import RtlDevice
    from accelml.runtime.engine import EngineSegment
    from accelml.runtime.package import load
    from accelml.sim.rtl_engine import imem_depth_for, model_bytes_for

    cfg = _configured(name, overrides)
    model = models.build("resnet50", size=size)
    x = np.random.default_rng(0).standard_normal(
        [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]).astype(np.float32)
    try:
        cm, compile_s = _timed(lambda: compile_model(model, config=cfg, name="resnet50", precision=precision))
    except AccelmlError as e:
        raise SystemExit(f"resnet50 ({size}) on {name}: does not compile: {type(e).__name__}: {e}") from None
    s = cm.summary()
    print(f"resnet50 ({size}, {precision}) on {cfg.describe()}: compiled in {compile_s:.1f} s; {s['macs']:,} MACs, "
          f"{s['instructions']:,} instructions, modelled {s['cycles']:,} cycles")
    with tempfile.TemporaryDirectory() as tmp:
        pkg = Path(tmp) / "resnet50.accel"
        save_package(cm, pkg)
        fs_model = load(pkg)
        for seg in fs_model.segments:
            if isinstance(seg, EngineSegment):
                size_b = max(seg.mem_bytes, len(seg.image))
                print(f"  engine segment: {len(seg.program.instructions):,} instructions (imem build "
                      f"{imem_depth_for(len(seg.program.instructions))}), constant image {len(seg.image):,} B, "
                      f"memory {size_b:,} B (memory model {model_bytes_for(cfg, size_b) >> 20} MiB)")
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        in_name = model.graph.input[0].name
        # the fastest of 20 runs: on this shared machine one run of 0.04 s took up to 0.075 s
        _, ort_s = _timed(lambda: sess.run(None, {in_name: x}), repeat=20)
        fs_model.run({in_name: x})  # the first run also runs the cycle model
        ref, fs_s = _timed(lambda: fs_model.run({in_name: x}))
        print(f"  onnxruntime fp32 {ort_s:.3f} s; funcsim {fs_s:.3f} s (a repeat run)", flush=True)
        device = RtlDevice(cfg, progress=sys.stderr, threads=threads)
        rtl_model = load(pkg, device=device)
        runs, same, rtl_s = [], True, 0.0  # each run's stats; bit-exact every time; the first's whole step
        for _ in range(repeats):
            try:
                t0 = time.perf_counter()
                got = rtl_model.run({in_name: x})
                total = time.perf_counter() - t0
            except AccelmlError as e:
                raise SystemExit(f"resnet50 ({size}) on {name}: Verilator build {device.build_seconds:.0f} s; the "
                                 f"RTL run stopped: {type(e).__name__}: {e}") from None
            runs.append(device.last_stats)
            if len(runs) == 1:
                rtl_s = total - runs[0].build_seconds
            same = same and all(got[k].tobytes() == v.tobytes() for k, v in ref.items())
    stats = runs[0]
    # the Verilated run: program and image in, free run, image out
    sims = sorted(st.run_seconds for st in runs)
    sim_s, median = sims[0], float(np.median(sims))
    print(f"  RTL {rtl_s:.1f} s with the engine's elaboration and emission (none when the user cache holds "
          f"its Verilog) and the cycle model's pre-run; Verilator build {stats.build_seconds:.0f} s")
    on = f"{threads} thread{'s' if threads > 1 else ''}"
    if repeats > 1:
        print(f"  RTL simulation, {repeats} runs on {on}: " + ", ".join(f"{st.run_seconds:.1f}" for st in runs)
              + f" s; median {median:.1f} s = {median / ort_s:,.0f}x onnxruntime")
    print(f"  RTL simulation {sim_s:.1f} s on {on}{' (the fastest run)' if repeats > 1 else ''}: RTL / funcsim = "
          f"{sim_s / fs_s:,.0f}x, RTL / onnxruntime = {sim_s / ort_s:,.0f}x (whole RTL step of the first run: "
          f"{rtl_s / ort_s:,.0f}x)")
    print(f"  RTL {stats.cycles:,} cycles (cycle model {stats.modelled_cycles:,}) = "
          f"{stats.cycles / sim_s:,.0f} cycles/s, {stats.macs / sim_s:,.0f} MAC/s; "
          f"bit-exact: {same}{' (every run)' if repeats > 1 else ''}")
    if not same:
        raise SystemExit("resnet50: RTL and funcsim outputs differ")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "ecp5"])
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--optimize", default="-O2", help="C++ optimisation of the Verilated model")
    ap.add_argument("--resnet50", metavar="PRESET", default=None,
                    help="instead: ResNet-50 on PRESET, RTL next to funcsim and onnxruntime")
    ap.add_argument("--size", choices=["full", "reduced"], default="full", help="--resnet50: model size")
    ap.add_argument("--precision", default="balanced", help="--resnet50: precision policy (fast, balanced, exact)")
    ap.add_argument("--threads", type=int, default=1, help="--resnet50: Verilator threads of the engine")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="--resnet50: the preset with an EngineConfig field changed (a JSON value or a "
                         "string), e.g. --set file_ports=shared --set file_parts=8")
    ap.add_argument("--repeats", type=int, default=1,
                    help="--resnet50: RTL runs of the image (each checked); the fastest is compared, like "
                         "onnxruntime's fastest of 20")
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    if args.resnet50:
        if args.repeats < 1:
            ap.error(f"--repeats must be at least 1, got {args.repeats}")
        resnet50(args.resnet50, args.size, args.precision, args.threads, args.repeats, args.set)
        return
    for name in args.presets:
        cfg = preset(name)
        with tempfile.TemporaryDirectory() as cache:
            t0 = time.perf_counter()  # the engine is elaborated and emitted as the simulator is made
            sim = EngineSim(cfg, optimize=args.optimize, cache_dir=Path(cache))
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
