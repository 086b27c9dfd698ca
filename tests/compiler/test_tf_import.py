"""TensorFlow frontend: SavedModel / tf.function / frozen GraphDef -> ONNX -> package, checked against
TensorFlow's own outputs, the host preprocessing split of graphs that take JPEG bytes, typed
errors, and ``accelml compile SAVEDMODEL``. Tiny Keras 3 models at 32x32 keep it fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow", reason="the TensorFlow frontend needs the 'tf' extra")
pytest.importorskip("tf2onnx", reason="the TensorFlow frontend needs the 'tf' extra")
keras = pytest.importorskip("keras")

from accelml.compiler import compile_model  # noqa: E402
from accelml.compiler.tf_import import (  # noqa: E402
    HostPreprocess,
    frozen_graph_to_onnx,
    function_to_onnx,
    saved_model_to_onnx,
)
from accelml.hdl.errors import ModelFormatError, ShapeError, UnsupportedOperatorError  # noqa: E402
from accelml.runtime import cli, load, save_package  # noqa: E402

# max |got - want| / max |want|. wide: 23-bit mantissas (measured ~1e-7); a10: msfp16, 7-bit
# mantissas in blocks of 16 (measured ~1 % on these models; the bound of the seed-model tests).
WIDE_TOL = 1e-3
A10_BOUND = 0.06
MEAN = np.array([123.68, 116.78, 103.94], np.float32)
STD = np.float32(58.0)


def rel_err(got, want) -> float:
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.abs(got - want).max() / np.abs(want).max())


def small_cnn(seed: int = 0, classes: int = 10):
    """conv -> batch norm -> relu -> max pool -> conv+relu -> global average pool -> dense."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(8, 3, padding="same"),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(classes),
    ])
    rng = np.random.default_rng(seed)
    bn = model.layers[1]
    bn.set_weights([rng.uniform(0.5, 1.5, 8).astype("f"), rng.normal(0, 0.3, 8).astype("f"),
                    rng.normal(0, 0.3, 8).astype("f"), rng.uniform(0.5, 1.5, 8).astype("f")])
    return model


class Featurizer(tf.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32, name="images")])
    def serve(self, images):
        return {"features": self.model(images, training=False)}


def caffe_preprocess(jpeg):
    """JPEG bytes -> RGB -> resize 32x32 -> BGR -> (x - mean) / std -> (1, 32, 32, 3)."""
    img = tf.io.decode_jpeg(jpeg, channels=3)
    img = tf.image.resize(img, [32, 32])
    img = img[..., ::-1]
    img = (img - MEAN) / STD
    return tf.expand_dims(img, 0)


