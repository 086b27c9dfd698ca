"""Packages the serving tests share, compiled once per session: a small CNN from ``onnx.helper``
(float32 input (1, 3, 32, 32), 10 logits, ~1 ms per run on the ``tiny`` preset) and a package
compiled from a TensorFlow graph that takes JPEG bytes (host preprocessing in its manifest)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from serve_util import small_cnn_onnx

from accelml.compiler import compile_model
from accelml.runtime import save_package


@pytest.fixture(scope="session")
def small_pkg(tmp_path_factory):
    path = tmp_path_factory.mktemp("serve") / "small.accel"
    save_package(compile_model(small_cnn_onnx(), config="tiny", name="small"), path)
    return path


@pytest.fixture(scope="session")
def jpeg_pkg(tmp_path_factory):
    """A SavedModel taking one JPEG string ("jpeg"): decode, resize 32x32, BGR, (x - mean) / std, a
    small Keras CNN -> "scores"; compiled for ``tiny``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf = pytest.importorskip("tensorflow", reason="the JPEG-input package needs the 'tf' extra")
    pytest.importorskip("tf2onnx", reason="the JPEG-input package needs the 'tf' extra")
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(1)
    net = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
                            keras.layers.MaxPooling2D(2), keras.layers.Conv2D(16, 3, activation="relu"),
                            keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(5)])
    mean = np.array([123.68, 116.78, 103.94], np.float32)

    class JpegModel(tf.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        @tf.function(input_signature=[tf.TensorSpec([], tf.string, name="jpeg")])
        def serve(self, jpeg):
            img = tf.image.resize(tf.io.decode_jpeg(jpeg, channels=3), [32, 32])[..., ::-1]
            return {"scores": self.net(tf.expand_dims((img - mean) / 58.0, 0), training=False)}

    mod = JpegModel()
    saved = tmp_path_factory.mktemp("tf") / "jpeg_model"
    tf.saved_model.save(mod, str(saved), signatures={"serving_default": mod.serve})
    path = tmp_path_factory.mktemp("serve") / "jpeg.accel"
    save_package(compile_model(saved, config="tiny", name="jpeg_model"), path)
    return path
