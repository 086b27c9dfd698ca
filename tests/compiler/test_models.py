"""Every seed model builder at reduced size loads, canonicalises, verifies after every pass, and
its IR reference output matches onnxruntime, in both exporter styles."""

from __future__ import annotations

import time

import numpy as np
import onnx
import pytest
from compiler_util import compile_checked, ops, ort_run, random_feeds

from accelml.compiler import models, reference
from accelml.compiler.frontend import to_ir
from accelml.compiler.ir import OpKind
from accelml.compiler.partition import Device, check_support, partition

NAMES = sorted(models.MODELS)
# the per-pass semantic check costs a reference run per pass; do it where that is cheap
PER_PASS = {"resnet50", "densenet121", "mobilenet_v2"}


@pytest.fixture(scope="module")
def reduced():
    return {name: models.build(name) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_reduced_model_matches_onnxruntime(name, reduced):
    m = reduced[name]
    assert m.ir_version == 8 and [o.version for o in m.opset_import] == [17]
    onnx.checker.check_model(m, full_check=True)
    g = compile_checked(m, per_pass=name in PER_PASS)
    kinds = ops(g)
    assert not {"batchnorm", "transpose", "pad"} & set(kinds)
    assert kinds["conv"] >= 13
    if name == "ssd_vgg":
        # L2Norm: the only host work; box decoding / NMS is not in the graph
        assert [(u.op_type, u.name) for u in check_support(g).unsupported] == [
            ("ReduceL2", "l2norm_reduce"), ("Div", "l2norm_div")]
        assert sorted(g.outputs) == sorted([f"loc{i}" for i in range(6)] + [f"conf{i}" for i in range(6)])
    else:
        assert check_support(g).ok
        assert g.outputs == ["logits"] and g.shape("logits") == (1, 1000)
        assert g.nodes[-1].op is OpKind.DENSE


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("transposes", ["boundary", "all"])
def test_tf_style_variant_matches_and_canonicalises_to_the_same_ops(name, transposes, reduced):
    m = reduced[name]
    tf = models.to_tf_style(m, transposes)
    feeds = random_feeds(m)
    want = ort_run(m, feeds)
    got = ort_run(tf, {"input": feeds["input"].transpose(0, 2, 3, 1)})
    for k, v in want.items():  # the variant computes the same function
        np.testing.assert_allclose(got[k], v if v.ndim == 2 else v.transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-5)
    g = compile_checked(tf, per_pass=False)
    assert g.input_perms == {"input": (0, 3, 1, 2)}
    nchw = _nchw_ir(name, m)
    assert ops(g) == ops(nchw)
    assert [u.op_type for u in check_support(g).unsupported] == [u.op_type for u in check_support(nchw).unsupported]


_IR_CACHE: dict = {}


def _nchw_ir(name, model):
    if name not in _IR_CACHE:
        _IR_CACHE[name] = to_ir(model)
    return _IR_CACHE[name]


def test_tf_style_rejects_unknown_mode(reduced):
    with pytest.raises(ValueError, match="transposes"):
        models.to_tf_style(reduced["resnet50"], "some")


def test_ssd_partition_runs_engine_and_host_segments_like_onnxruntime(reduced):
    m = reduced["ssd_vgg"]
    g = to_ir(m)
    p = partition(g)
    assert [s.device for s in p.segments] == [Device.ENGINE, Device.HOST, Device.ENGINE]
    host = p.segments[1]
    assert {n.op_type for n in host.nodes} == {"ReduceL2", "Div", "affine"}
    feeds = random_feeds(m)
    want = ort_run(m, feeds)
    got = p.run(feeds)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-4 * np.abs(want[k]).max())
    text = p.render()
    assert "l2norm_reduce" in text and "ReduceL2" in text and "3 segment(s)" in text


def test_builders_are_deterministic_per_seed():
    a, b = models.build("mobilenet_v2", seed=3), models.build("mobilenet_v2", seed=3)
    c = models.build("mobilenet_v2", seed=4)
    assert a.SerializeToString() == b.SerializeToString()
    assert a.SerializeToString() != c.SerializeToString()


def test_build_rejects_bad_arguments():
    with pytest.raises(KeyError, match="unknown model"):
        models.build("alexnet")
    with pytest.raises(ValueError, match="size"):
        models.build("resnet50", size="huge")
    with pytest.raises(ValueError, match="input_size"):
        models.build("ssd_vgg", input_size=200)


def test_featurizer_output_without_top():
    m = models.build("resnet50", include_top=False)
    g = to_ir(m)
    assert g.outputs == ["features"] and g.shape("features") == (1, 512)
    out = reference.run(g, random_feeds(m))["features"]
    assert np.all(out >= 0)  # pooled ReLU features


def test_activations_stay_order_one_through_the_deep_model(reduced):
    """Realistic weight scale: the 152-layer trunk neither explodes nor vanishes."""
    g = to_ir(reduced["resnet152"])
    feeds = random_feeds(reduced["resnet152"])
    adds = [n.outputs[0] for n in g.nodes if n.op is OpKind.ADD]
    vals = reference.run(g, feeds, outputs=adds)
    rms = [float(np.sqrt(np.mean(vals[a] ** 2))) for a in adds]
    assert 0.1 < min(rms) and max(rms) < 20, rms


def test_full_resnet50_mac_count():
    """The full-size graph (shapes only are checked): ~4.09 GMAC, ~25.5 M parameters."""
    t0 = time.perf_counter()
    g = to_ir(models.build("resnet50", size="full"))
    assert g.shape("input") == (1, 3, 224, 224)
    assert 4.05e9 < g.macs() < 4.15e9
    params = sum(n.attrs.weight.size + n.attrs.bias.size for n in g.nodes if n.op in (OpKind.CONV, OpKind.DENSE))
    assert 25.4e6 < params < 25.6e6
    assert ops(g) == {"conv": 53, "maxpool": 1, "add": 16, "global_avgpool": 1, "reshape": 1, "dense": 1}
    assert time.perf_counter() - t0 < 30


def test_ssd_priors_and_host_postprocess(reduced):
    pri = models.ssd_priors([38, 19, 10, 5, 3, 1])
    assert pri.shape == (8732, 4) and np.all((pri >= 0) & (pri <= 1))
    np.testing.assert_allclose(pri[0], [0.5 / 38, 0.5 / 38, 0.1, 0.1])
    m = reduced["ssd_vgg"]
    heads = ort_run(m, random_feeds(m))
    boxes, scores, labels = models.ssd_postprocess(heads, score_threshold=0.2)
    assert boxes.shape == (len(scores), 4) and 0 < len(scores) <= 200
    assert np.all(np.diff(scores) <= 0) and np.all((labels >= 1) & (labels <= 20))
    assert np.all(boxes[:, 2:] > boxes[:, :2])
    # per class, kept boxes overlap by at most the NMS threshold
    for c in np.unique(labels):
        b = boxes[labels == c]
        for i in range(len(b)):
            for j in range(i + 1, len(b)):
                lt, rb = np.maximum(b[i, :2], b[j, :2]), np.minimum(b[i, 2:], b[j, 2:])
                inter = np.prod(np.clip(rb - lt, 0, None))
                union = np.prod(b[i, 2:] - b[i, :2]) + np.prod(b[j, 2:] - b[j, :2]) - inter
                assert inter / union <= 0.45 + 1e-9
