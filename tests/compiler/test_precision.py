"""The per-layer precision policy (compile_model(precision=..., latency_budget=...), ``accelml
compile --precision / --latency-budget``) and error-aware weight rounding (bfp.quantize_min_error)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from compiler_util import make_model
from onnx import helper

from accelml.compiler import compile_model, driver, lower, models, zoo
from accelml.hdl.config import preset
from accelml.hdl.errors import PrecisionError
from accelml.runtime import cli, load, save_package
from accelml.sim import bfp, golden


def two_convs(rng, cin=24, cout=20, size=10):
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1], name="conv2")]
    inits = {"w": (rng.standard_normal((cout, cin, 3, 3)) * 0.2).astype(np.float32),
             "b": (rng.standard_normal(cout) * 0.1).astype(np.float32),
             "w2": (rng.standard_normal((cout, cout, 3, 3)) * 0.2).astype(np.float32)}
    return make_model(nodes, {"x": [1, cin, size, size]}, ["y"], inits)


def run_both(cm, tmp_path, seed=7):
    rng = np.random.default_rng(seed)
    feeds = {i["name"]: rng.standard_normal(i["shape"]).astype(np.float32) for i in cm.inputs}
    return load(save_package(cm, tmp_path / "m.accel")).run(feeds), cm.run_golden(feeds)


def choices(cm) -> list[tuple]:
    return [(e["name"], e["split_weights"], e["split_activations"], e["rounding"], e["bias_correction"])
            for e in cm.precision["layers"]]


# -- the policies --------------------------------------------------------------------------------

def test_fast_is_the_single_pass_program_and_exact_splits_everything():
    model = models.build("mobilenet_v2", "reduced")
    fast = compile_model(model, config="ecp5", precision="fast")
    plain = lower.lower_segment(fast.partition.segments[0].subgraph(fast.partition.graph), preset("ecp5"))
    for a, b in zip(fast.segments[0].plan.ops, plain.ops, strict=True):
        if isinstance(a, lower.ConvOp):
            assert a.wq_lo is None and np.array_equal(a.wq.mant, b.wq.mant) and np.array_equal(a.wq.exp, b.wq.exp)
    assert not any(b.split for b in fast.segments[0].plan.bases.values())
    assert fast.precision["ratio"] == 1.0 and all(c[1:4] == (False, False, "nearest") for c in choices(fast))
    exact = compile_model(model, config="ecp5", precision="exact")
    assert all(c[1:3] == (True, True) for c in choices(exact))
    assert exact.precision["ratio"] > 1.5 and exact.precision["fast_cycles"] == fast.summary()["cycles"]


def test_balanced_is_the_default_and_keeps_its_budget():
    cm = compile_model(models.build("resnet50", "reduced"), config="ecp5")
    rec = cm.precision
    assert rec["policy"] == "balanced" and rec["budget"] == 1.3 and rec["measured_on"] == "synthetic"
    assert 1.0 < rec["ratio"] <= 1.3 and rec["cycles"] == cm.summary()["cycles"]
    assert rec["noise"] < rec["noise_fast"]  # the upgrades it bought reduce the modelled noise
    assert any(c[1] or c[2] for c in choices(cm))
    assert "precision: balanced (budget 1.30x the fast program)" in cm.report()
    tight = compile_model(models.build("resnet50", "reduced"), config="ecp5", latency_budget=1.0)
    assert tight.precision["policy"] == "budget" and tight.summary()["cycles"] <= rec["fast_cycles"]


def test_policy_choices_are_deterministic():
    model = models.build("mobilenet_v2", "reduced")
    a = compile_model(model, config="ecp5", latency_budget=1.2)
    b = compile_model(model, config="ecp5", latency_budget=1.2)
    assert choices(a) == choices(b) and a.precision == b.precision
    rng = np.random.default_rng(3)
    model = two_convs(rng)
    calib = [{"x": rng.standard_normal((1, 24, 10, 10)).astype(np.float32)} for _ in range(2)]
    c = compile_model(model, config="ecp5", calibration=calib, latency_budget=1.5)
    d = compile_model(model, config="ecp5", calibration=calib, latency_budget=1.5)
    assert choices(c) == choices(d) and c.precision["measured_on"] == "calibration"
    assert all(ch[4] for ch in choices(c))  # with calibration every layer is bias-corrected


@pytest.mark.parametrize("name, preset_name, budget", [
    ("mobilenet_v2", "ecp5", 1.15),  # depthwise, fused residual adds
    ("resnet50", "ecp5", 1.2),  # strided shortcuts, residual planes
    ("densenet121", "ecp5", 1.2),  # concat views, some split and some not
    ("vgg16", "a10", 1.5),  # pools and dense layers
    ("resnet152", "ecp5", 1.2),  # bottleneck stacks
    ("ssd_vgg", "a10", 1.3),  # several outputs (the multibox heads)
])
def test_mixed_precision_is_bit_exact_between_funcsim_and_golden(tmp_path, name, preset_name, budget):
    cm = compile_model(models.build(name, "reduced"), config=preset_name, latency_budget=budget)
    ch = choices(cm)
    mixed = [any(c[i] for c in ch) and not all(c[i] for c in ch) for i in (1, 2)]
    assert any(mixed), ch  # some layers upgraded, others not
    got, want = run_both(cm, tmp_path)
    for out in want:
        assert got[out].tobytes() == want[out].tobytes(), out


# in the default suite (45 s): the policy rounds Lite0's depthwise weights once (weight_cache)
@pytest.mark.skipif(not zoo.zoo_available(), reason="needs the zoo extra (EfficientNet-Lite0 weights)")
def test_efficientnet_lite0_default_compile_is_bit_exact(tmp_path):
    model = zoo.efficientnet_lite0(96)
    cm = compile_model(model, config="a10")
    ch = choices(cm)
    assert any(c[1] for c in ch) and not all(c[1] for c in ch)
    got, want = run_both(cm, tmp_path)
    assert got["logits"].tobytes() == want["logits"].tobytes()
    rng = np.random.default_rng(1)  # calibrated, single-pass layers: compensated rounding on some
    spec = cm.inputs[0]
    calib = [{spec["name"]: rng.uniform(-1, 1, spec["shape"]).astype(np.float32)} for _ in range(2)]
    cm = compile_model(model, config="a10", calibration=calib, latency_budget=1.0)
    ch = choices(cm)
    assert any(c[3] == "compensated" for c in ch), ch
    (tmp_path / "cal").mkdir()
    got, want = run_both(cm, tmp_path / "cal")
    assert got["logits"].tobytes() == want["logits"].tobytes()


def test_manifest_and_explain_record_each_layer(tmp_path, capsys):
    src = tmp_path / "c.onnx"
    src.write_bytes(two_convs(np.random.default_rng(5)).SerializeToString())
    out = tmp_path / "c.accel"
    assert cli.main(["compile", str(src), "-o", str(out), "--preset", "tiny", "--explain",
                     "--latency-budget", "2.5"]) == 0
    text = capsys.readouterr().out
    rec = json.loads((out / "manifest.json").read_text())["precision"]
    assert rec["policy"] == "budget" and rec["budget"] == 2.5
    assert [e["name"] for e in rec["layers"]] == ["conv1", "conv2"]
    for e in rec["layers"]:
        assert {"split_weights", "split_activations", "rounding", "bias_correction", "cycles", "fast_cycles"} <= set(e)
        assert f"\n{e['name']}" in text
    assert "precision: budget" in text


# -- error-aware rounding ----------------------------------------------------------------------

def test_min_error_exponents_never_increase_a_block_error():
    cfg = preset("a10")
    rng = np.random.default_rng(0)
    # blocks whose maximum sits just above a power of two are where a lower exponent pays
    w = rng.standard_normal((64, 128)) * 0.05
    w[:, ::16] = 2.0 ** rng.integers(-6, -2, (64, 8)) * 1.004
    near, me = bfp.quantize(w, cfg), bfp.quantize_min_error(w, cfg)
    e_near = ((bfp.dequantize(near) - w) ** 2).reshape(64, -1, 16).sum(-1)
    e_me = ((bfp.dequantize(me) - w) ** 2).reshape(64, -1, 16).sum(-1)
    assert (e_me <= e_near).all() and (e_me < e_near).mean() > 0.1
    assert np.abs(me.mant).max() <= 2**cfg.mantissa_bits - 1
    assert (bfp.quantize_min_error(np.zeros((2, 16)), cfg).exp == cfg.exp_min).all()  # zero blocks as quantize


def _conv_inputs(plan, feeds):
    """Each conv's input as the fast program computes it (golden run), name -> BfpTensor."""
    mem = lower._loaded_memory(plan, feeds)
    seen = {}
    for op in plan.ops:
        if isinstance(op, lower.ConvOp):
            seen[op.name] = mem.read(op.src)
        lower._execute(plan, op, mem)
    return seen


