"""Loading: bad files and shapes raise typed errors that name the file / tensor / node; external
data, symbolic batch dims and both pad conventions load."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from compiler_util import assert_close, make_model, ort_run, random_feeds
from onnx import TensorProto, helper

from accelml.compiler import models, reference
from accelml.compiler.frontend import import_model, load_onnx, to_ir
from accelml.hdl.errors import AccelmlError, ModelFormatError, ShapeError

H = helper.make_node


def small_model():
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    return make_model([H("Conv", ["x", "w"], ["c"], pads=[1] * 4, name="conv"),
                       H("Relu", ["c"], ["y"], name="relu")], {"x": [1, 3, 6, 6]}, ["y"], {"w": w})


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "small.onnx"
    onnx.save_model(small_model(), path)
    return path


def test_loads_a_file(model_file):
    g = to_ir(model_file)
    assert [n.op.value for n in g.nodes] == ["conv"]


def test_missing_file_names_the_file(tmp_path):
    path = tmp_path / "nope.onnx"
    with pytest.raises(ModelFormatError, match="nope.onnx: no such file") as e:
        load_onnx(path)
    assert e.value.source == str(path) and e.value.exit_code == 7


def test_empty_file(tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(ModelFormatError, match="empty.onnx: the file is empty"):
        load_onnx(path)


@pytest.mark.parametrize("fraction", [0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, -1])
def test_truncated_file_names_the_file(model_file, fraction):
    data = model_file.read_bytes()
    cut = len(data) - 1 if fraction == -1 else int(len(data) * fraction)
    bad = model_file.with_name("truncated.onnx")
    bad.write_bytes(data[:cut])
    with pytest.raises(ModelFormatError) as e:
        load_onnx(bad)
    assert str(bad) in str(e.value)


@pytest.mark.parametrize("seed", range(6))
def test_garbage_bytes_name_the_file(tmp_path, seed):
    bad = tmp_path / f"garbage{seed}.onnx"
    bad.write_bytes(np.random.default_rng(seed).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    with pytest.raises(ModelFormatError, match=f"garbage{seed}.onnx"):
        load_onnx(bad)


def test_text_file_is_not_a_model(tmp_path):
    bad = tmp_path / "model.txt"
    bad.write_text("ir_version: 8\ngraph { name: 'g' }\n")
    with pytest.raises(ModelFormatError, match="model.txt"):
        load_onnx(bad)


def test_checker_failure_is_a_format_error():
    m = small_model()
    m.graph.node[1].input[0] = "undefined_tensor"
    with pytest.raises(ModelFormatError, match="checker"):
        load_onnx(m)


def test_wrong_source_type():
    with pytest.raises(TypeError, match="load_onnx takes"):
        load_onnx(3.14)


def test_zero_sized_input_dim_names_the_tensor():
    m = make_model([H("Relu", ["x"], ["y"], name="relu")], {"x": [1, 3, 0, 4]}, {"y": [1, 3, 0, 4]})
    with pytest.raises(ShapeError, match="'x'.*dimension 2 is 0") as e:
        load_onnx(m)
    assert e.value.tensor == "x"


def test_zero_sized_intermediate_names_the_tensor_and_node():
    inits = {"st": np.array([2], np.int64), "en": np.array([2], np.int64), "ax": np.array([2], np.int64)}
    m = make_model([H("Slice", ["x", "st", "en", "ax"], ["empty"], name="slice"),
                    H("Relu", ["empty"], ["y"], name="relu")], {"x": [1, 3, 4, 4]}, ["y"], inits)
    with pytest.raises(ShapeError, match="zero") as e:
        load_onnx(m)
    assert e.value.tensor == "empty" and e.value.node == "slice"


def test_dynamic_spatial_dim_names_the_tensor():
    m = make_model([H("Relu", ["x"], ["y"], name="relu")], {"x": ["N", 3, "height", 8]}, ["y"])
    with pytest.raises(ShapeError, match=r"'x'.*dimension 2 \('height'\) is dynamic") as e:
        load_onnx(m)
    assert e.value.tensor == "x" and e.value.exit_code == 8


def test_symbolic_batch_is_fixed_to_one():
    w = np.random.default_rng(1).standard_normal((4, 3, 1, 1)).astype(np.float32)
    m = make_model([H("Conv", ["x", "w"], ["y"], name="conv")], {"x": ["batch", 3, 5, 5]},
                   {"y": ["batch", 4, 5, 5]}, {"w": w})
    g = to_ir(m)
    assert g.shape("x") == (1, 3, 5, 5) and g.shape("y") == (1, 4, 5, 5)
    feeds = random_feeds(m)
    assert_close(reference.run(g, feeds), ort_run(m, feeds))


def test_data_dependent_dim_names_the_tensor():
    m = make_model([H("NonZero", ["x"], ["nz"], name="nonzero"),
                    H("Cast", ["nz"], ["y"], to=TensorProto.FLOAT, name="cast")], {"x": [1, 4]}, ["y"])
    with pytest.raises(ShapeError, match="dynamic") as e:
        load_onnx(m)
    assert e.value.tensor == "nz" and e.value.node == "nonzero"


def test_ceil_mode_pool_starting_in_padding_is_refused():
    """ONNX shape inference and onnxruntime disagree on this window count: refuse, naming it."""
    m = make_model([H("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1],
                      ceil_mode=1, name="pool")], {"x": [1, 1, 5, 5]}, ["y"])
    with pytest.raises(ShapeError, match="ceil_mode") as e:
        import_model(load_onnx(m))
    assert e.value.node == "pool"


def test_external_data_round_trip(tmp_path):
    m = models.build("mobilenet_v2")
    path = tmp_path / "mnv2.onnx"
    saved = onnx.ModelProto()
    saved.CopyFrom(m)  # save_model moves the tensors of the proto it is given out to the file
    onnx.save_model(saved, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="mnv2.data", size_threshold=256)
    assert (tmp_path / "mnv2.data").stat().st_size > path.stat().st_size
    g = to_ir(path)
    feeds = random_feeds(m)
    assert_close(reference.run(g, feeds), ort_run(m, feeds))
    # the same proto without its data folder cannot be resolved
    with pytest.raises(ModelFormatError, match="external data"):
        load_onnx(onnx.load(path, load_external_data=False))
    (tmp_path / "mnv2.data").unlink()
    with pytest.raises(ModelFormatError, match="mnv2.onnx"):
        load_onnx(path)


def test_errors_share_the_base_class():
    for cls in (ModelFormatError, ShapeError):
        assert issubclass(cls, AccelmlError) and issubclass(cls, ValueError)


def test_pad_widths_computed_by_a_constant_subgraph_are_folded_before_shape_inference():
    """The PyTorch exporter writes ZeroPad2d widths as ConstantOfShape -> Concat -> Reshape -> Slice ->
    Transpose -> Reshape -> Cast; shape inference cannot see through it, so it is evaluated first."""
    from onnx import TensorProto, helper, numpy_helper

    from accelml.compiler.frontend import to_ir

    def const(name, value):
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name))

    nodes = [
        const("n", np.array([4], np.int64)),
        helper.make_node("ConstantOfShape", ["n"], ["zeros"], value=numpy_helper.from_array(np.zeros(1, np.int64))),
        const("torch_pads", np.array([0, 1, 0, 1], np.int64)),  # (left, right, top, bottom), last dim first
        helper.make_node("Concat", ["torch_pads", "zeros"], ["cat"], axis=0),
        const("shape2", np.array([-1, 2], np.int64)),
        helper.make_node("Reshape", ["cat", "shape2"], ["pairs"]),
        const("st", np.array([-1], np.int64)), const("en", np.array([-(2**63)], np.int64)),
        const("ax", np.array([0], np.int64)), const("sp", np.array([-1], np.int64)),
        helper.make_node("Slice", ["pairs", "st", "en", "ax", "sp"], ["rev"]),
        helper.make_node("Transpose", ["rev"], ["tr"], perm=[1, 0]),
        const("flat", np.array([-1], np.int64)),
        helper.make_node("Reshape", ["tr", "flat"], ["p64"]),
        helper.make_node("Cast", ["p64"], ["pads"], to=TensorProto.INT64),
        helper.make_node("Pad", ["x", "pads"], ["xp"]),
        helper.make_node("Conv", ["xp", "w"], ["y"], strides=[2, 2]),
    ]
    w = numpy_helper.from_array(np.ones((8, 3, 3, 3), np.float32), "w")
    g = helper.make_graph(nodes, "torch_pad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    ir = to_ir(m)
    assert [n.op.value for n in ir.nodes] == ["conv"]
    assert ir.nodes[0].attrs.pads == (0, 0, 1, 1)  # bottom and right, fused into the conv
