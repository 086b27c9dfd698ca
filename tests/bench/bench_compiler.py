"""Compiler benchmark: full-size seed models on the a10 preset.

For each model: compile time, instruction count, modelled cycles, MVU utilisation and roofline
efficiency; each unit's modelled busy cycles, and what bounds the layers (each unit's busy cycles
attributed to the layer of its instructions: the busiest unit per layer, summed, against the MVU's
and the total, and the layers bound by another unit than the MVU); the functional simulator's time
per inference next to onnxruntime FP32 in the same run; bit-exactness against the per-layer golden
reference and the error against FP32.

    python tests/bench/bench_compiler.py [--preset a10] [--models resnet50,vgg16,...] [--repeats 3]
                                         [--precision fast|balanced|exact]

``--precision fast`` gives the fastest program (single-pass msfp16): the schedule the roofline
goal is about; the default is the compiler's default policy.

``--what-if``: what stops the roofline goal. Each model is compiled again, modelled cycles only, on
engines that differ from the preset in one capacity (VRF, MRF, external bandwidth; none of them
buildable on the preset's device) and in all at once: how far each capacity, and the schedule's
structure beyond them, keep the network from its bound.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import dataclasses
import os
import platform
import tempfile
import time

import numpy as np
import onnxruntime as ort

from accelml.compiler import compile_model, models
from accelml.hdl.config import preset
from accelml.runtime import load, save_package
from accelml.sim.funcsim import FuncSim

ALL = ["resnet50", "resnet152", "vgg16", "densenet121", "ssd_vgg", "mobilenet_v2"]


def best(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def layer_busy(cm) -> list[tuple[str, dict[str, int]]]:
    """Modelled busy cycles per unit of each engine layer (timing-only funcsim runs of the engine
    segments): each unit instruction's busy cycles go to the layer its instruction belongs to."""
    out = []
    for seg in cm.segments:
        if seg.compiled is None:
            continue
        layers = seg.compiled.layers
        firsts = [li.first_insn for li in layers]
        busy = [collections.Counter() for _ in layers]
        sim = FuncSim(cm.cfg, seg.compiled.mem_bytes, numerics=False)
        model, dispatch = sim.model, sim.model.dispatch

        def counted(unit, ranges, *, _sim=sim, _model=model, _dispatch=dispatch, _busy=busy, _firsts=firsts,
                    **kw):
            before = _model.busy[unit]
            done = _dispatch(unit, ranges, **kw)
            _busy[bisect.bisect_right(_firsts, _sim._pc) - 1][unit] += _model.busy[unit] - before
            return done

        model.dispatch = counted
        sim.run(seg.compiled.program)
        out += [(li.name, dict(b)) for li, b in zip(layers, busy, strict=True)]
    return out


def bottlenecks(cm, per_layer) -> str:
    """What keeps the network above its bound: the busiest unit of each layer, summed, against the
    MVU's busy cycles and the total, and the same with the units that share a resource counted as
    one; and the layers whose busiest unit is not the MVU."""
    s = cm.summary()
    total = sum(max(b.values(), default=0) for _, b in per_layer)
    mvu = sum(b.get("mvu", 0) for _, b in per_layer)
    shared = sum(max(b.get("mvu", 0), b.get("dma_load", 0) + b.get("dma_store", 0), b.get("mfu", 0) + b.get("pool", 0))
                 for _, b in per_layer)
    lines = [f"per-layer busiest unit, summed: {total} cycles (MVU busy {mvu}; modelled {s['cycles']}, "
             f"bound {s['roofline_bound_cycles']:.0f}): {s['cycles'] - total} cycles of in-order issue beyond it",
             f"per-layer busiest resource, the two DMAs as the memory port they share and the MFU with the pool on "
             f"its lanes: {shared} cycles summed (roofline {100 * s['roofline_bound_cycles'] / shared:.1f} % if "
             f"every layer took only that)"]
    other = sorted(((max(b.values()) - b.get("mvu", 0), name, b) for name, b in per_layer
                    if b and max(b, key=b.get) != "mvu"), reverse=True)
    for lost, name, b in other[:8]:
        lines.append(f"  {name}: bound by {max(b, key=b.get)} ({lost} cycles above its MVU busy): "
                     + ", ".join(f"{u} {c}" for u, c in sorted(b.items())))
    return "\n".join(lines)


WHAT_IF = [("VRF x2", dict(vrf_vectors=2)), ("VRF x4", dict(vrf_vectors=4)), ("MRF x2", dict(mrf_tiles=2)),
           ("bandwidth x2", dict(mem_bandwidth_gbps=2)),
           ("VRF x4, MRF x2, bandwidth x2", dict(vrf_vectors=4, mrf_tiles=2, mem_bandwidth_gbps=2))]