def test_rounding_never_increases_a_layer_error_on_the_calibration_samples():
    rng = np.random.default_rng(11)
    model = two_convs(rng, cin=32, cout=48)
    calib = [{"x": (1.0 + rng.standard_normal((1, 32, 10, 10))).astype(np.float32)} for _ in range(3)]
    cm = compile_model(model, config="a10", calibration=calib, latency_budget=1.0, weight_rounding="min-error")
    fast = compile_model(model, config="a10", precision="fast")
    sub = cm.partition.segments[0].subgraph(cm.partition.graph)
    floats = {op.name: op.w_float.astype(np.float64)
              for op in lower.lower_segment(sub, cm.cfg, all_float=True).ops if isinstance(op, lower.ConvOp)}
    chosen = {op.name: op for op in cm.segments[0].plan.ops if isinstance(op, lower.ConvOp)}
    improved = 0
    for name, w in floats.items():
        err = {"chosen": 0.0, "nearest": 0.0}
        for feeds in calib:
            x = _conv_inputs(fast.segments[0].plan, feeds)[name]
            mant, exp = golden.im2col(x, chosen[name].geom)
            cols = np.ldexp(mant.astype(np.float64), np.repeat(exp.astype(np.int32) - (x.mantissa_bits - 1),
                                                               x.block, axis=-1))
            for key, wq in (("chosen", chosen[name].weight_values()),
                            ("nearest", bfp.dequantize(bfp.quantize(w, cm.cfg)))):
                err[key] += float((((wq - w) @ cols.T) ** 2).sum())
        assert err["chosen"] <= err["nearest"], (name, err)
        improved += err["chosen"] < err["nearest"]
    assert improved >= 1  # the rounding did change something, for the better


