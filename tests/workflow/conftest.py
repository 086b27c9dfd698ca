"""Fixtures of the workflow tests: a reduced ResNet-50 SavedModel taking JPEG strings, built once
per session in its own TF1 graph (no global TensorFlow state is changed), and JPEG bytes."""

from __future__ import annotations

import io
import os
import sys
import textwrap

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

INPUT_SIZE = 64


def build_saved_model(path, cls_name: str = "QuantizedResnet50", size: int = INPUT_SIZE):
    """preprocess_array -> featurizer -> default classifier, saved with simple_save; returns
    (input tensor name, output tensor name)."""
    import tensorflow.compat.v1 as tf

    import accelml.accel.models as models
    import accelml.accel.models.utils as utils

    with tf.Graph().as_default():
        in_images = tf.placeholder(tf.string)
        image_tensors = utils.preprocess_array(in_images, size, size)
        model_graph = getattr(models, cls_name)(str(path) + ".weights", is_frozen=True, size="reduced")
        features = model_graph.import_graph_def(image_tensors)
        out = model_graph.get_default_classifier(features)
        with tf.Session() as sess:
            model_graph.restore_weights(sess)
            tf.saved_model.simple_save(sess, str(path), inputs={"images": in_images},
                                       outputs={"output_alias": out})
        return in_images.name, out.name


@pytest.fixture(scope="session")
def saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "resnet50"
    inp, out = build_saved_model(path)
    return path, inp, out


def jpeg_bytes(seed: int = 0, shape=(80, 96, 3)) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = (rng.random(shape) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    from accelml.core import Workspace

    monkeypatch.chdir(tmp_path)
    ws = Workspace.create("ws", subscription_id="sub", resource_group="rg", location="here", path=tmp_path / "ws")
    ws.write_config(tmp_path)
    return ws


@pytest.fixture
def make_jpeg():
    return jpeg_bytes


# A process that keeps the server's start-up contract (arguments, the ready line, the gRPC health
# service, a child in its process group) and nothing else: it tests the local replica runner and
# the service lifecycle without the real server. A package path ending in "broken" makes it exit.
STAND_IN = textwrap.dedent('''
    import argparse, signal, subprocess, sys, time
    from concurrent import futures
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    p = argparse.ArgumentParser()
    p.add_argument("cmd"); p.add_argument("package"); p.add_argument("--name"); p.add_argument("--host")
    p.add_argument("--grpc-port", type=int); p.add_argument("--rest-port", type=int)
    p.add_argument("--device"); p.add_argument("--auth-keys")
    a = p.parse_args()
    if a.package.endswith("broken"):
        print("cannot load package", flush=True); sys.exit(12)
    server = grpc.server(futures.ThreadPoolExecutor(2))
    h = health.HealthServicer(); h.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(h, server)
    port = server.add_insecure_port(f"{a.host}:{a.grpc_port}")
    server.start()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # same process group
    print(f"child {child.pid}", flush=True)
    from accelml.runtime.serve.ready import ready_line
    print(ready_line(a.name, 1, a.host, port, port + 1, False), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(1)
''')


@pytest.fixture
def stand_in(tmp_path):
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    return [sys.executable, str(script)]
