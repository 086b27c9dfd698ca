"""Empirical bias correction from calibration samples (compile_model(calibration=...),
``accelml compile --calibrate``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from compiler_util import make_model
from onnx import helper

from accelml.compiler import compile_model, lower
from accelml.compiler import precision as prec_policy
from accelml.hdl.errors import PrecisionError
from accelml.runtime import cli, load, save_package
from accelml.sim import bfp


def conv_model(rng, cin=24, cout=20, size=10):
    w = (rng.standard_normal((cout, cin, 3, 3)) * 0.2).astype(np.float32)
    b = (rng.standard_normal(cout) * 0.1).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], name="conv")
    return make_model([node], {"x": [1, cin, size, size]}, ["y"], {"w": w, "b": b}), w


def offset_inputs(rng, n, cin=24, size=10):
    """Inputs with a clear per-channel mean (the case where weight errors add a bias)."""
    mean = rng.uniform(0.5, 2.0, (1, cin, 1, 1))
    return [{"x": (mean + 0.2 * rng.standard_normal((1, cin, size, size))).astype(np.float32)} for _ in range(n)]


def mean_error_per_channel(cm, w, feeds) -> np.ndarray:
    """Mean over pixels of (engine output - the float conv of the engine's own quantised input)."""
    plan = cm.segments[0].plan
    got = lower.run_golden(plan, feeds)["y"][0]
    x = bfp.dequantize(bfp.quantize(np.ascontiguousarray(feeds["x"][0].transpose(1, 2, 0)), plan.cfg))
    x = x[..., : w.shape[1]].transpose(2, 0, 1)[None].astype(np.float32)
    from accelml.compiler import reference  # the float32 IR interpreter on the same graph

    want = reference.run(cm.partition.graph, {"x": x})["y"][0]
    return (got - want).mean(axis=(1, 2))


def test_bias_correction_removes_the_mean_error_of_quantised_weights():
    rng = np.random.default_rng(0)
    model, w = conv_model(rng)
    calib = offset_inputs(rng, 4)
    plain = compile_model(model, config="a10", name="c", precision="fast")
    fixed = compile_model(model, config="a10", name="c", calibration=calib, precision="fast")
    assert fixed.bias_correction == {"samples": 4, "layers": 1}
    assert "bias correction: 1 layers, from 4 calibration sample(s)" in fixed.report()
    before = np.abs(mean_error_per_channel(plain, w, calib[0])).mean()
    after = np.abs(mean_error_per_channel(fixed, w, calib[0])).mean()
    assert after < before / 4, (before, after)
    # the bias is the only thing that changed
    assert np.array_equal(plain.segments[0].plan.ops[0].wq.mant, fixed.segments[0].plan.ops[0].wq.mant)
    assert not np.array_equal(plain.segments[0].plan.ops[0].bias, fixed.segments[0].plan.ops[0].bias)


def test_corrected_package_is_bit_exact_with_golden_and_records_the_correction(tmp_path):
    rng = np.random.default_rng(1)
    model, _ = conv_model(rng)
    cm = compile_model(model, config="ecp5", name="c", calibration=offset_inputs(rng, 2))
    feeds = offset_inputs(rng, 1)[0]
    pkg = save_package(cm, tmp_path / "c.accel")
    assert json.loads((pkg / "manifest.json").read_text())["bias_correction"] == {"samples": 2, "layers": 1}
    got = load(pkg).run(feeds)["y"]
    assert got.tobytes() == cm.run_golden(feeds)["y"].tobytes()


def test_plain_compile_keeps_no_float_weights():
    rng = np.random.default_rng(2)
    model, _ = conv_model(rng)
    cm = compile_model(model, config="tiny", name="c", precision="fast")
    assert cm.bias_correction == {"samples": 0, "layers": 0}
    assert all(getattr(op, "w_float", None) is None for op in cm.segments[0].plan.ops)
    # the data-free balanced policy calibrates on synthetic samples, then drops the float weights too
    balanced = compile_model(model, config="tiny", name="c")
    assert balanced.bias_correction == {"samples": prec_policy.SYNTHETIC_CALIBRATION, "layers": 1,
                                        "synthetic": True}
    assert f"from {prec_policy.SYNTHETIC_CALIBRATION} synthetic sample(s)" in balanced.report()
    assert all(getattr(op, "w_float", None) is None for op in balanced.segments[0].plan.ops)


@pytest.mark.parametrize("calib, message", [
    ([], "at least one sample"),
    ([{"other": np.zeros((1, 24, 10, 10), np.float32)}], "'other' is not an input of the model"),
    ([{"x": np.zeros((1, 24, 9, 10), np.float32)}], "'x'.*shape \\(1, 24, 9, 10\\)"),
    ([{"x": np.full((1, 24, 10, 10), np.nan, np.float32)}], "'x'.*NaN"),
])
def test_bad_calibration_is_a_typed_error_naming_the_input(calib, message):
    model, _ = conv_model(np.random.default_rng(3))
    with pytest.raises(PrecisionError, match=message):
        compile_model(model, config="tiny", calibration=calib)


def test_cli_calibrate(tmp_path, capsys):
    rng = np.random.default_rng(4)
    model, _ = conv_model(rng)
    src = tmp_path / "c.onnx"
    src.write_bytes(model.SerializeToString())
    np.savez(tmp_path / "cal.npz", x=np.concatenate([f["x"] for f in offset_inputs(rng, 3)]))
    out = tmp_path / "c.accel"
    assert cli.main(["compile", str(src), "-o", str(out), "--preset", "tiny", "--calibrate",
                     str(tmp_path / "cal.npz")]) == 0
    assert "bias correction: 1 layers, from 3 calibration sample(s)" in capsys.readouterr().out
    # samples without the batch axis are taken too; a bad file writes nothing
    np.savez(tmp_path / "bad.npz", x=np.zeros((3, 24, 9, 10), np.float32))
    out2 = tmp_path / "d.accel"
    rc = cli.main(["compile", str(src), "-o", str(out2), "--preset", "tiny", "--calibrate", str(tmp_path / "bad.npz")])
    err = capsys.readouterr().err
    assert rc == PrecisionError.exit_code and "'x'" in err and "Traceback" not in err
    assert not out2.exists()
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    rc = cli.main(["compile", str(src), "-o", str(out2), "--calibrate", str(tmp_path / "junk.npz")])
    assert rc != 0 and "--calibrate" in capsys.readouterr().err and not out2.exists()


# -- split weights ------------------------------------------------------------------------------

@pytest.mark.parametrize("preset_name", ["tiny", "ecp5", "a10"])
def test_split_weights_are_bit_exact_between_funcsim_and_golden(tmp_path, preset_name):
    """Dense, depthwise and residual layers with a second weight pass, on several presets
    (including the K-split schedules of the small ones)."""
    from accelml.compiler import models

    cm = compile_model(models.build("mobilenet_v2", "reduced"), config=preset_name, name="m", split_weights=True)
    assert cm.split_weights and "split weights" in cm.report()
    assert all(op.wq_lo is not None for op in cm.segments[0].plan.ops if isinstance(op, lower.ConvOp))
    rng = np.random.default_rng(7)
    feeds = {i["name"]: rng.standard_normal(i["shape"]).astype(np.float32) for i in cm.inputs}
    got = load(save_package(cm, tmp_path / "m.accel")).run(feeds)
    want = cm.run_golden(feeds)
    for name in want:
        assert got[name].tobytes() == want[name].tobytes(), name


def test_split_weights_halve_the_weight_error_bits():
    rng = np.random.default_rng(8)
    model, w = conv_model(rng)
    one = compile_model(model, config="a10", precision="fast").segments[0].plan.ops[0]
    two = compile_model(model, config="a10", split_weights=True).segments[0].plan.ops[0]
    dense = w.transpose(0, 2, 3, 1)  # (Cout, kh, kw, Cin): the reduction order, lanes padded to 32
    want = np.zeros((w.shape[0], 3, 3, 32))
    want[..., : w.shape[1]] = dense
    want = want.reshape(w.shape[0], -1)
    e1 = np.abs(one.weight_values() - want).max() / np.abs(want).max()
    e2 = np.abs(two.weight_values() - want).max() / np.abs(want).max()
    assert e1 > 2.0**-9 and e2 < 2.0**-14, (e1, e2)
    assert np.array_equal(one.wq.mant, two.wq.mant)  # the first part is the plain weights


def test_split_weights_double_the_products_in_the_report():
    rng = np.random.default_rng(9)
    model, _ = conv_model(rng)
    one = compile_model(model, config="ecp5", precision="fast")
    two = compile_model(model, config="ecp5", split_weights=True)
    assert sum(lr.tile_ops for lr in two.layers) == 2 * sum(lr.tile_ops for lr in one.layers)
    assert sum(lr.macs for lr in two.layers) == sum(lr.macs for lr in one.layers)  # useful MACs unchanged


def test_calibration_through_host_segments(tmp_path):
    """Engine segments between host ones get their own inputs: a host op first, then a conv,
    then a host softmax."""
    rng = np.random.default_rng(10)
    w = (rng.standard_normal((16, 8, 3, 3)) * 0.2).astype(np.float32)
    nodes = [helper.make_node("Abs", ["x"], ["a"], name="abs_on_host"),
             helper.make_node("Conv", ["a", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Flatten", ["c"], ["f"], name="flat"),
             helper.make_node("Softmax", ["f"], ["y"], name="softmax")]
    model = make_model(nodes, {"x": [1, 8, 6, 6]}, ["y"], {"w": w})
    calib = [{"x": rng.standard_normal((1, 8, 6, 6)).astype(np.float32)} for _ in range(2)]
    cm = compile_model(model, config="tiny", calibration=calib)
    assert cm.bias_correction == {"samples": 2, "layers": 1}
    assert sum(1 for s in cm.segments if s.plan is None) >= 1  # host segments exist
    feeds = {"x": rng.standard_normal((1, 8, 6, 6)).astype(np.float32)}
    got = load(save_package(cm, tmp_path / "h.accel")).run(feeds)["y"]
    assert got.tobytes() == cm.run_golden(feeds)["y"].tobytes()