# -- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("calib, message", [
    ([], "at least one sample, got zero"),
    ([{"other": np.zeros((1, 24, 10, 10), np.float32)}], "'other' is not an input of the model"),
    ([{}], "input 'x' has no value"),
    ([{"x": np.zeros((1, 24, 9, 10), np.float32)}], "input 'x' has shape \\(1, 24, 9, 10\\)"),
    ([{"x": np.zeros((1, 24, 10, 10), np.int32)}], "input 'x' has dtype int32"),
    ([{"x": np.full((1, 24, 10, 10), np.nan, np.float32)}], "input 'x' holds NaN"),
    ([{"x": np.full((1, 24, 10, 10), np.inf, np.float32)}], "input 'x' holds NaN or infinity"),
])
def test_bad_calibration_is_a_precision_error_before_any_compile_work(monkeypatch, calib, message):
    model = two_convs(np.random.default_rng(3))

    def no_partition(*a, **k):
        raise AssertionError("compile work started")

    monkeypatch.setattr(driver, "partition", no_partition)
    with pytest.raises(PrecisionError, match=message):
        compile_model(model, config="tiny", calibration=calib)


@pytest.mark.parametrize("options, message", [
    (dict(precision="fastest"), "'fastest' is unknown; known: fast, balanced, exact"),
    (dict(latency_budget=0.9), "below 1.0, the fast program's"),
    (dict(latency_budget="soon"), "'soon' is not a number"),
    (dict(latency_budget=float("nan")), "below 1.0"),
    (dict(precision="exact", latency_budget=2.0), "applies to the balanced policy"),
    (dict(precision="balanced", split_weights=True), "cannot be combined"),
    (dict(weight_rounding="stochastic"), "'stochastic' is unknown; known: nearest, min-error"),
    (dict(precision="fast", weight_rounding="min-error"), "not by 'fast'"),
])
def test_bad_policy_is_a_precision_error_before_the_model_is_read(tmp_path, options, message):
    with pytest.raises(PrecisionError, match=message):
        compile_model(tmp_path / "missing.onnx", **options)