def what_if(model, name: str, preset_name: str, precision: str | None, built: dict) -> str:
    """Modelled cycles and roofline efficiency of ``model`` on the preset (``built``: its compile's
    summary) and on the preset with larger capacities."""
    base = preset(preset_name)
    lines = [f"{name}: what-if (modelled; engines that differ from {preset_name} in the named capacities only)"]
    for label, scale in [("as built", None), *WHAT_IF]:
        if scale is None:
            s = built
        else:
            cfg = dataclasses.replace(base, name=f"{preset_name}-what-if",
                                      **{k: type(getattr(base, k))(getattr(base, k) * f) for k, f in scale.items()})
            s = compile_model(model, config=cfg, name=name, precision=precision).summary()
        lines.append(f"  {label:30} {s['cycles']:10,} cycles, roofline {100 * s['roofline_efficiency']:5.1f} % "
                     f"(bound {s['roofline_bound_cycles']:,.0f})")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="a10")
    ap.add_argument("--models", default=",".join(ALL))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--precision", default=None, help="precision policy (default: the compiler's, balanced)")
    ap.add_argument("--plot-dir", default=None, help="write each model's utilisation/roofline plot here")
    ap.add_argument("--what-if", action="store_true", help="also time each model on larger capacities (module doc)")
    args = ap.parse_args()
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}, "
          f"onnxruntime {ort.__version__}")
    print(f"command: python tests/bench/bench_compiler.py --preset {args.preset} --models {args.models} "
          f"--repeats {args.repeats}" + (f" --precision {args.precision}" if args.precision else "")
          + (" --what-if" if args.what_if else ""))
    print("weights: deterministic synthetic (realistic scale); no pretrained weights ship for these models\n")
    rows = []
    for name in args.models.split(","):
        model = models.build(name, "full")
        t0 = time.perf_counter()
        cm = compile_model(model, config=args.preset, name=name, precision=args.precision)
        compile_s = time.perf_counter() - t0
        s = cm.summary()
        with tempfile.TemporaryDirectory() as tmp:
            rt = load(save_package(cm, os.path.join(tmp, f"{name}.accel")))
            rng = np.random.default_rng(0)
            feeds = {i["name"]: rng.standard_normal(i["shape"]).astype(np.float32) for i in cm.inputs}
            sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            names = [o.name for o in sess.get_outputs()]
            t_sim, got = best(lambda rt=rt, feeds=feeds: rt.run(feeds), args.repeats)
            t_ort, ref = best(lambda sess=sess, feeds=feeds, names=names: dict(zip(names, sess.run(None, feeds),
                                                                                   strict=True)),
                              args.repeats)
        gold = cm.run_golden(feeds)
        exact = all(np.array_equal(got[k], gold[k]) for k in got)
        err = max(np.abs(got[k] - ref[k]).max() / np.abs(ref[k]).max() for k in got)
        top1 = all(np.argmax(got[k]) == np.argmax(ref[k]) for k in got)
        rows.append((name, compile_s, s, t_sim, t_ort, exact, err, top1))
        if args.plot_dir:
            os.makedirs(args.plot_dir, exist_ok=True)
            cm.plot(os.path.join(args.plot_dir, f"{name}-{args.preset}.png"))
        print(f"{name}: {cm.report().splitlines()[-1]}", flush=True)
        per_layer = layer_busy(cm)
        busy = collections.Counter()
        for _, b in per_layer:
            busy.update(b)
        print(f"{name}: modelled busy cycles per unit (% of {s['cycles']}): "
              + ", ".join(f"{u} {c} ({100 * c / s['cycles']:.1f} %)" for u, c in sorted(busy.items())), flush=True)
        print(bottlenecks(cm, per_layer), flush=True)
        if args.what_if:
            print(what_if(model, name, args.preset, args.precision, s), flush=True)
    print()
    hdr = (f"{'model':14} {'GMAC':>6} {'compile s':>9} {'insns':>7} {'cycles':>10} {'latency us':>10} "
           f"{'MVU util':>8} {'roofline':>8} {'funcsim s':>9} {'ORT s':>7} {'ratio':>6} {'bit-exact':>9} "
           f"{'rel err':>8} {'top1=':>5}")
    print(hdr)
    for name, cs, s, ts, to, exact, err, top1 in rows:
        print(f"{name:14} {s['macs'] / 1e9:6.2f} {cs:9.2f} {s['instructions']:7d} {s['cycles']:10d} "
              f"{s['latency_us']:10.0f} {100 * s['utilisation']:7.1f}% {100 * s['roofline_efficiency']:7.1f}% "
              f"{ts:9.2f} {to:7.3f} {ts / to:5.1f}x {'yes' if exact else 'NO':>9} {err:8.2e} "
              f"{'yes' if top1 else 'no':>5}")
    print("\ngoals (resnet50, a10): compile <= 5 s, roofline efficiency >= 90 %, MVU utilisation >= 80 %, "
          "funcsim <= 3x onnxruntime")


if __name__ == "__main__":
    main()
