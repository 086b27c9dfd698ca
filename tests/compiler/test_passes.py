"""Every canonicalisation pass preserves meaning: tiny graphs built with onnx.helper, in the
PyTorch (NCHW) and tf2onnx (NHWC + Transposes, BN as Mul/Add, MatMul + Add) styles, run on
onnxruntime and compared with the reference interpreter on the IR after every pass."""

from __future__ import annotations

import math

import numpy as np
import pytest
from compiler_util import compile_checked, make_model, ops
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from onnx import helper

from accelml.compiler.ir import ActKind, OpKind
from accelml.compiler.partition import check_support

H = helper.make_node
RNG = np.random.default_rng(1234)


def he(cout, cin, k, groups=1):
    fan = cin // groups * k * k
    return (RNG.standard_normal((cout, cin // groups, k, k)) * math.sqrt(2 / fan)).astype(np.float32)


def vec(n, lo=-0.5, hi=0.5):
    return RNG.uniform(lo, hi, n).astype(np.float32)


def bn_params(prefix, c):
    return {f"{prefix}_g": vec(c, 0.5, 1.5), f"{prefix}_b": vec(c), f"{prefix}_m": vec(c),
            f"{prefix}_v": vec(c, 0.5, 2.0)}


def bn(prefix, x, y):
    return H("BatchNormalization", [x] + [f"{prefix}_{k}" for k in "gbmv"], [y], name=prefix)


def only(graph, *kinds):
    return set(ops(graph)) <= {k.value for k in kinds}


# -- batch norm -----------------------------------------------------------------------------------

def test_conv_bn_relu_folds_into_one_conv():
    m = make_model([H("Conv", ["x", "w", "b"], ["c"], pads=[1] * 4, name="conv"), bn("bn", "c", "n"),
                    H("Relu", ["n"], ["y"], name="relu")],
                   {"x": [1, 3, 8, 8]}, ["y"], {"w": he(8, 3, 3), "b": vec(8), **bn_params("bn", 8)})
    g = compile_checked(m)
    assert ops(g) == {"conv": 1}
    assert g.nodes[0].act.kind is ActKind.RELU
    assert g.outputs == ["y"] and g.nodes[0].outputs == ["y"]


def test_bn_not_after_conv_becomes_affine():
    m = make_model([bn("bn", "x", "n"), H("Relu", ["n"], ["r"], name="relu"),
                    H("Conv", ["r", "w"], ["y"], name="conv")],
                   {"x": [1, 4, 5, 5]}, ["y"], {"w": he(6, 4, 1), **bn_params("bn", 4)})
    g = compile_checked(m)
    assert ops(g) == {"affine": 1, "conv": 1}
    aff = g.nodes[0]
    assert aff.op is OpKind.AFFINE and aff.act.kind is ActKind.RELU and aff.attrs.axis == 1


def test_bn_after_gemm_folds_into_dense():
    m = make_model([H("Gemm", ["x", "w", "b"], ["d"], transB=1, name="fc"), bn("bn", "d", "y")],
                   {"x": [1, 16]}, ["y"], {"w": he(10, 16, 1)[:, :, 0, 0], "b": vec(10), **bn_params("bn", 10)})
    assert ops(compile_checked(m)) == {"dense": 1}


def test_bn_after_conv_with_two_consumers_is_not_folded():
    m = make_model([H("Conv", ["x", "w"], ["c"], name="conv"), bn("bn", "c", "n"),
                    H("Add", ["c", "n"], ["y"], name="add")],
                   {"x": [1, 3, 4, 4]}, ["y"], {"w": he(3, 3, 1), **bn_params("bn", 3)})
    assert ops(compile_checked(m)) == {"conv": 1, "affine": 1, "add": 1}


@pytest.mark.parametrize("groups,mult", [(1, 1), (2, 1), (8, 1), (8, 2)])
def test_grouped_and_depthwise_conv_bn_fold(groups, mult):
    c = 8
    cout = c * mult if groups == c else c
    m = make_model([H("Conv", ["x", "w"], ["c"], pads=[1] * 4, group=groups, name="conv"),
                    bn("bn", "c", "n"), H("Clip", ["n", "lo", "hi"], ["y"], name="relu6")],
                   {"x": [1, c, 6, 6]}, ["y"],
                   {"w": he(cout, c, 3, groups), "lo": np.array(0, np.float32), "hi": np.array(6, np.float32),
                    **bn_params("bn", cout)})
    g = compile_checked(m)
    assert ops(g) == {"conv": 1}
    assert g.nodes[0].attrs.groups == groups and g.nodes[0].act.kind is ActKind.CLIP
    assert (g.nodes[0].act.lo, g.nodes[0].act.hi) == (0.0, 6.0)


# -- Keras / tf2onnx style ------------------------------------------------------------------------

def nhwc_conv(name, x, y, w, **attrs):
    """tf2onnx before its optimiser: NHWC tensors, Transposes around every conv."""
    return [H("Transpose", [x], [f"{name}_in"], perm=[0, 3, 1, 2], name=f"{name}_t_in"),
            H("Conv", [f"{name}_in", w], [f"{name}_out"], name=name, **attrs),
            H("Transpose", [f"{name}_out"], [y], perm=[0, 2, 3, 1], name=f"{name}_t_out")]


def keras_bn(name, x, y, c, nhwc=True):
    shape = (c,) if nhwc else (c, 1, 1)
    inits = {f"{name}_s": vec(c, 0.5, 1.5).reshape(shape), f"{name}_t": vec(c).reshape(shape)}
    nodes = [H("Mul", [x, f"{name}_s"], [f"{name}_m"], name=f"{name}_mul"),
             H("Add", [f"{name}_m", f"{name}_t"], [y], name=f"{name}_add")]
    return nodes, inits


def test_keras_bn_mul_add_folds_nchw():
    nodes, inits = keras_bn("bn", "c", "n", 8, nhwc=False)
    m = make_model([H("Conv", ["x", "w"], ["c"], pads=[1] * 4, name="conv"), *nodes,
                    H("Relu", ["n"], ["y"], name="relu")],
                   {"x": [1, 3, 8, 8]}, ["y"], {"w": he(8, 3, 3), **inits})
    g = compile_checked(m)
    assert ops(g) == {"conv": 1} and g.nodes[0].act.kind is ActKind.RELU


def test_tf_style_residual_block_loses_every_transpose():
    c = 8
    b1, i1 = keras_bn("bn1", "c1", "n1", c)
    b2, i2 = keras_bn("bn2", "c2", "n2", c)
    nodes = [*nhwc_conv("conv1", "x", "c1", "w1", pads=[1] * 4), *b1, H("Relu", ["n1"], ["a"], name="relu1"),
             *nhwc_conv("conv2", "a", "c2", "w2", pads=[1] * 4), *b2,
             H("Add", ["a", "n2"], ["s"], name="add"), H("Relu", ["s"], ["r"], name="relu2"),
             H("Concat", ["r", "a"], ["cat"], axis=3, name="cat"),
             H("Transpose", ["cat"], ["cat_nchw"], perm=[0, 3, 1, 2], name="pool_t_in"),
             H("MaxPool", ["cat_nchw"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
             H("Transpose", ["p"], ["y"], perm=[0, 2, 3, 1], name="pool_t_out")]
    m = make_model(nodes, {"x": [1, 8, 8, 3]}, ["y"],
                   {"w1": he(c, 3, 3), "w2": he(c, c, 3), **i1, **i2})
    g = compile_checked(m)
    assert "transpose" not in ops(g) and "affine" not in ops(g)
    assert ops(g) == {"conv": 2, "add": 1, "concat": 1, "maxpool": 1}
    assert g.input_perms == {"x": (0, 3, 1, 2)} and g.output_perms == {"y": (0, 2, 3, 1)}
    assert g.shape("x") == (1, 3, 8, 8)
    cat = next(n for n in g.nodes if n.op is OpKind.CONCAT)
    assert cat.attrs.axis == 1
    assert check_support(g).ok


def test_keras_flatten_of_spatial_map_is_absorbed_into_dense():
    """Transpose(NCHW->NHWC) -> Reshape(1, -1) -> MatMul: the dense columns are permuted."""
    nodes = [H("Conv", ["x", "w"], ["c"], name="conv"),
             H("Transpose", ["c"], ["t"], perm=[0, 2, 3, 1], name="to_nhwc"),
             H("Reshape", ["t", "shape"], ["f"], name="flatten"),
             H("MatMul", ["f", "k"], ["mm"], name="dense"), H("Add", ["mm", "bias"], ["y"], name="bias")]
    m = make_model(nodes, {"x": [1, 3, 5, 5]}, ["y"],
                   {"w": he(4, 3, 3), "shape": np.array([1, -1], np.int64),
                    "k": RNG.standard_normal((36, 7)).astype(np.float32), "bias": vec(7)})
    g = compile_checked(m)
    assert ops(g) == {"conv": 1, "reshape": 1, "dense": 1}


def test_matmul_add_becomes_dense_with_bias():
    k, b = RNG.standard_normal((16, 10)).astype(np.float32), vec(10)
    m = make_model([H("MatMul", ["x", "k"], ["mm"], name="mm"), H("Add", ["mm", "b"], ["y"], name="add")],
                   {"x": [1, 16]}, ["y"], {"k": k, "b": b})
    g = compile_checked(m)
    assert ops(g) == {"dense": 1}
    d = g.nodes[0].attrs
    assert d.weight.shape == (10, 16)
    np.testing.assert_array_equal(d.weight, k.T)
    np.testing.assert_allclose(d.bias, b, rtol=1e-7)


@pytest.mark.parametrize("trans_b,alpha,beta,cshape", [(1, 1.0, 1.0, (10,)), (0, 0.5, 2.0, (1, 10)),
                                                        (1, 1.0, 0.5, ()), (0, 1.0, 1.0, None)])
def test_gemm_variants(trans_b, alpha, beta, cshape):
    w = RNG.standard_normal((10, 16) if trans_b else (16, 10)).astype(np.float32)
    inits = {"w": w}
    ins = ["x", "w"]
    if cshape is not None:
        inits["c"] = RNG.standard_normal(cshape).astype(np.float32)
        ins.append("c")
    m = make_model([H("Gemm", ins, ["y"], transB=trans_b, alpha=alpha, beta=beta, name="fc")],
                   {"x": [1, 16]}, ["y"], inits)
    assert ops(compile_checked(m)) == {"dense": 1}


# -- constants ------------------------------------------------------------------------------------

def test_fold_constants_resolves_shape_built_reshape():
    nodes = [H("Conv", ["x", "w"], ["c"], name="conv"),
             H("Shape", ["c"], ["s"], name="shape"),
             H("Gather", ["s", "zero"], ["n"], axis=0, name="gather"),
             H("Unsqueeze", ["n", "axes"], ["nu"], name="unsqueeze"),
             H("Concat", ["nu", "minus1"], ["target"], axis=0, name="target"),
             H("Reshape", ["c", "target"], ["f"], name="reshape"),
             H("MatMul", ["f", "k"], ["y"], name="dense")]
    m = make_model(nodes, {"x": [1, 2, 3, 3]}, ["y"],
                   {"w": he(4, 2, 1), "zero": np.array(0, np.int64), "axes": np.array([0], np.int64),
                    "minus1": np.array([-1], np.int64), "k": RNG.standard_normal((36, 5)).astype(np.float32)})
    g = compile_checked(m)
    assert ops(g) == {"conv": 1, "reshape": 1, "dense": 1}
    assert not g.constants


def test_fold_constants_evaluates_constant_subexpressions():
    c1 = helper.make_tensor("c1", 1, [4, 1, 1], vec(4).tolist())
    nodes = [H("Constant", [], ["k1"], value=c1, name="const"),
             H("Mul", ["k1", "two"], ["k2"], name="mul_consts"),
             H("Sqrt", ["sq"], ["k3"], name="sqrt_const"),
             H("Add", ["x", "k2"], ["a"], name="add"), H("Mul", ["a", "k3"], ["y"], name="scale")]
    m = make_model(nodes, {"x": [1, 4, 3, 3]}, ["y"],
                   {"two": np.array(2.0, np.float32), "sq": vec(4, 1, 4).reshape(4, 1, 1)})
    g = compile_checked(m)
    assert ops(g) == {"affine": 1}


# -- pads -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("pads", [[0, 0, 1, 1, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0, 1, 1], [0, 0, 2, 0, 0, 0, 1, 3]])
def test_pad_fuses_into_conv(pads):
    m = make_model([H("Pad", ["x", "pads"], ["p"], name="pad"),
                    H("Conv", ["p", "w"], ["y"], strides=[2, 2], name="conv")],
                   {"x": [1, 3, 7, 7]}, ["y"], {"pads": np.array(pads, np.int64), "w": he(4, 3, 3)})
    g = compile_checked(m)
    assert ops(g) == {"conv": 1}
    assert g.nodes[0].attrs.pads == (pads[2], pads[3], pads[6], pads[7])


def test_zero_pad_before_maxpool_fuses_only_after_relu():
    def model(with_relu):
        nodes = [H("Conv", ["x", "w"], ["c"], name="conv")]
        src = "c"
        if with_relu:
            nodes.append(H("Relu", ["c"], ["r"], name="relu"))
            src = "r"
        nodes += [H("Pad", [src, "pads"], ["p"], name="pad"),
                  H("MaxPool", ["p"], ["y"], kernel_shape=[3, 3], strides=[2, 2], name="pool")]
        return make_model(nodes, {"x": [1, 3, 8, 8]}, ["y"],
                          {"w": he(4, 3, 1), "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)})

    fused = compile_checked(model(True))
    assert ops(fused) == {"conv": 1, "maxpool": 1}
    kept = compile_checked(model(False))  # zero padding is not max-pool padding for negatives
    assert ops(kept) == {"conv": 1, "pad": 1, "maxpool": 1}
    assert [u.name for u in check_support(kept).unsupported] == ["pad"]


def test_pad_fuses_into_avgpool_counting_the_padding():
    m = make_model([H("Pad", ["x", "pads"], ["p"], name="pad"),
                    H("AveragePool", ["p"], ["y"], kernel_shape=[3, 3], strides=[2, 2], name="pool")],
                   {"x": [1, 2, 7, 7]}, ["y"], {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)})
    g = compile_checked(m)
    assert ops(g) == {"avgpool": 1} and g.nodes[0].attrs.count_include_pad


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
@pytest.mark.parametrize("op", ["Conv", "MaxPool", "AveragePool"])
def test_auto_pad(op, auto_pad):
    if op == "Conv":
        node, inits = H("Conv", ["x", "w"], ["y"], strides=[2, 2], auto_pad=auto_pad, name="n"), {"w": he(4, 3, 4)}
    else:
        node, inits = H(op, ["x"], ["y"], kernel_shape=[4, 4], strides=[2, 2], auto_pad=auto_pad, name="n"), {}
    g = compile_checked(make_model([node], {"x": [1, 3, 9, 9]}, ["y"], inits), per_pass=False)
    assert len(g.nodes) == 1


# -- activations ----------------------------------------------------------------------------------

ACTS = {
    "relu": (lambda x, y: [H("Relu", [x], [y], name="act")], {}),
    "relu6": (lambda x, y: [H("Clip", [x, "lo", "hi"], [y], name="act")],
              {"lo": np.array(0, np.float32), "hi": np.array(6, np.float32)}),
    "clip_max_only": (lambda x, y: [H("Clip", [x, "", "hi"], [y], name="act")], {"hi": np.array(0.5, np.float32)}),
    "leaky": (lambda x, y: [H("LeakyRelu", [x], [y], alpha=0.1, name="act")], {}),
    "relu_then_clip": (lambda x, y: [H("Relu", [x], ["r1"], name="act1"),
                                     H("Clip", ["r1", "lo", "hi"], [y], name="act2")],
                       {"lo": np.array(-1, np.float32), "hi": np.array(0.7, np.float32)}),
}


@pytest.mark.parametrize("act", sorted(ACTS))
@pytest.mark.parametrize("producer", ["conv", "gemm", "add"])
def test_activation_fuses_into_producer(act, producer):
    make, inits = ACTS[act]
    if producer == "conv":
        first, inits, shape = [H("Conv", ["x", "w"], ["z"], name="p")], {**inits, "w": he(4, 3, 3)}, [1, 3, 6, 6]
    elif producer == "gemm":
        first, shape = [H("Gemm", ["x", "w"], ["z"], transB=1, name="p")], [1, 6]
        inits = {**inits, "w": RNG.standard_normal((4, 6)).astype(np.float32)}
    else:
        first, shape = [H("Add", ["x", "x2"], ["z"], name="p")], [1, 3, 4, 4]
    inputs = {"x": shape, **({"x2": shape} if producer == "add" else {})}
    g = compile_checked(make_model(first + make("z", "y"), inputs, ["y"], inits))
    assert len(g.nodes) == 1 and g.nodes[0].act.kind is not ActKind.NONE


def test_activation_not_fused_when_producer_has_other_consumers():
    m = make_model([H("Conv", ["x", "w"], ["c"], name="conv"), H("Relu", ["c"], ["r"], name="relu"),
                    H("Add", ["c", "r"], ["y"], name="add")], {"x": [1, 3, 4, 4]}, ["y"], {"w": he(3, 3, 1)})
    g = compile_checked(m)
    assert ops(g) == {"conv": 1, "act": 1, "add": 1}


def test_activation_after_concat_stays_standalone_and_supported():
    m = make_model([H("Concat", ["a", "b"], ["c"], axis=1, name="cat"),
                    H("LeakyRelu", ["c"], ["y"], alpha=0.2, name="leaky")],
                   {"a": [1, 2, 3, 3], "b": [1, 3, 3, 3]}, ["y"])
    g = compile_checked(m)
    assert ops(g) == {"concat": 1, "act": 1} and check_support(g).ok


# -- pre-processing affine folds into the first conv ---------------------------------------------------

@pytest.mark.parametrize("pads,expect", [(0, {"conv": 1}), (1, {"affine": 1, "conv": 1})])
def test_input_normalisation_folds_into_conv_without_padding(pads, expect):
    m = make_model([H("Sub", ["x", "mean"], ["s"], name="sub"), H("Div", ["s", "std"], ["n"], name="div"),
                    H("Conv", ["n", "w", "b"], ["y"], pads=[pads] * 4, name="conv")],
                   {"x": [1, 3, 6, 6]}, ["y"],
                   {"mean": vec(3).reshape(1, 3, 1, 1), "std": vec(3, 0.2, 0.3).reshape(1, 3, 1, 1),
                    "w": he(4, 3, 3), "b": vec(4)})
    assert ops(compile_checked(m)) == expect


def test_scale_only_affine_folds_into_padded_depthwise_conv():
    m = make_model([H("Mul", ["x", "s"], ["n"], name="mul"),
                    H("Conv", ["n", "w"], ["y"], pads=[1] * 4, group=4, name="dw")],
                   {"x": [1, 4, 5, 5]}, ["y"], {"s": vec(4, 0.5, 2).reshape(4, 1, 1), "w": he(4, 4, 3, 4)})
    assert ops(compile_checked(m)) == {"conv": 1}


# -- reshapes and pools ---------------------------------------------------------------------------

def test_reshape_chain_collapses():
    nodes = [H("GlobalAveragePool", ["x"], ["g"], name="gap"), H("Flatten", ["g"], ["f"], name="flatten"),
             H("Unsqueeze", ["f", "ax"], ["u"], name="unsq"), H("Squeeze", ["u", "ax"], ["s"], name="sq"),
             H("Identity", ["s"], ["i"], name="id"), H("Dropout", ["i"], ["y"], name="drop")]
    m = make_model(nodes, {"x": [1, 5, 3, 3]}, ["y"], {"ax": np.array([2], np.int64)})
    g = compile_checked(m)
    assert ops(g) == {"global_avgpool": 1, "reshape": 1}


@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_mean_over_hw_is_global_avgpool(keepdims):
    m = make_model([H("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=keepdims, name="mean")],
                   {"x": [1, 5, 4, 3]}, ["y"])
    g = compile_checked(m)
    assert "global_avgpool" in ops(g) and check_support(g).ok


POOLS = [
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    dict(kernel_shape=[2, 3], strides=[2, 1], pads=[0, 1, 1, 0]),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
]


@pytest.mark.parametrize("attrs", POOLS)
@pytest.mark.parametrize("op,extra", [("MaxPool", {}), ("MaxPool", {"dilations": [2, 2]}),
                                      ("AveragePool", {"count_include_pad": 0}),
                                      ("AveragePool", {"count_include_pad": 1})])
def test_pool_semantics(op, extra, attrs):
    m = make_model([H(op, ["x"], ["y"], name="pool", **attrs, **extra)], {"x": [1, 2, 8, 8]}, ["y"])
    g = compile_checked(m, per_pass=False)
    assert len(g.nodes) == 1


def test_global_max_pool_and_dilated_conv():
    m = make_model([H("Conv", ["x", "w", "b"], ["c"], dilations=[3, 3], pads=[3, 3, 3, 3], name="conv6"),
                    H("GlobalMaxPool", ["c"], ["y"], name="gmp")],
                   {"x": [1, 3, 9, 9]}, ["y"], {"w": he(5, 3, 3), "b": vec(5)})
    assert ops(compile_checked(m)) == {"conv": 1, "global_maxpool": 1}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(k=st.integers(1, 4), s=st.integers(1, 3), d=st.integers(1, 2),
       pads=st.tuples(*[st.integers(0, 2)] * 4), gi=st.integers(0, 2), hw=st.integers(5, 9))
def test_conv_bn_relu_any_geometry(k, s, d, pads, gi, hw):
    """Conv (any kernel/stride/dilation/asymmetric pads/groups) + BN + ReLU, folded."""
    span = d * (k - 1) + 1  # the dilated kernel must fit the padded input
    assume(span <= hw + pads[0] + pads[2] and span <= hw + 1 + pads[1] + pads[3])
    groups = [1, 2, 6][gi]
    m = make_model([H("Conv", ["x", "w"], ["c"], strides=[s, s], dilations=[d, d], pads=list(pads),
                      group=groups, name="conv"), bn("bn", "c", "n"), H("Relu", ["n"], ["y"], name="relu")],
                   {"x": [1, 6, hw, hw + 1]}, ["y"], {"w": he(6, 6, k, groups), **bn_params("bn", 6)})
    g = compile_checked(m, per_pass=False)
    assert ops(g) == {"conv": 1}
    assert g.nodes[0].attrs.pads == tuple(pads)


@pytest.mark.parametrize("opset", [10, 11, 13])
def test_older_opsets(opset):
    """Clip bounds and Pad widths as attributes (opset 10) or inputs (11+); Squeeze axes likewise."""
    if opset < 11:
        pad = H("Pad", ["x"], ["p"], pads=[0, 0, 1, 0, 0, 0, 0, 1], name="pad")
        clip = H("Clip", ["c"], ["r"], min=0.0, max=6.0, name="relu6")
        inits = {}
    else:
        pad = H("Pad", ["x", "pads"], ["p"], name="pad")
        clip = H("Clip", ["c", "lo", "hi"], ["r"], name="relu6")
        inits = {"pads": np.array([0, 0, 1, 0, 0, 0, 0, 1], np.int64), "lo": np.array(0, np.float32),
                 "hi": np.array(6, np.float32)}
    sq = (H("Squeeze", ["g", "axes"], ["f"], name="squeeze") if opset >= 13
          else H("Squeeze", ["g"], ["f"], axes=[2, 3], name="squeeze"))
    if opset >= 13:
        inits["axes"] = np.array([2, 3], np.int64)
    nodes = [pad, H("Conv", ["p", "w"], ["c"], name="conv"), clip,
             H("GlobalAveragePool", ["r"], ["g"], name="gap"), sq, H("Softmax", ["f"], ["y"], name="softmax")]
    m = make_model(nodes, {"x": [1, 3, 6, 6]}, ["y"], {"w": he(4, 3, 3), **inits}, opset=opset)
    g = compile_checked(m)
    assert ops(g) == {"conv": 1, "global_avgpool": 1, "reshape": 1, "host": 1}
    assert g.nodes[0].attrs.pads == (1, 0, 0, 1) and g.nodes[0].act.kind is ActKind.CLIP


def test_transposes_commute_with_elementwise_host_ops():
    """NHWC Div / HardSigmoid (host operators) between Transposes: the transposes still cancel,
    constants are permuted back to NCHW."""
    nodes = [*nhwc_conv("conv1", "x", "a", "w1", pads=[1] * 4),
             H("Div", ["a", "k"], ["d"], name="div_tensor_const"),
             H("HardSigmoid", ["d"], ["h"], name="hsig"),
             H("Mul", ["a", "h"], ["m"], name="gate"),
             *nhwc_conv("conv2", "m", "y", "w2")]
    m = make_model(nodes, {"x": [1, 6, 6, 3]}, ["y"],
                   {"w1": he(4, 3, 3), "w2": he(5, 4, 1), "k": vec(24, 1, 2).reshape(6, 1, 4)})
    g = compile_checked(m)
    assert "transpose" not in ops(g)
    assert [u.op_type for u in check_support(g).unsupported] == ["Div", "HardSigmoid", "Mul"]