def test_cli_bad_precision_exit_code(tmp_path, capsys):
    src = tmp_path / "c.onnx"
    src.write_bytes(two_convs(np.random.default_rng(4)).SerializeToString())
    out = tmp_path / "c.accel"
    for args, message in ((["--precision", "turbo"], "'turbo' is unknown"),
                          (["--latency-budget", "0.5"], "below 1.0")):
        rc = cli.main(["compile", str(src), "-o", str(out), "--preset", "tiny", *args])
        err = capsys.readouterr().err
        assert rc == PrecisionError.exit_code and message in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1 and not out.exists()
    np.savez(tmp_path / "cal.npz", x=np.zeros((0, 24, 10, 10), np.float32))
    rc = cli.main(["compile", str(src), "-o", str(out), "--preset", "tiny", "--calibrate", str(tmp_path / "cal.npz")])
    assert rc == PrecisionError.exit_code and "zero" in capsys.readouterr().err and not out.exists()


# -- error-compensating rounding (calibration) ---------------------------------------------------

def test_compensated_rounding_keeps_the_bfp_grid_and_zeros():
    cfg = preset("a10")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4000, 64)) @ (np.eye(64) + 0.5 * rng.standard_normal((64, 64)) / 8)
    w = rng.standard_normal((24, 64)) * 0.1
    w[:, 5] = 0.0  # a zero column (like a padding lane or a grouped conv's expanded zeros)
    near, comp = bfp.quantize(w, cfg), bfp.quantize_compensated(w, x.T @ x, cfg)
    assert np.array_equal(comp.exp, near.exp) and np.abs(comp.mant).max() <= 2**cfg.mantissa_bits - 1
    assert (comp.mant[:, 5] == 0).all()
    err = {k: float((((bfp.dequantize(t) - w) @ x.T) ** 2).sum()) for k, t in (("near", near), ("comp", comp))}
    assert err["comp"] < 0.9 * err["near"], err  # correlated inputs: compensation pays
    assert not np.array_equal(comp.mant, near.mant)


def test_compensated_rounding_never_increases_a_layer_error_on_the_calibration_samples():
    rng = np.random.default_rng(12)
    model = two_convs(rng, cin=32, cout=48, size=16)
    calib = [{"x": (1.0 + rng.standard_normal((1, 32, 16, 16))).astype(np.float32)} for _ in range(8)]
    cm = compile_model(model, config="a10", precision="fast")
    sub = cm.partition.segments[0].subgraph(cm.partition.graph)
    plan = lower.lower_segment(sub, cm.cfg, all_float=True)
    nearest = {op.name: op.weight_values() for op in plan.ops if isinstance(op, lower.ConvOp)}
    changed = lower.compensate_rounding(plan, calib)
    ops = {op.name: op for op in plan.ops if isinstance(op, lower.ConvOp)}
    improved = 0
    for name, op in ops.items():  # each layer on its inputs as the rounded layers before it give them
        w = op.w_float.astype(np.float64)
        hess = 0.0
        for feeds in calib:
            mem = lower._loaded_memory(plan, feeds)
            for prev in plan.ops:
                if prev is op:
                    break
                lower._execute(plan, prev, mem)
            x = lower._input_windows(op, mem)
            hess = hess + x.T @ x
        chosen, near = lower.layer_error(op.weight_values(), w, hess), lower.layer_error(nearest[name], w, hess)
        assert chosen <= near, (name, chosen, near)
        assert (name in changed) == (chosen < near)
        improved += chosen < near
    assert improved >= 1


