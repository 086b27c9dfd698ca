"""Split activations (compile_model(split_activations=True), ``accelml compile
--split-activations``): every convolution input stored as two BFP planes, the second holding what
the first's quantisation misses, and multiplied in one more pass of products."""

from __future__ import annotations

import json

import numpy as np
import pytest
from compiler_util import make_model
from onnx import helper

from accelml.compiler import compile_model, lower, models
from accelml.runtime import cli, load, save_package


def conv_model(rng, cin=24, cout=20, size=10):
    w = (rng.standard_normal((cout, cin, 3, 3)) * 0.2).astype(np.float32)
    b = (rng.standard_normal(cout) * 0.1).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1], name="conv2")]
    w2 = (rng.standard_normal((cout, cout, 3, 3)) * 0.2).astype(np.float32)
    return make_model(nodes, {"x": [1, cin, size, size]}, ["y"], {"w": w, "b": b, "w2": w2})


def run_both(cm, tmp_path, seed=7):
    rng = np.random.default_rng(seed)
    feeds = {i["name"]: rng.standard_normal(i["shape"]).astype(np.float32) for i in cm.inputs}
    got = load(save_package(cm, tmp_path / "m.accel")).run(feeds)
    return feeds, got, cm.run_golden(feeds)


@pytest.mark.parametrize("model, preset_name, split_weights", [
    ("mobilenet_v2", "tiny", False),  # depthwise, residual adds fused into convs, K-split schedules
    ("mobilenet_v2", "ecp5", True),
    ("mobilenet_v2", "a10", True),
    ("resnet50", "ecp5", False),  # strided 1x1 shortcuts, residual planes in the epilogue
    ("densenet121", "ecp5", False),  # concat views into split buffers, pools on the first plane
    ("vgg16", "a10", False),  # max pools then dense layers over a split flattened input
])
def test_split_activations_are_bit_exact_between_funcsim_and_golden(tmp_path, model, preset_name, split_weights):
    cm = compile_model(models.build(model, "reduced"), config=preset_name, name="m", split_weights=split_weights,
                       split_activations=True)
    plan = cm.segments[0].plan
    srcs = {op.src.base for op in plan.ops if isinstance(op, lower.ConvOp)}
    assert srcs and all(plan.bases[b].split for b in srcs)
    if preset_name == "a10" and model == "mobilenet_v2":  # both planes kept on chip between layers
        assert any(plan.bases[b].split for b in cm.segments[0].compiled.resident)
    _, got, want = run_both(cm, tmp_path)
    for name in want:
        assert got[name].tobytes() == want[name].tobytes(), name


def test_split_activations_remove_most_of_the_activation_error():
    """Against the float network with the engine's own (quantised) weights, what is left is the
    activations' quantisation: the second plane cuts it by more than 2**5."""
    rng = np.random.default_rng(1)
    model = conv_model(rng)
    feeds = {"x": rng.standard_normal((1, 24, 10, 10)).astype(np.float32)}
    errs = []
    for split in (False, True):
        cm = compile_model(model, config="a10", **({"split_activations": True} if split else {"precision": "fast"}))
        plan = cm.segments[0].plan
        got = lower.run_golden(plan, feeds)["y"]
        x = feeds["x"][0].transpose(1, 2, 0).astype(np.float64)  # the float reference, engine weights
        for op in plan.ops:
            w = op.weight_values()[: op.dst.channels]
            idx = op.geom.window_index(*op.geom.grid(), x.shape[0] * x.shape[1])
            flat = np.concatenate([np.pad(x, ((0, 0), (0, 0), (0, w.shape[1] // op.taps - x.shape[2])))
                                  .reshape(-1, w.shape[1] // op.taps), np.zeros((1, w.shape[1] // op.taps))])
            y = flat[idx].reshape(idx.shape[0], -1) @ w.T + op.bias[: op.dst.channels]
            if op.act.kind.value == "relu":
                y = np.maximum(y, 0)
            x = y.reshape(*op.geom.out_size(), -1)
        errs.append(np.abs(got[0].transpose(1, 2, 0) - x).max() / np.abs(x).max())
    assert errs[1] < errs[0] / 32, errs


def test_split_activations_cost_one_pass_and_are_recorded(tmp_path):
    rng = np.random.default_rng(2)
    model = conv_model(rng)
    one = compile_model(model, config="ecp5", precision="fast")
    two = compile_model(model, config="ecp5", split_activations=True)
    three = compile_model(model, config="ecp5", split_activations=True, split_weights=True)
    ops = [sum(lr.tile_ops for lr in cm.layers) for cm in (one, two, three)]
    assert ops[1] == 2 * ops[0] and ops[2] == 3 * ops[0], ops
    assert sum(lr.macs for lr in two.layers) == sum(lr.macs for lr in one.layers)  # useful MACs unchanged
    assert "split activations" in two.report() and "split activations" not in one.report()
    pkg = save_package(two, tmp_path / "s.accel")
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert manifest["split_activations"] is True
    seg = next(s for s in manifest["segments"] if s["kind"] == "engine")
    assert seg["inputs"]["x"]["split"] is True  # the host writes both planes of the input


def test_cli_split_activations(tmp_path, capsys):
    src = tmp_path / "c.onnx"
    src.write_bytes(conv_model(np.random.default_rng(3)).SerializeToString())
    out = tmp_path / "c.accel"
    assert cli.main(["compile", str(src), "-o", str(out), "--preset", "tiny", "--split-activations"]) == 0
    assert "split activations" in capsys.readouterr().out
    assert json.loads((out / "manifest.json").read_text())["split_activations"] is True
    np.save(tmp_path / "x.npy", np.random.default_rng(4).standard_normal((1, 24, 10, 10)).astype(np.float32))
    assert cli.main(["run", str(out), "--input", f"x={tmp_path / 'x.npy'}", "-o", str(tmp_path / "y.npz")]) == 0
    assert np.load(tmp_path / "y.npz")["y"].shape == (1, 20, 10, 10)


def test_a_split_input_too_big_for_the_vrf_is_a_capacity_error_naming_the_planes():
    from accelml.hdl.errors import CapacityError

    model = models.build("ssd_vgg", "reduced")  # a dilated 3x3 (13 input rows per output row)
    compile_model(model, config="tiny", precision="fast")
    with pytest.raises(CapacityError, match=r"conv61.*two planes of 16: split activations.*tiny"):
        compile_model(model, config="tiny", split_activations=True)


def test_split_activations_with_split_weights_and_bias_correction_stay_bit_exact(tmp_path):
    """Calibration samples run through the golden plan with both planes (the correction's window
    means are the planes' sums)."""
    model = models.build("mobilenet_v2", "reduced")
    rng = np.random.default_rng(5)
    shape = compile_model(model, config="ecp5").inputs[0]["shape"]
    calib = [{"input": rng.standard_normal(shape).astype(np.float32)} for _ in range(2)]
    cm = compile_model(model, config="ecp5", calibration=calib, split_weights=True, split_activations=True)
    assert cm.bias_correction["layers"] > 0
    _, got, want = run_both(cm, tmp_path)
    for name in want:
        assert got[name].tobytes() == want[name].tobytes(), name
