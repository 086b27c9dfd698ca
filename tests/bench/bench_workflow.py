"""Workflow benchmark: the documented graph (preprocess_array -> full QuantizedResnet50 ->
default classifier, JPEG in) converted for several engine presets, side by side in one run:
conversion time (freeze + tf2onnx + compile) and the median latency of one image through the
package on the functional simulator (host preprocessing included), which is what a local service
spends per request on its backend.

    python tests/bench/bench_workflow.py [--presets a10 s10 tiny] [--sizes reduced full] [--runs 5]

A preset whose on-chip files cannot hold the network is reported as not fitting.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def build(path: Path, size: str) -> tuple[str, str]:
    import tensorflow.compat.v1 as tf

    import accelml.accel.models.utils as utils
    from accelml.accel.models import QuantizedResnet50

    with tf.Graph().as_default():
        in_images = tf.placeholder(tf.string)
        m = QuantizedResnet50(None, size=size)
        out = m.get_default_classifier(m.import_graph_def(utils.preprocess_array(in_images)))
        with tf.Session() as sess:
            m.restore_weights(sess)
            tf.saved_model.simple_save(sess, str(path), inputs={"images": in_images}, outputs={"output_alias": out})
        return in_images.name, out.name


def measure(sm: Path, inp: str, out: str, preset: str, runs: int, jpeg, tmp: Path):
    """(conversion seconds, median funcsim seconds per image, modelled engine us) or None when the
    network does not fit the preset."""
    from accelml.accel.accel_onnx_converter import convert_saved_model
    from accelml.compiler.tf_import import HostPreprocess
    from accelml.hdl.errors import CapacityError
    from accelml.runtime import load, save_package

    t0 = time.perf_counter()
    try:
        cm = convert_saved_model(sm, inp, out, preset)
    except CapacityError as e:
        print(f"  {preset}: does not fit ({e})")
        return None
    convert_s = time.perf_counter() - t0
    pkg = load(save_package(cm, tmp / f"{sm.name}-{preset}.accel"))
    pre = pkg.host_preprocess
    feed = {pre["input"]: jpeg}
    try:
        pkg.run(feed)
    except Exception:  # a runtime without host preprocessing: feed the featurizer input
        hp = HostPreprocess(**{k: tuple(v) if isinstance(v, list) else v for k, v in pre.items()})
        feed = {hp.output: hp(jpeg[0])}
        pkg.run(feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        pkg.run(feed)
        times.append(time.perf_counter() - t)
    return convert_s, statistics.median(times), cm.summary()["latency_us"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", nargs="+", default=["a10", "s10", "tiny"])
    ap.add_argument("--sizes", nargs="+", default=["reduced", "full"], choices=["full", "reduced"])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    from PIL import Image

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray((rng.random((240, 320, 3)) * 255).astype(np.uint8)).save(buf, "JPEG")
    jpeg = np.array([buf.getvalue()], dtype=object)
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            sm = Path(tmp) / f"resnet50-{size}"
            inp, out = build(sm, size)
            print(f"ResNet-50 ({size}, 224 x 224) from the documented TF graph, median of {args.runs} runs")
            rows = [(p, measure(sm, inp, out, p, args.runs, jpeg, Path(tmp))) for p in args.presets]
            base = next((r[1] for _, r in rows if r is not None), None)
            print(f"  {'preset':8} {'convert s':>10} {'funcsim ms/image':>17} {'ratio':>7} {'modelled engine us':>19}")
            for preset, r in rows:
                if r is not None:
                    print(f"  {preset:8} {r[0]:10.1f} {r[1] * 1e3:17.1f} {r[1] / base:6.2f}x {r[2]:19.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
