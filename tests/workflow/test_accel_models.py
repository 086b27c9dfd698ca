"""accelml.accel.models: the TF1 featurizers compute the seed ONNX models' function, carry the
documented tensor names, and preprocess_array is what the TF importer splits off to the host."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow.compat.v1")
ort = pytest.importorskip("onnxruntime")

from accelml.accel import models  # noqa: E402
from accelml.hdl.errors import ConfigError  # noqa: E402

DOCUMENTED = {
    "QuantizedResnet50": "classifier_1/resnet_v1_50/predictions/Softmax:0",
    "QuantizedResnet152": "classifier/resnet_v1_152/predictions/Softmax:0",
    "Densenet121": "classifier/densenet121/predictions/Softmax:0",
    "QuantizedVgg16": "classifier/vgg_16/fc8/squeezed:0",
}


@pytest.mark.parametrize("cls_name", ["QuantizedResnet50", "QuantizedVgg16", "Densenet121"])
def test_featurizer_matches_seed_model(cls_name):
    x = np.random.default_rng(1).standard_normal((1, 64, 64, 3)).astype(np.float32)
    with tf.Graph().as_default():
        m = getattr(models, cls_name)(None, is_frozen=cls_name != "Densenet121", size="reduced")
        inp = tf.placeholder(tf.float32, [1, 64, 64, 3])
        out = m.get_default_classifier(m.import_graph_def(inp))
        assert out.name == DOCUMENTED[cls_name]
        logits = out.op.inputs[0] if out.op.type == "Softmax" else out
        with tf.Session() as sess:
            m.restore_weights(sess)
            got, probs = sess.run([logits, out], {inp: x})
    ref = ort.InferenceSession(m.onnx_model().SerializeToString()).run(None, {"input": x.transpose(0, 3, 1, 2)})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    if cls_name != "QuantizedVgg16":
        np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-5)


def test_documented_names_and_versions():
    assert models.QuantizedResnet152(None).classifier_output == DOCUMENTED["QuantizedResnet152"]
    ssd = models.QuantizedSsdVgg(None, size="reduced")
    assert ssd.output_tensor_list[0] == "ssd_300_vgg/block4_box/Reshape_1:0"
    assert ssd.output_tensor_list[6] == "ssd_300_vgg/block4_box/Reshape:0"
    assert models.QuantizedResnet50(None).version


def test_ssd_heads():
    with tf.Graph().as_default():
        ssd = models.QuantizedSsdVgg(None, size="reduced")
        heads = ssd.import_graph_def(tf.placeholder(tf.float32, [1, 300, 300, 3]))
        assert [h.name for h in heads] == ssd.output_tensor_list
        assert heads[0].shape.as_list() == [1, 38, 38, 4, 21]
        assert heads[6].shape.as_list() == [1, 38, 38, 4, 4]
        with pytest.raises(ConfigError, match="no default classifier"):
            ssd.get_default_classifier(heads)


def test_bad_size_is_refused():
    with pytest.raises(ConfigError, match="size='huge'"):
        models.QuantizedResnet50(None, size="huge")


def test_preprocess_array_matches_host_preprocess(saved_model, make_jpeg):
    """tf_import recognises preprocess_array: the package's host preprocessing gives what the
    TF graph computes (up to the two JPEG decoders' IDCT, a few levels)."""
    from accelml.accel.accel_onnx_converter import freeze_saved_model
    from accelml.compiler.tf_import import HostPreprocess, frozen_graph_to_onnx

    path, inp, out = saved_model
    gd = freeze_saved_model(path, [inp], [out])
    pre = HostPreprocess.from_onnx(frozen_graph_to_onnx(gd, [inp], [out]))
    assert pre is not None and pre.tf_tensor == "preprocess/normalized:0"
    assert pre.channel_names == "BGR" and pre.size == (64, 64) and pre.resize == "bilinear"
    data = make_jpeg(3)
    with tf.Graph().as_default():
        s = tf.placeholder(tf.string)
        t = models.utils.preprocess_array(s, 64, 64)
        with tf.Session() as sess:
            want = sess.run(t, {s: np.array([data], dtype=object)})
    assert np.abs(pre(data) - want).max() < 8.0


def test_labels():
    labels = models.imagenet_classes()
    assert len(labels) == 1000
    for i, name in {0: "tench", 1: "goldfish", 207: "golden retriever", 281: "tabby cat", 285: "Egyptian cat",
                    289: "snow leopard", 409: "analog clock", 817: "sports car", 999: "toilet tissue"}.items():
        assert labels[i] == name
    # the only repeated name in ILSVRC-2012 is "crane" (the bird, 134, and the machine, 517)
    assert [n for n in set(labels) if labels.count(n) > 1] == ["crane"]


def test_ssd_graph_converts_with_the_documented_outputs(tmp_path):
    """The SSD heads (a list of output tensors) convert; the package's outputs are the twelve
    documented tensors with their NHWC shapes."""
    from accelml.accel.accel_onnx_converter import convert_saved_model

    with tf.Graph().as_default():
        s = tf.placeholder(tf.string)
        ssd = models.QuantizedSsdVgg(None, size="reduced")
        heads = ssd.import_graph_def(models.utils.preprocess_array(s, 300, 300))
        with tf.Session() as sess:
            ssd.restore_weights(sess)
            tf.saved_model.simple_save(sess, str(tmp_path / "ssd"), inputs={"images": s},
                                       outputs={f"o{i}": h for i, h in enumerate(heads)})
    cm = convert_saved_model(tmp_path / "ssd", s.name, ssd.output_tensor_list)
    assert [o["name"] for o in cm.outputs] == ssd.output_tensor_list
    assert cm.outputs[0]["shape"] == [1, 38, 38, 4, 21] and cm.outputs[6]["shape"] == [1, 38, 38, 4, 4]
    assert cm.host_preprocess["input"] == s.name


def test_preprocess_array_takes_exactly_one_image(make_jpeg):
    with tf.Graph().as_default():
        s = tf.placeholder(tf.string)
        t = models.utils.preprocess_array(s, 32, 32)
        assert t.shape.as_list() == [1, 32, 32, 3]
        with tf.Session() as sess:
            assert sess.run(t, {s: np.array([[make_jpeg(1)]], dtype=object)}).shape == (1, 32, 32, 3)
            with pytest.raises(tf.errors.InvalidArgumentError):
                sess.run(t, {s: np.array([make_jpeg(1), make_jpeg(2)], dtype=object)})
