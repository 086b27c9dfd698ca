"""ONNX conformance: onnx's backend tests of the operators accelml compiles, through AccelmlBackend.

Every test compiles the model with ``compile_model(config="wide")``, saves and reloads the package
and runs it (engine segments on the functional simulator, host segments on onnxruntime); results
must match at the suite's own tolerances (rtol 1e-3, atol 1e-7 unless a test says otherwise).

What runs
    The node tests of Conv, MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, Gemm, MatMul,
    Relu, Clip, Add, Concat, BatchNormalization, Flatten, Reshape, Pad and Softmax (host), with
    their function-expanded variants, and the PyTorch-converted model tests of the same layers
    (``INCLUDE``). Only those onnx test modules are generated (all ~1,900 node tests take ~20 s to
    build), and only the CPU variants are kept.

How the backend meets them
    Weights that the node tests feed as graph inputs are bound as constants of the call, so the
    engine computes conv / gemm / BN (``weights="host"`` runs them on onnxruntime instead; both
    are checked below). Inputs with a batch > 1 run sample by sample when the graph is
    batch-separable (``BATCH_SPLIT`` lists the tests that do).

``EXCLUDED`` names every test of those operators that does not run, with the reason; with
``ACCELML_ONNX_RUN_EXCLUDED=1`` in the environment they run too (to check a fix).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import time
import unittest

import numpy as np
import onnx
import onnx.backend.test
import onnx.backend.test.loader as onnx_test_loader
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.backend.test.runner import Runner

from accelml.compiler.frontend import load_onnx
from accelml.compiler.partition import Device
from accelml.hdl.errors import (
    AccelmlError,
    ModelFormatError,
    PackageError,
    ShapeError,
)
from accelml.runtime.onnx_backend import (
    ORT_MAX_IR_VERSION,
    AccelmlBackend,
    batch_plan,
    bind_inputs,
    parameter_inputs,
)

# onnx.backend.test.case.node modules that define the node tests of the operators above
NODE_MODULES = ("conv", "maxpool", "averagepool", "globalaveragepool", "globalmaxpool", "gemm", "matmul", "relu",
                "clip", "add", "concat", "batch_normalization", "flatten", "reshape", "pad", "softmax")

INCLUDE = (
    # node tests
    r"^test_(basic_conv|conv_with)_", r"^test_maxpool_", r"^test_averagepool_", r"^test_globalaveragepool",
    r"^test_globalmaxpool", r"^test_gemm_", r"^test_matmul_", r"^test_relu(_|$)", r"^test_clip(_|$)",
    r"^test_add(_|$)", r"^test_concat_", r"^test_batchnorm_", r"^test_flatten_", r"^test_reshape_",
    r"^test_(constant|edge|reflect|wrap)_pad", r"^test_softmax_",
    # PyTorch-converted layer tests of the same operators (models with initializer weights)
    r"^test_(Conv2d|AvgPool2d|MaxPool2d|BatchNorm2d|Linear)", r"^test_(ReLU|Softmax)_cpu$",
    r"^test_(Zero|Constant|Reflection|Replication)Pad2d_", r"^test_operator_(conv|maxpool|flatten|pad|clip)_",
    r"^test_operator_(concat2|add|addconstant|mm|addmm)(_|$)",
)

_INT = "integer element type: the package runtime takes and returns float32 only (the backend raises ModelFormatError)"

# test name (without the device suffix) -> why it does not run
EXCLUDED: dict[str, str] = {
    # -- integer / float64 types: the engine path and the package runtime are float32
    "test_maxpool_2d_uint8": _INT,
    "test_clip_default_int8_min": _INT,
    "test_clip_default_int8_min_expanded": _INT,
    "test_clip_default_int8_max": _INT,
    "test_clip_default_int8_max_expanded": _INT,
    "test_clip_default_int8_inbounds": _INT,
    "test_clip_default_int8_inbounds_expanded": _INT,
    "test_add_int8": _INT,
    "test_add_int16": _INT,
    "test_add_uint8": _INT,
    "test_add_uint16": _INT,
    "test_add_uint32": _INT,
    "test_add_uint64": _INT,
    "test_edge_pad": _INT + " (int32 data)",
    "test_reflect_pad": _INT + " (int32 data)",
    "test_wrap_pad": _INT + " (int32 data)",
    "test_operator_add_broadcast": "float64 inputs: the package runtime is float32",
    "test_operator_add_size1_broadcast": "float64 inputs: the package runtime is float32",
    "test_operator_add_size1_right_broadcast": "float64 inputs: the package runtime is float32",
    "test_operator_add_size1_singleton_broadcast": "float64 inputs: the package runtime is float32",
    "test_operator_addconstant": "float64 inputs: the package runtime is float32",
    # -- shapes the compiler rejects by contract (typed errors)
    "test_reshape_allowzero_reordered": "zero-sized tensor (dim 0 is 0): ShapeError by contract",
    "test_MaxPool2d_stride_padding_dilation": "capacity: a 1x1000x1000 pool input does not fit the wide preset's "
                                              "on-chip vector files (CapacityError)",
    # -- invalid models (the ONNX checker rejects them; accelml raises ModelFormatError)
    "test_operator_mm": "invalid model: IR 3 initializer that is not a graph input (fails the ONNX checker)",
    "test_operator_addmm": "invalid model: IR 3 initializer that is not a graph input (fails the ONNX checker)",
}

# node tests whose batch > 1 runs sample by sample (batch_plan finds the graph separable)
BATCH_SPLIT = {
    "test_gemm_default_zero_bias", "test_gemm_default_no_bias", "test_gemm_default_scalar_bias",
    "test_gemm_default_single_elem_vector_bias", "test_gemm_default_vector_bias", "test_gemm_transposeB",
    "test_gemm_alpha", "test_gemm_beta", "test_matmul_2d", "test_matmul_bcast", "test_batchnorm_example",
    "test_batchnorm_epsilon", "test_flatten_axis1", "test_flatten_default_axis", "test_flatten_negative_axis3",
    "test_concat_2d_axis_1", "test_concat_2d_axis_negative_1", "test_concat_3d_axis_2",
    "test_concat_3d_axis_negative_1", "test_reshape_reordered_last_dims", "test_reshape_reduced_dims",
    "test_reshape_extended_dims", "test_reshape_negative_dim", "test_add_bcast",
    "test_clip_example_expanded", "test_clip_expanded", "test_clip_inbounds_expanded", "test_clip_outbounds_expanded",
    "test_clip_splitbounds_expanded", "test_clip_min_greater_than_max", "test_clip_min_greater_than_max_expanded",
    "test_clip_default_min_expanded", "test_clip_default_max_expanded",
    "test_softmax_large_number", "test_softmax_large_number_expanded", "test_softmax_large_number_expanded_ver18",
    *(f"test_softmax_{a}{e}" for a in ("axis_1", "axis_2", "negative_axis", "default_axis")
      for e in ("", "_expanded", "_expanded_ver18")),
    # elementwise ops on rank-1/3 tensors (dim 0 split; they run on the host)
    "test_add", "test_clip", "test_clip_default_inbounds", "test_clip_default_inbounds_expanded",
    "test_clip_default_max", "test_clip_default_min", "test_clip_example", "test_clip_inbounds",
    "test_clip_outbounds", "test_clip_splitbounds", "test_concat_3d_axis_1", "test_concat_3d_axis_negative_2",
    "test_relu", "test_reshape_zero_and_negative_dim", "test_reshape_zero_dim",
}

# node tests whose main operator must run on the engine (a silent fall-back to the host fails here)
ON_ENGINE = (
    "test_basic_conv_with_padding", "test_basic_conv_without_padding", "test_conv_with_strides_padding",
    "test_conv_with_strides_no_padding", "test_conv_with_strides_and_asymmetric_padding",
    "test_conv_with_autopad_same", "test_maxpool_2d_default", "test_maxpool_2d_pads", "test_maxpool_2d_same_lower",
    "test_maxpool_2d_ceil", "test_maxpool_2d_dilations", "test_maxpool_2d_precomputed_same_upper",
    "test_averagepool_2d_default", "test_averagepool_2d_pads_count_include_pad", "test_averagepool_2d_same_upper",
    "test_averagepool_2d_ceil", "test_globalaveragepool", "test_globalmaxpool", "test_gemm_default_vector_bias",
    "test_gemm_transposeB", "test_gemm_alpha", "test_matmul_2d", "test_batchnorm_example", "test_flatten_axis1",
    "test_concat_2d_axis_1",
)


# -- generate the suite --------------------------------------------------------------------------

NODE_CASES: dict[str, object] = {}


@contextlib.contextmanager
def _node_tests_of(modules):
    """Let BackendTest generate only the node tests defined in these onnx test modules."""
    original = onnx_test_loader.load_node_model_tests

    def load():
        for m in modules:
            importlib.import_module(f"onnx.backend.test.case.node.{m}")
        from onnx.backend.test.case.node import _NodeTestCases

        NODE_CASES.update((tc.name, tc) for tc in _NodeTestCases)
        return list(_NodeTestCases)

    onnx_test_loader.load_node_model_tests = load
    try:
        yield
    finally:
        onnx_test_loader.load_node_model_tests = original


def _included(name: str) -> bool:
    return name.endswith("_cpu") and any(re.search(p, name) for p in INCLUDE)


def _generate() -> tuple[dict[str, type[unittest.TestCase]], set[str]]:
    """The BackendTest classes (non-empty ones only) and the base names of the tests kept."""
    with _node_tests_of(NODE_MODULES):
        backend_test = onnx.backend.test.BackendTest(AccelmlBackend, __name__)
    for pattern in INCLUDE:
        backend_test.include(pattern)
    run_excluded = bool(os.environ.get("ACCELML_ONNX_RUN_EXCLUDED"))
    classes, kept = {}, set()
    for cls_name, cls in backend_test.test_cases.items():
        for name in [n for n in vars(cls) if n.startswith("test_")]:
            if not _included(name):
                delattr(cls, name)  # other operators, other devices
                continue
            base = name.removesuffix("_cpu")
            kept.add(base)
            if base in EXCLUDED and not run_excluded:
                setattr(cls, name, unittest.skip(EXCLUDED[base])(getattr(cls, name)))
        if any(n.startswith("test_") for n in vars(cls)):
            classes[cls_name] = cls
    return classes, kept


_t0 = time.perf_counter()
_classes, GENERATED = _generate()
GENERATION_SECONDS = time.perf_counter() - _t0
globals().update(_classes)  # OnnxBackendNodeModelTest, OnnxBackendPyTorch*ModelTest
del _classes


# -- the suite's own bookkeeping -----------------------------------------------------------------

def _case(name: str):
    return NODE_CASES[name]


def _check(tc, got) -> None:
    (inputs, outputs), = tc.data_sets
    Runner.assert_similar_outputs(outputs, list(got), tc.rtol, tc.atol)


def _feeds(rep, tc) -> dict[str, np.ndarray]:
    (inputs, _), = tc.data_sets
    return dict(zip(rep.inputs, inputs, strict=True))


def test_exclusions_name_generated_tests():
    assert not set(EXCLUDED) - GENERATED, "EXCLUDED names tests that are not generated"
    assert not BATCH_SPLIT - GENERATED
    assert not set(ON_ENGINE) - GENERATED
    assert not set(ON_ENGINE) & set(EXCLUDED)
    assert len(GENERATED) >= 150


def test_generation_stays_cheap():
    assert GENERATION_SECONDS < 30, f"generating the suite took {GENERATION_SECONDS:.1f} s"


@pytest.mark.parametrize("name", ON_ENGINE)
def test_operator_runs_on_the_engine(name):
    tc = _case(name)
    rep = AccelmlBackend.prepare(tc.model)
    (inputs, _), = tc.data_sets
    _check(tc, rep.run(inputs))
    part = rep.compiled_for(_feeds(rep, tc)).compiled.partition
    assert [s.device for s in part.segments] == [Device.ENGINE], part.render()


def test_batch_split_covers_exactly_the_separable_tests():
    split = set()
    for name, tc in NODE_CASES.items():
        if name not in GENERATED or name in EXCLUDED:
            continue
        model = tc.model
        params = parameter_inputs(model)
        if params:
            (inputs, _), = tc.data_sets
            names = [vi.name for vi in model.graph.input if vi.name not in {t.name for t in model.graph.initializer}]
            values = dict(zip(names, inputs, strict=True))
            model = bind_inputs(model, {n: values[n] for n in params})
        if batch_plan(load_onnx(model)) is not None:
            split.add(name)
    assert split == BATCH_SPLIT


@pytest.mark.parametrize("name", ["test_softmax_axis_0", "test_concat_2d_axis_0", "test_flatten_axis0",
                                  "test_gemm_transposeA", "test_gemm_default_matrix_bias",
                                  "test_reshape_reordered_all_dims", "test_matmul_3d"])
def test_not_separable_graphs_run_whole(name):
    tc = _case(name)
    rep = AccelmlBackend.prepare(tc.model)
    (inputs, _), = tc.data_sets
    _check(tc, rep.run(inputs))
    assert rep.compiled_for(_feeds(rep, tc)).plan is None


def _one_node(op, shape, out_shape, inits=(), opset=18, **attrs) -> onnx.ModelProto:
    names = ["x"] + [n for n, _ in inits]
    g = helper.make_graph([helper.make_node(op, names, ["y"], **attrs)], op,
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                          [numpy_helper.from_array(np.asarray(v), n) for n, v in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize(("model", "separable"), [
    (_one_node("Transpose", [2, 3, 4], [2, 4, 3], perm=[0, 2, 1]), True),
    (_one_node("Transpose", [2, 3, 4], [3, 2, 4], perm=[1, 0, 2]), False),
    (_one_node("Squeeze", [2, 1, 4], [2, 4], [("axes", np.array([1], np.int64))]), True),
    (_one_node("Squeeze", [2, 1, 4], [2, 4]), False),  # per sample it would squeeze the batch of 1 too
    (_one_node("Reshape", [2, 3, 4], [2, 12], [("shape", np.array([2, 12], np.int64))]), True),
    (_one_node("Reshape", [2, 3, 4], [4, 6], [("shape", np.array([4, 6], np.int64))]), False),
    (_one_node("ReduceMean", [2, 3, 4], [2, 3, 1], [("axes", np.array([2], np.int64))]), True),
    (_one_node("ReduceMean", [2, 3, 4], [1, 3, 4], [("axes", np.array([0], np.int64))]), False),
    (_one_node("Pad", [2, 3], [2, 5], [("pads", np.array([0, 1, 0, 1], np.int64))]), True),
    (_one_node("Pad", [2, 3], [4, 3], [("pads", np.array([1, 0, 1, 0], np.int64))]), False),
    (_one_node("Add", [2, 3], [2, 3], [("c", np.ones((2, 3), np.float32))]), False),  # a per-row constant
    (_one_node("Add", [2, 3], [2, 3], [("c", np.ones((1, 3), np.float32))]), True),
])
def test_batch_plan_decisions(model, separable):
    assert (batch_plan(load_onnx(model)) is not None) == separable


def test_per_sample_reshape_runs_split():
    m = _one_node("Reshape", [2, 3, 4], [2, 12], [("shape", np.array([2, 12], np.int64))])
    x = np.random.default_rng(6).standard_normal((2, 3, 4)).astype(np.float32)
    rep = AccelmlBackend.prepare(m)
    (y,) = rep.run([x])
    np.testing.assert_array_equal(y, x.reshape(2, 12))
    assert rep.compiled_for({"x": x}).plan.n == 2


# -- weights fed at run time ---------------------------------------------------------------------

def test_weights_as_inputs_fall_back_to_the_host():
    tc = _case("test_conv_with_strides_padding")
    rep = AccelmlBackend.prepare(tc.model, weights="host")
    (inputs, _), = tc.data_sets
    _check(tc, rep.run(inputs))
    part = rep.compiled_for(_feeds(rep, tc)).compiled.partition
    assert [s.device for s in part.segments] == [Device.HOST]
    assert [u.reason for u in part.report.unsupported] == ["conv weight is not a constant"]


def test_bound_weights_compile_once_per_value():
    tc = _case("test_basic_conv_with_padding")
    rep = AccelmlBackend.prepare(tc.model)
    assert rep.params == ["W"]
    (inputs, _), = tc.data_sets
    x, w = inputs
    _check(tc, rep.run([x, w]))
    _check(tc, rep.run({"x": x, "W": w}))
    assert len(rep._cache) == 1
    w2 = np.random.default_rng(1).standard_normal(w.shape).astype(np.float32)
    (y2,) = rep.run([x, w2])
    assert len(rep._cache) == 2
    want = ort.InferenceSession(tc.model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x, "W": w2})[0]
    np.testing.assert_allclose(y2, want, rtol=1e-3, atol=1e-6)


# -- model forms ---------------------------------------------------------------------------------

def _conv_model(batch, opset=17, ir=8) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["y"])]
    g = helper.make_graph(nodes, "conv_net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])], [w, b])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = ir
    return m


def _ort(model, feeds):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.ir_version = min(m.ir_version, 8)
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_ir_version_14_is_lowered():
    m = _conv_model(1, opset=onnx.defs.onnx_opset_version(), ir=14)
    onnx.checker.check_model(m)
    rep = AccelmlBackend.prepare(m)
    assert rep.model.ir_version <= ORT_MAX_IR_VERSION
    assert m.ir_version == 14  # the caller's model is left alone
    x = np.random.default_rng(2).standard_normal((1, 3, 6, 6)).astype(np.float32)
    (y,) = rep.run([x])
    np.testing.assert_allclose(y, _ort(_conv_model(1), {"x": x})[0], rtol=1e-3, atol=1e-6)


def test_symbolic_batch_takes_the_fed_size_and_splits():
    m = _conv_model("N")
    rep = AccelmlBackend.prepare(m)
    x = np.random.default_rng(3).standard_normal((3, 3, 6, 6)).astype(np.float32)
    (y,) = rep.run([x])
    np.testing.assert_allclose(y, _ort(m, {"x": x})[0], rtol=1e-3, atol=1e-6)
    compiled = rep.compiled_for({"x": x})
    assert compiled.plan is not None and compiled.plan.n == 3
    assert Device.ENGINE in [s.device for s in compiled.compiled.partition.segments]


def test_model_as_bytes_and_path(tmp_path):
    m = _conv_model(2)
    x = np.random.default_rng(4).standard_normal((2, 3, 6, 6)).astype(np.float32)
    want = _ort(m, {"x": x})[0]
    path = tmp_path / "m.onnx"
    path.write_bytes(m.SerializeToString())
    for src in (m.SerializeToString(), path, str(path)):
        (y,) = AccelmlBackend.run_model(src, [x])
        np.testing.assert_allclose(y, want, rtol=1e-3, atol=1e-6)


def test_run_node():
    node = helper.make_node("Relu", ["x"], ["y"])
    x = np.random.default_rng(5).standard_normal((1, 3, 4, 4)).astype(np.float32)
    (y,) = AccelmlBackend.run_node(node, [x])
    np.testing.assert_allclose(y, np.maximum(x, 0), rtol=1e-3, atol=1e-7)  # BFP blocks: close, not exact


def test_devices():
    assert AccelmlBackend.supports_device("CPU")
    assert not AccelmlBackend.supports_device("CUDA")
    with pytest.raises(ValueError, match="CPU only"):
        AccelmlBackend.prepare(_conv_model(1), "CUDA")


# -- errors --------------------------------------------------------------------------------------

def _no_graph() -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.ir_version = 8
    return m


def _undefined_input() -> onnx.ModelProto:
    m = _conv_model(1)
    m.graph.node[1].input[0] = "nowhere"
    return m


def _zero_dim() -> onnx.ModelProto:
    m = _conv_model(1)
    m.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 0
    return m


def _int8_input() -> onnx.ModelProto:
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "int8",
                          [helper.make_tensor_value_info("x", TensorProto.INT8, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.INT8, [1, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _batched_engine_conv() -> onnx.ModelProto:
    """Conv then Softmax over the batch axis: not separable, and the conv needs the engine."""
    m = _conv_model(2)
    m.graph.node.append(helper.make_node("Softmax", ["y"], ["s"], axis=0))
    m.graph.output[0].name = "s"
    return m


@pytest.mark.parametrize(("make", "error"), [
    (lambda: b"", ModelFormatError),
    (lambda: b"\x08\x07garbage that is not a protobuf \xff\xff", ModelFormatError),
    (lambda: "/nonexistent/model.onnx", ModelFormatError),
    (lambda: 42, ModelFormatError),
    (_no_graph, ModelFormatError),
    (_undefined_input, ModelFormatError),
    (_zero_dim, ShapeError),
    (_int8_input, ModelFormatError),
], ids=["empty", "garbage", "missing-file", "not-a-model", "no-graph", "checker", "zero-dim", "int8"])
def test_bad_models_raise_typed_errors(make, error):
    with pytest.raises(error) as info:
        AccelmlBackend.prepare(make())
    assert isinstance(info.value, AccelmlError)


def test_batch_that_cannot_be_split_runs_on_the_host():
    """A conv with batch 2 feeding a softmax over the batch: the engine runs batch 1, so it goes to the host."""
    model = _batched_engine_conv()
    rep = AccelmlBackend.prepare(model)
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    import onnxruntime as ort

    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(rep.run([x])[0], want[0], rtol=1e-5, atol=1e-6)


def test_bad_run_arguments_raise_package_error():
    rep = AccelmlBackend.prepare(_conv_model(1))
    x = np.zeros((1, 3, 6, 6), np.float32)
    for bad in ([], [x, x], {"y": x}, [x.astype(np.float64)], [np.zeros((1, 3, 5, 6), np.float32)]):
        with pytest.raises(PackageError):
            rep.run(bad)