class JpegModel(tf.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    @tf.function(input_signature=[tf.TensorSpec([], tf.string, name="jpeg")])
    def serve(self, jpeg):
        return {"scores": self.model(caffe_preprocess(jpeg), training=False)}


def picture(h: int = 45, w: int = 61) -> np.ndarray:
    """A smooth RGB test picture (JPEG round trips stay close)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([128 + 100 * np.sin(x / 7 + y / 11), 40 + 3 * x, 220 - 4 * y], -1)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def featurizer_dir(tmp_path_factory):
    mod = Featurizer(small_cnn())
    path = tmp_path_factory.mktemp("tf") / "featurizer"
    tf.saved_model.save(mod, str(path), signatures={"serving_default": mod.serve})
    x = np.random.default_rng(0).standard_normal((1, 32, 32, 3)).astype(np.float32)
    want = mod.serve(tf.constant(x))["features"].numpy()
    return path, x, want


@pytest.fixture(scope="module")
def jpeg_dir(tmp_path_factory):
    mod = JpegModel(small_cnn(seed=1, classes=5))
    path = tmp_path_factory.mktemp("tf") / "jpeg_model"
    tf.saved_model.save(mod, str(path), signatures={"serving_default": mod.serve})
    return path, mod


def run_package(cm, tmp_path, feeds):
    rt = load(save_package(cm, tmp_path / "m.accel"))
    return rt.run(feeds)


# -- SavedModel featurizer -----------------------------------------------------------------------

def test_saved_model_to_onnx_names_versions_and_values(featurizer_dir):
    path, x, want = featurizer_dir
    model = saved_model_to_onnx(path)
    onnx.checker.check_model(model)
    assert model.ir_version == 8
    assert {i.version for i in model.opset_import if i.domain in ("", "ai.onnx")} == {17}
    assert [i.name for i in model.graph.input] == ["images"]
    assert [o.name for o in model.graph.output] == ["features"]
    assert HostPreprocess.from_onnx(model) is None
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert rel_err(sess.run(["features"], {"images": x})[0], want) < 1e-5


def test_saved_model_compiles_and_matches_tf_on_wide(featurizer_dir, tmp_path):
    path, x, want = featurizer_dir
    cm = compile_model(path, config="wide")
    assert cm.inputs[0]["name"] == "images" and cm.inputs[0]["shape"] == [1, 32, 32, 3]  # NHWC kept
    assert cm.summary()["engine_segments"] == 1 and cm.summary()["host_segments"] == 0
    got = run_package(cm, tmp_path, {"images": x})["features"]
    assert rel_err(got, want) < WIDE_TOL


def test_saved_model_on_a10_within_bfp_bound(featurizer_dir, tmp_path):
    path, x, want = featurizer_dir
    got = run_package(compile_model(path, config="a10"), tmp_path, {"images": x})["features"]
    err = rel_err(got, want)
    assert 0 < err < A10_BOUND  # BFP rounding shows, within the bound


def test_function_and_frozen_graph_entry_points(featurizer_dir):
    path, x, want = featurizer_dir
    model = small_cnn()
    fn = tf.function(lambda pixels: model(pixels, training=False))
    spec = [tf.TensorSpec([1, 32, 32, 3], tf.float32, name="pixels")]
    converted = function_to_onnx(fn, spec)
    assert [i.name for i in converted.graph.input] == ["pixels"] and converted.ir_version == 8
    assert [o.name for o in converted.graph.output] == ["output_0"]
    sess = ort.InferenceSession(converted.SerializeToString(), providers=["CPUExecutionProvider"])
    assert rel_err(sess.run(None, {"pixels": x})[0], want) < 1e-5
    # a tf.function with its own input_signature needs none
    holder = Featurizer(model)  # a tf.function method holds its object weakly
    served = function_to_onnx(holder.serve)
    assert [i.name for i in served.graph.input] == ["images"] and [o.name for o in served.graph.output] == ["features"]

    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(fn.get_concrete_function(*spec))
    gd = frozen.graph.as_graph_def()
    model = frozen_graph_to_onnx(gd, [frozen.inputs[0].name], [frozen.outputs[0].name])
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert rel_err(sess.run(None, {model.graph.input[0].name: x})[0], want) < 1e-5


# -- host preprocessing split --------------------------------------------------------------------

def test_jpeg_graph_splits_preprocessing_from_featurizer(jpeg_dir, tmp_path):
    path, mod = jpeg_dir
    model = saved_model_to_onnx(path)
    pre = HostPreprocess.from_onnx(model)
    assert pre is not None
    assert [i.name for i in model.graph.input] == ["image"]
    assert all(n.op_type not in ("DecodeJpeg", "Resize", "Cast") for n in model.graph.node)
    assert (pre.input, pre.output, pre.decoder, pre.channels, pre.size) == ("jpeg", "image", "jpeg", 3, (32, 32))
    assert (pre.resize, pre.align_corners, pre.half_pixel_centers) == ("bilinear", False, True)
    assert pre.channel_names == "BGR"
    np.testing.assert_allclose(pre.mean, MEAN, rtol=1e-5)  # in the (BGR) order of the featurizer's channels
    np.testing.assert_allclose(pre.std, [STD] * 3, rtol=1e-5)
    assert pre.tf_ops[0] == "DecodeJpeg" and "ResizeBilinear" in pre.tf_ops
    assert HostPreprocess.from_json(pre.to_json()) == pre

    # the description in numpy == TensorFlow's preprocessing, on TensorFlow's decoded pixels
    jpeg = tf.io.encode_jpeg(picture(), quality=95).numpy()
    pixels = tf.io.decode_jpeg(jpeg, channels=3).numpy()
    want_pre = caffe_preprocess(tf.constant(jpeg)).numpy()
    assert rel_err(pre.apply_pixels(pixels), want_pre) < 1e-5
    # Pillow decodes with the accurate IDCT, TensorFlow's default is the fast one: a few levels apart
    assert np.abs(pre(jpeg) - want_pre).max() < 8 / STD

    # the featurizer alone compiles; package(host preprocessing) == the whole TensorFlow graph
    cm = compile_model(path, config="wide")
    assert [i["name"] for i in cm.inputs] == ["image"]
    want = mod.serve(tf.constant(jpeg))["scores"].numpy()
    got = run_package(cm, tmp_path, {"image": pre.apply_pixels(pixels)})["scores"]
    assert rel_err(got, want) < WIDE_TOL
    # the package carries the host part, for the runtime to apply to image bytes
    from accelml.runtime import load, save_package

    rt = load(save_package(cm, tmp_path / "jpeg.accel"))
    assert HostPreprocess.from_json(json.dumps(rt.host_preprocess)) == pre


def _preprocess_fn(body, dtype=tf.string, shape=()):
    model = small_cnn(seed=2, classes=3)

    @tf.function
    def fn(data):
        return model(body(data), training=False)

    return fn, [tf.TensorSpec(shape, dtype, name="data")]


VARIANTS = {
    # decode_image to float in [0, 1], nearest-neighbour resize, x * 2 - 1, batch of one string
    "image-float-nearest": (lambda b: tf.image.resize(
        tf.io.decode_image(b[0], channels=3, dtype=tf.float32, expand_animations=False)[None], [32, 32],
        method="nearest") * 2.0 - 1.0, [1],
        dict(decoder="image", resize="nearest", channel_order=(0, 1, 2), scale=(2 / 255,) * 3, offset=(-1.0,) * 3)),
    # accurate IDCT, legacy align_corners resize after the cast, per-channel Keras-style rescaling
    "jpeg-align-corners": (lambda b: tf.compat.v1.image.resize_bilinear(
        tf.cast(tf.expand_dims(tf.io.decode_jpeg(b, channels=3, dct_method="INTEGER_ACCURATE"), 0), tf.float32),
        [32, 32], align_corners=True) * tf.constant([1 / 64, 1 / 32, 1 / 16]) + 0.5, [],
        dict(decoder="jpeg", resize="bilinear", align_corners=True, half_pixel_centers=False,
             scale=(1 / 64, 1 / 32, 1 / 16), offset=(0.5,) * 3)),
    # no resize: a 32x32 image is required; channel reversal with tf.reverse
    "png-no-resize": (lambda b: tf.ensure_shape(
        tf.reverse(tf.cast(tf.io.decode_png(b, channels=3), tf.float32) / 255.0, [-1]), [32, 32, 3])[None], [],
        dict(decoder="png", resize=None, channel_order=(2, 1, 0), scale=(1 / 255,) * 3)),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_preprocessing_variants_are_described_exactly(variant):
    body, shape, expect = VARIANTS[variant]
    fn, spec = _preprocess_fn(body, shape=shape)
    model = function_to_onnx(fn, spec)
    pre = HostPreprocess.from_onnx(model)
    assert pre is not None and pre.input == "data" and pre.size == (32, 32)
    for k, v in expect.items():
        got = getattr(pre, k)
        if isinstance(v, tuple) and v and isinstance(v[0], float):
            np.testing.assert_allclose(got, v, rtol=1e-6, err_msg=k)
        else:
            assert got == v, k
    img = picture(32, 32) if pre.resize is None else picture()
    data = (tf.io.encode_png(img) if pre.decoder != "jpeg" else tf.io.encode_jpeg(img, quality=95)).numpy()
    feed = data if not shape else np.array([data])
    want = tf.function(body)(tf.constant(feed)).numpy()
    # the host path end to end: Pillow decodes PNG losslessly and JPEG like INTEGER_ACCURATE
    assert rel_err(pre(data), want) < 1e-5


def test_preprocessing_after_the_featurizer_input_stays_in_the_graph(tmp_path):
    """per_image_standardization cannot be described: the split falls before it (after the resize,
    the last fixed-size float image) and the featurizer graph keeps it (it runs on the host)."""
    def body(b):
        return tf.image.per_image_standardization(tf.image.resize(tf.io.decode_jpeg(b, channels=3), [32, 32]))[None]

    fn, spec = _preprocess_fn(body)
    model = function_to_onnx(fn, spec)
    pre = HostPreprocess.from_onnx(model)
    assert pre.tf_ops[-1] == "ResizeBilinear" and pre.scale == (1.0,) * 3 and pre.offset == (0.0,) * 3
    assert "ReduceMean" in {n.op_type for n in model.graph.node}
    cm = compile_model(model, config="wide")
    assert cm.summary()["host_segments"] >= 1
    jpeg = tf.io.encode_jpeg(picture(), quality=95).numpy()
    pixels = tf.io.decode_jpeg(jpeg, channels=3).numpy()
    got = run_package(cm, tmp_path, {"image": pre.apply_pixels(pixels)})
    assert rel_err(next(iter(got.values())), fn(tf.constant(jpeg)).numpy()) < WIDE_TOL


def _decode(b):
    return tf.io.decode_jpeg(b, channels=3)


@pytest.mark.parametrize("body, shape, op, text", [
    (lambda b: tf.image.resize(_decode(b)[None], [32, 32], antialias=True), [],
     "ScaleAndTranslate", "not a supported preprocessing op"),
    (lambda b: tf.image.resize(tf.image.central_crop(_decode(b), 0.875), [32, 32])[None], [],
     "Slice", "depends on the image"),
    (lambda b: tf.image.resize(_decode(tf.io.read_file(b)), [32, 32])[None], [],
     "ReadFile", "must come from a graph input"),
    (lambda b: tf.map_fn(lambda j: tf.image.resize(_decode(j), [32, 32]), b, fn_output_signature=tf.float32), [1],
     "StatelessWhile", "tf.map_fn"),
    (lambda b: tf.cast(_decode(b), tf.float32)[None], [], None, "fixed height and width"),
])
def test_undescribable_preprocessing_is_a_typed_error_naming_the_op(body, shape, op, text):
    fn, spec = _preprocess_fn(body, shape=shape)
    with pytest.raises((UnsupportedOperatorError, ShapeError)) as info:
        function_to_onnx(fn, spec)
    err = info.value
    assert text in str(err)
    if op is None:
        assert isinstance(err, ShapeError)
    else:
        assert isinstance(err, UnsupportedOperatorError) and err.nodes[0][1] == op and op in str(err)


def test_model_that_reuses_the_decoded_image_cannot_be_split():
    model = small_cnn(seed=2, classes=3)

    @tf.function
    def fn(data):
        img = _decode(data)
        y = model(tf.image.resize(img, [32, 32])[None], training=False)
        return y * tf.cast(tf.shape(img)[0], tf.float32)  # scores scaled by the image height

    with pytest.raises(UnsupportedOperatorError, match="also uses the image before") as info:
        function_to_onnx(fn, [tf.TensorSpec([], tf.string, name="data")])
    assert info.value.nodes[0][1] == "Shape"


# -- errors ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def unsigned_dir(tmp_path_factory):
    """A SavedModel whose only signature is 'predict'."""
    mod = Featurizer(small_cnn())
    path = tmp_path_factory.mktemp("tf") / "no_serving"
    tf.saved_model.save(mod, str(path), signatures={"predict": mod.serve})
    return path


def test_missing_serving_signature_is_a_typed_error(unsigned_dir, tmp_path):
    with pytest.raises(ModelFormatError) as info:
        saved_model_to_onnx(unsigned_dir)
    msg = str(info.value)
    assert str(unsigned_dir) in msg and "'serving_default'" in msg and "'predict'" in msg
    bare = tmp_path / "bare"
    tf.saved_model.save(tf.Module(), str(bare))
    with pytest.raises(ModelFormatError, match="its signatures: none"):
        saved_model_to_onnx(bare)
    with pytest.raises(ModelFormatError, match="not a TensorFlow SavedModel"):
        compile_model(tmp_path)  # a directory without saved_model.pb


def test_missing_tensorflow_says_how_to_install(featurizer_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import tensorflow -> ImportError
    with pytest.raises(ModelFormatError, match=r"pip install 'accelml\[tf\]'") as info:
        saved_model_to_onnx(featurizer_dir[0])
    assert str(featurizer_dir[0]) in str(info.value)


# -- command line ----------------------------------------------------------------------------------

def test_cli_compiles_a_saved_model(featurizer_dir, tmp_path, capsys):
    path, x, want = featurizer_dir
    pkg = tmp_path / "f.accel"
    assert cli.main(["compile", str(path), "-o", str(pkg), "--preset", "wide"]) == 0
    assert f"package: {pkg}" in capsys.readouterr().out
    assert rel_err(load(pkg).run({"images": x})["features"], want) < WIDE_TOL


def _error_lines(stderr: str) -> list[str]:
    """stderr without the CLI's "compiling MODEL for CONFIG" progress line."""
    return [ln for ln in stderr.strip().splitlines() if not ln.startswith("compiling ")]


def test_cli_bad_saved_model_is_one_line_and_nonzero(unsigned_dir, tmp_path, capfd):
    out = tmp_path / "x.accel"
    rc = cli.main(["compile", str(unsigned_dir), "-o", str(out)])
    err = _error_lines(capfd.readouterr().err)  # file-descriptor level: TensorFlow's own logging too
    assert rc == ModelFormatError.exit_code != 0
    assert len(err) == 1 and err[0].startswith("accelml: error: ") and "'serving_default'" in err[0], err
    assert not out.exists()
    # the installed console script, on a directory that is no SavedModel (fails before importing TensorFlow)
    exe = Path(sys.executable).parent / "accelml"
    r = subprocess.run([str(exe), "compile", str(tmp_path), "-o", str(out)], capture_output=True, text=True,
                       timeout=300)
    err = _error_lines(r.stderr)
    assert r.returncode == ModelFormatError.exit_code and len(err) == 1, r.stderr
    assert "not a TensorFlow SavedModel" in err[0] and "Traceback" not in r.stderr and not out.exists()
