"""The IR: verifier invariants (each violation raises IRError naming the node), graph edits,
activation composition."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accelml.compiler import reference
from accelml.compiler.ir import (
    Activation,
    ActKind,
    ConcatAttrs,
    ConvAttrs,
    DenseAttrs,
    Graph,
    NoAttrs,
    Node,
    OpKind,
    PoolAttrs,
    ReshapeAttrs,
    node_macs,
    verify,
)
from accelml.hdl.errors import IRError

F32 = np.float32


def conv_attrs(cout=4, cin=3, k=3, **kw):
    w = np.random.default_rng(0).standard_normal((cout, cin // kw.get("groups", 1), k, k)).astype(F32)
    return ConvAttrs(w, np.zeros(cout, F32), **kw)


def small_graph() -> Graph:
    """x -> conv(+relu) -> a; a -> maxpool -> p; concat(p, p) -> c; reshape -> dense -> y."""
    g = Graph(name="small")
    g.add_tensor("x", (1, 3, 8, 8))
    g.add_tensor("a", (1, 4, 8, 8))
    g.add_tensor("p", (1, 4, 4, 4))
    g.add_tensor("c", (1, 8, 4, 4))
    g.add_tensor("f", (1, 128))
    g.add_tensor("y", (1, 10))
    g.inputs, g.outputs = ["x"], ["y"]
    g.nodes = [
        Node("conv", OpKind.CONV, ["x"], ["a"], conv_attrs(pads=(1, 1, 1, 1)), Activation.RELU),
        Node("pool", OpKind.MAXPOOL, ["a"], ["p"], PoolAttrs((2, 2), (2, 2))),
        Node("cat", OpKind.CONCAT, ["p", "p"], ["c"], ConcatAttrs(1)),
        Node("flat", OpKind.RESHAPE, ["c"], ["f"], ReshapeAttrs((1, 128))),
        Node("fc", OpKind.DENSE, ["f"], ["y"], DenseAttrs(np.ones((10, 128), F32), np.zeros(10, F32))),
    ]
    return g


def test_valid_graph_verifies_and_runs():
    g = verify(small_graph())
    y = reference.run(g, {"x": np.ones((1, 3, 8, 8), F32)})["y"]
    assert y.shape == (1, 10)
    assert g.macs() == 4 * 8 * 8 * 3 * 9 + 10 * 128
    assert node_macs(g.nodes[1], g) == 0


def mutate(fn):
    g = small_graph()
    fn(g)
    return g


BREAKAGES = {
    "undefined input": (lambda g: setattr(g.nodes[1], "inputs", ["nope"]), "pool", "not defined"),
    "out of order": (lambda g: g.nodes.reverse(), "fc", "not defined before use"),
    "declared shape": (lambda g: g.add_tensor("p", (1, 4, 5, 5)), "pool", "declared output shape"),
    "zero stride": (lambda g: setattr(g.nodes[0], "attrs", conv_attrs(strides=(0, 1), pads=(1, 1, 1, 1))),
                    "conv", "strides"),
    "negative pad": (lambda g: setattr(g.nodes[0], "attrs", conv_attrs(pads=(1, 1, -1, 1))), "conv", "pads"),
    "groups": (lambda g: setattr(g.nodes[0], "attrs", ConvAttrs(
        np.ones((4, 1, 3, 3), F32), np.zeros(4, F32), pads=(1, 1, 1, 1), groups=3)), "conv", "groups"),
    "float64 weight": (lambda g: setattr(g.nodes[4], "attrs", DenseAttrs(np.ones((10, 128)), np.zeros(10, F32))),
                       "fc", "float32"),
    "nan weight": (lambda g: g.nodes[4].attrs.weight.__setitem__((0, 0), np.nan), "fc", "NaN"),
    "bias shape": (lambda g: setattr(g.nodes[4], "attrs", DenseAttrs(np.ones((10, 128), F32), np.zeros(9, F32))),
                   "fc", "bias"),
    "act on concat": (lambda g: setattr(g.nodes[2], "act", Activation.RELU), "cat", "fused activation"),
    "clip bounds": (lambda g: setattr(g.nodes[0], "act", Activation.clip(6, 0)), "conv", "lo <= hi"),
    "attrs type": (lambda g: setattr(g.nodes[1], "attrs", NoAttrs()), "pool", "PoolAttrs"),
    "duplicate name": (lambda g: setattr(g.nodes[1], "name", "conv"), "conv", "unique"),
    "arity": (lambda g: setattr(g.nodes[4], "inputs", ["f", "f"]), "fc", "takes 1 input"),
    "pool pad >= window": (lambda g: setattr(g.nodes[1], "attrs", PoolAttrs((2, 2), (2, 2), (2, 0, 0, 0))),
                           "pool", "smaller than the window"),
    "reshape count": (lambda g: setattr(g.nodes[3], "attrs", ReshapeAttrs((1, 127))), "flat", "element count"),
    "dense rank": (lambda g: setattr(g.nodes[4], "inputs", ["c"]), "fc", "rank-2"),
}


@pytest.mark.parametrize("case", sorted(BREAKAGES))
def test_verifier_names_the_node(case):
    fn, node, msg = BREAKAGES[case]
    with pytest.raises(IRError, match=msg) as e:
        verify(mutate(fn))
    assert e.value.node == node and f"node {node!r}" in str(e.value)


def test_verifier_rejects_dangling_nodes_and_tensors():
    g = small_graph()
    g.add_tensor("extra", (1, 4, 8, 8))
    g.nodes.insert(1, Node("dead", OpKind.ACT, ["a"], ["extra"], act=Activation.RELU))
    with pytest.raises(IRError, match="dangling") as e:
        verify(g)
    assert e.value.node == "dead"
    g = small_graph()
    g.add_tensor("orphan", (1, 2))
    with pytest.raises(IRError, match="orphan"):
        verify(g)


def test_verifier_rejects_unproduced_output_and_constant_operands():
    g = small_graph()
    g.outputs = ["missing"]
    with pytest.raises(IRError, match="never produced"):
        verify(g)
    g = small_graph()
    g.constants["k"] = np.ones((1, 4, 8, 8), F32)
    g.add_tensor("k", (1, 4, 8, 8))
    g.nodes[1].inputs = ["k"]
    with pytest.raises(IRError, match="only HOST nodes read constants"):
        verify(g)


def test_toposort_prune_and_bypass():
    g = small_graph()
    g.nodes = list(reversed(g.nodes))
    g.toposort()
    assert [n.name for n in verify(g).nodes] == ["conv", "pool", "cat", "flat", "fc"]
    g.nodes.insert(2, Node("dead", OpKind.ACT, ["p"], ["unused"], act=Activation.RELU))
    g.add_tensor("unused", (1, 4, 4, 4))
    assert g.prune()
    assert "dead" not in [n.name for n in g.nodes] and "unused" not in g.tensors
    noop = Node("noop", OpKind.RESHAPE, ["y"], ["y2"], ReshapeAttrs((1, 10)))
    g.add_tensor("y2", (1, 10))
    g.nodes.append(noop)
    g.outputs = ["y2"]
    assert g.bypass(noop) and g.outputs == ["y2"] and g.nodes[-1].outputs == ["y2"]
    verify(g)


def test_copy_is_independent_of_the_original():
    g = small_graph()
    h = g.copy()
    h.nodes[0].act = Activation.NONE
    h.nodes.pop()
    assert g.nodes[0].act is Activation.RELU and len(g.nodes) == 5


# -- activations ------------------------------------------------------------------------------

acts = st.one_of(
    st.just(Activation.NONE), st.just(Activation.RELU),
    st.builds(lambda a, b: Activation.clip(min(a, b), max(a, b)),
              st.floats(-8, 8, width=32), st.floats(-8, 8, width=32)),
    st.builds(lambda b: Activation.clip(-math.inf, b), st.floats(-4, 4, width=32)),
    st.builds(Activation.leaky, st.floats(0, 1, width=32)),
)


@settings(max_examples=200, deadline=None)
@given(first=acts, second=acts)
def test_activation_composition_is_exact(first, second):
    x = np.linspace(-10, 10, 401, dtype=F32)
    merged = first.then(second)
    if merged is None:
        assert ActKind.LEAKY_RELU in (first.kind, second.kind)
        return
    want = reference.apply_activation(reference.apply_activation(x, first), second)
    np.testing.assert_array_equal(reference.apply_activation(x, merged), want)


def test_activation_composition_examples():
    assert Activation.RELU.then(Activation.RELU) is Activation.RELU
    six = Activation.clip(0, 6)
    assert Activation.RELU.then(six) == six and six.then(Activation.RELU) == six
    assert Activation.leaky(0.1).then(Activation.RELU) is Activation.RELU
    assert Activation.RELU.then(Activation.leaky(0.1)) is Activation.RELU
    assert Activation.leaky(0.1).then(six) is None
    assert str(six) == "clip(0,6)" and six.nonnegative and not Activation.leaky(0.1).nonnegative
