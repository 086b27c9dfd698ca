"""Workflow benchmark: the documented graph (preprocess_array -> full QuantizedResnet50 ->
default classifier, JPEG in) converted for several engine presets, side by side in one run:
conversion time (freeze + tf2onnx + compile) and the median latency of one image through the
package on the functional simulator (host preprocessing included), which is what a local service
spends per request on its backend.

    python tests/bench/bench_workflow.py [--presets a10 s10 tiny] [--runs 5] [--size full]
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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", nargs="+", default=["a10", "s10", "tiny"])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size", default="full", choices=["full", "reduced"])
    args = ap.parse_args()
    from PIL import Image

    from accelml.accel.accel_onnx_converter import convert_saved_model
    from accelml.runtime import load, save_package

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray((rng.random((240, 320, 3)) * 255).astype(np.uint8)).save(buf, "JPEG")
    jpeg = np.array([buf.getvalue()], dtype=object)
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = build(Path(tmp) / "sm", args.size)
        rows = []
        for preset in args.presets:
            t0 = time.perf_counter()
            cm = convert_saved_model(Path(tmp) / "sm", inp, out, preset)
            convert_s = time.perf_counter() - t0
            pkg = load(save_package(cm, Path(tmp) / f"{preset}.accel"))
            pre = pkg.host_preprocess
            feed = {pre["input"]: jpeg} if pre else {}
            try:
                pkg.run(feed)
            except Exception:  # before the runtime applies host preprocessing: feed the featurizer input
                from accelml.compiler.tf_import import HostPreprocess

                hp = HostPreprocess(**{k: tuple(v) if isinstance(v, list) else v for k, v in pre.items()})
                feed = {hp.output: hp(jpeg[0])}
                pkg.run(feed)
            times = []
            for _ in range(args.runs):
                t = time.perf_counter()
                pkg.run(feed)
                times.append(time.perf_counter() - t)
            rows.append((preset, convert_s, statistics.median(times), cm.summary()["latency_us"]))
    base = rows[0][2]
    print(f"ResNet-50 ({args.size}) from the documented TF graph, {args.runs} runs per preset")
    print(f"{'preset':8} {'convert s':>10} {'funcsim ms/image':>17} {'vs ' + rows[0][0]:>8} {'modelled engine us':>19}")
    for preset, conv, med, lat in rows:
        print(f"{preset:8} {conv:10.1f} {med * 1e3:17.1f} {med / base:7.2f}x {lat:19.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