def test_calibrated_policy_compensates_and_stays_bit_exact(tmp_path):
    model = models.build("mobilenet_v2", "reduced")
    shape = compile_model(model, config="ecp5", precision="fast").inputs[0]
    rng = np.random.default_rng(8)
    calib = [{shape["name"]: rng.standard_normal(shape["shape"]).astype(np.float32)} for _ in range(4)]
    cm = compile_model(model, config="ecp5", calibration=calib, latency_budget=1.2)
    ch = choices(cm)
    assert any(c[3] == "compensated" for c in ch) and any(c[1] or c[2] for c in ch), ch
    assert "compensated rounding" in cm.report()
    got, want = run_both(cm, tmp_path)
    for out in want:
        assert got[out].tobytes() == want[out].tobytes(), out


def test_data_free_balanced_calibrates_on_synthetic_samples_deterministically(tmp_path):
    """Without calibration samples, the balanced policy rounds (compensated) and corrects biases on
    the synthetic samples: recorded as such, the same on every compile, bit-exact on the engine."""
    from accelml.compiler import precision as prec_policy

    model = models.build("mobilenet_v2", "reduced")
    a = compile_model(model, config="ecp5")
    b = compile_model(model, config="ecp5")
    assert a.bias_correction["synthetic"] and a.bias_correction["samples"] == prec_policy.SYNTHETIC_CALIBRATION
    assert a.precision["measured_on"] == "synthetic" and all(c[4] for c in choices(a))
    assert choices(a) == choices(b) and a.precision == b.precision
    for pa, pb in zip(a.segments, b.segments, strict=True):
        if pa.plan is not None:
            for x, y in zip(pa.plan.ops, pb.plan.ops, strict=True):
                if isinstance(x, lower.ConvOp):
                    assert np.array_equal(x.wq.mant, y.wq.mant) and np.array_equal(x.bias, y.bias), x.name
    got, want = run_both(a, tmp_path)
    for out in want:
        assert got[out].tobytes() == want[out].tobytes(), out


def test_weight_cache_lowers_the_same_plan():
    """Lowerings sharing a weight cache (the policy's candidates) give the plans lowered alone."""
    model = models.build("mobilenet_v2", "reduced")
    cm = compile_model(model, config="ecp5", precision="fast")
    sub = cm.partition.segments[0].subgraph(cm.partition.graph)
    cfg = preset("ecp5")
    cache: dict = {}
    kinds = [dict(), dict(split_weights=True), dict(split_weights=True, split_activations=True), dict()]
    for kw in kinds:
        cached = lower.lower_segment(sub, cfg, weight_cache=cache, **kw)
        alone = lower.lower_segment(sub, cfg, **kw)
        for x, y in zip(cached.ops, alone.ops, strict=True):
            if isinstance(x, lower.ConvOp):
                assert np.array_equal(x.wq.mant, y.wq.mant) and np.array_equal(x.wq.exp, y.wq.exp), x.name
                assert (x.wq_lo is None) == (y.wq_lo is None), x.name
                if x.wq_lo is not None:
                    assert np.array_equal(x.wq_lo.mant, y.wq_lo.mant) and np.array_equal(x.wq_lo.exp, y.wq_lo.exp)
    assert cache  # the cache was filled and used
