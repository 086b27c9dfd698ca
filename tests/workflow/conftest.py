"""Fixtures of the workflow tests: a reduced ResNet-50 SavedModel taking JPEG strings, built once
per session in its own TF1 graph (no global TensorFlow state is changed), and JPEG bytes."""

from __future__ import annotations

import io
import os

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
