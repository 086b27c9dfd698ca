"""The support report lists every node the engine cannot run, before any work; the partition
cuts the graph into engine and host segments that together compute what onnxruntime does."""

from __future__ import annotations

import numpy as np
import pytest
from compiler_util import assert_close, make_model, ort_run, random_feeds
from onnx import helper

from accelml.compiler.frontend import to_ir
from accelml.compiler.ir import OpKind
from accelml.compiler.partition import Device, check_support, explain, partition, require_engine
from accelml.hdl.errors import UnsupportedOperatorError

H = helper.make_node
RNG = np.random.default_rng(7)


def w(*shape):
    return (RNG.standard_normal(shape) * 0.3).astype(np.float32)


def mixed_model():
    """conv -> Softmax(channels) -> HardSigmoid -> conv -> Erf -> GAP -> flatten -> gemm -> Softmax"""
    nodes = [H("Conv", ["x", "w1"], ["c1"], pads=[1] * 4, name="conv1"),
             H("Relu", ["c1"], ["r1"], name="relu1"),
             H("Softmax", ["r1"], ["s1"], axis=1, name="softmax_mid"),
             H("HardSigmoid", ["s1"], ["h"], name="hsig"),
             H("Conv", ["h", "w2"], ["c2"], name="conv2"),
             H("Erf", ["c2"], ["e"], name="erf"),
             H("GlobalAveragePool", ["e"], ["g"], name="gap"),
             H("Flatten", ["g"], ["f"], name="flatten"),
             H("Gemm", ["f", "w3", "b3"], ["logits"], transB=1, name="fc"),
             H("Softmax", ["logits"], ["probs"], axis=1, name="softmax_out")]
    return make_model(nodes, {"x": [1, 3, 8, 8]}, ["probs"],
                      {"w1": w(6, 3, 3, 3), "w2": w(5, 6, 1, 1), "w3": w(10, 5), "b3": w(10)})


def test_report_lists_every_unsupported_node_in_order():
    g = to_ir(mixed_model())
    rep = check_support(g)
    assert not rep.ok
    assert [(u.name, u.op_type) for u in rep.unsupported] == [
        ("softmax_mid", "Softmax"), ("hsig", "HardSigmoid"), ("erf", "Erf"), ("softmax_out", "Softmax")]
    assert all(u.reason for u in rep.unsupported)
    assert "Softmax runs on the host" in rep.unsupported[0].reason
    text = rep.render()
    for u in rep.unsupported:
        assert u.name in text and u.op_type in text and u.reason in text
    assert rep.engine_ops == {"conv": 2, "global_avgpool": 1, "reshape": 1, "dense": 1}


def test_require_engine_raises_naming_every_node():
    g = to_ir(mixed_model())
    with pytest.raises(UnsupportedOperatorError) as e:
        require_engine(g)
    assert [n for n, _, _ in e.value.nodes] == ["softmax_mid", "hsig", "erf", "softmax_out"]
    assert "4 node(s)" in str(e.value) and "hsig" in str(e.value) and e.value.exit_code == 9


def test_partition_segments_and_execution():
    m = mixed_model()
    g = to_ir(m)
    p = partition(g)
    assert [s.device for s in p.segments] == [Device.ENGINE, Device.HOST, Device.ENGINE, Device.HOST,
                                               Device.ENGINE, Device.HOST]
    assert [[n.name for n in s.nodes] for s in p.segments][:2] == [["conv1"], ["softmax_mid", "hsig"]]
    # each segment's boundary tensors
    assert p.segments[0].inputs == ["x"] and p.segments[1].inputs == p.segments[0].outputs
    assert p.segments[-1].outputs == ["probs"]
    for s in p.segments:
        if s.device is Device.ENGINE:
            assert all(n.op is not OpKind.HOST for n in s.nodes)
    feeds = random_feeds(m)
    assert_close(p.run(feeds), ort_run(m, feeds), 1e-5, "partitioned run")


def test_engine_only_model_is_one_segment_and_explain_text(tmp_path):
    nodes = [H("Conv", ["x", "w1"], ["c"], name="conv"), H("Relu", ["c"], ["y"], name="relu")]
    m = make_model(nodes, {"x": [1, 3, 5, 5]}, ["y"], {"w1": w(4, 3, 3, 3)})
    p = partition(to_ir(m))
    assert len(p.segments) == 1 and p.segments[0].device is Device.ENGINE and p.report.ok
    import onnx

    path = tmp_path / "m.onnx"
    onnx.save_model(m, path)
    text = explain(path)
    assert "every node runs on the engine" in text and "1 segment(s)" in text


def test_cheap_ops_after_host_ops_stay_on_host():
    nodes = [H("Conv", ["x", "w1"], ["c"], name="conv"), H("Sin", ["c"], ["s"], name="sin"),
             H("Mul", ["s", "k"], ["m"], name="scale"), H("Relu", ["m"], ["r"], name="relu"),
             H("Conv", ["r", "w2"], ["y"], name="conv2")]
    m = make_model(nodes, {"x": [1, 3, 5, 5]}, ["y"],
                   {"w1": w(4, 3, 1, 1), "w2": w(2, 4, 1, 1), "k": np.array(2.0, np.float32)})
    g = to_ir(m)
    p = partition(g)
    assert [s.device for s in p.segments] == [Device.ENGINE, Device.HOST, Device.ENGINE]
    assert [n.name for n in p.segments[1].nodes] == ["sin", "scale"]  # relu fused into the affine
    assert "scale" in p.notes and [u.name for u in p.report.unsupported] == ["sin"]
    feeds = random_feeds(m)
    assert_close(p.run(feeds), ort_run(m, feeds), 1e-5, "partitioned run")


def test_non_channel_concat_and_general_reshape_are_reported():
    nodes = [H("Concat", ["a", "b"], ["c"], axis=2, name="cat_h"),
             H("Reshape", ["c", "shape"], ["y"], name="reshape_odd")]
    m = make_model(nodes, {"a": [1, 2, 3, 4], "b": [1, 2, 1, 4]}, ["y"], {"shape": np.array([1, 4, 2, 4], np.int64)})
    g = to_ir(m)
    reasons = {u.name: u.reason for u in check_support(g).unsupported}
    assert set(reasons) == {"cat_h", "reshape_odd"}
    assert "axis 2" in reasons["cat_h"] and "not a flatten" in reasons["reshape_odd"]
    feeds = random_feeds(m)
    assert_close(partition(g).run(feeds), ort_run(m, feeds), 1e-6, "partitioned run")
