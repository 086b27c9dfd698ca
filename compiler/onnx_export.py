"""IR -> ONNX: export a graph (or a subset of its nodes) as an ONNX model for onnxruntime.

Used for host subgraphs after partitioning, and by the tests to run a canonical graph on
onnxruntime (a second opinion next to ``reference``). Typed nodes become their plain ONNX
equivalent (DENSE -> Gemm transB=1, AFFINE -> Mul + Add, fused activations -> a trailing
Relu / Clip / LeakyRelu); HOST nodes are emitted as they were imported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .ir import ActKind, Graph, Node, OpKind

__all__ = ["to_onnx", "IR_VERSION"]

IR_VERSION = 8  # onnxruntime reads at most IR 13; onnx writes 14 by default


class _Out:
    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, np.ndarray] = {}

    def const(self, name: str, arr: np.ndarray) -> str:
        self.inits[name] = np.asarray(arr)
        return name

    def node(self, op: str, ins: list[str], outs: list[str], name: str, **attrs) -> None:
        self.nodes.append(helper.make_node(op, ins, outs, name=name, **attrs))


def _emit_act(o: _Out, node: Node, src: str, dst: str) -> None:
    act, nm = node.act, node.name + "__act"
    if act.kind is ActKind.RELU:
        o.node("Relu", [src], [dst], nm)
    elif act.kind is ActKind.LEAKY_RELU:
        o.node("LeakyRelu", [src], [dst], nm, alpha=act.alpha)
    elif act.kind is ActKind.CLIP:
        lo = o.const(nm + "_min", np.array(act.lo, np.float32)) if act.lo != -math.inf else ""
        hi = o.const(nm + "_max", np.array(act.hi, np.float32)) if act.hi != math.inf else ""
        o.node("Clip", [src, lo, hi], [dst], nm)
    else:
        o.node("Identity", [src], [dst], nm)


def _emit(o: _Out, node: Node, graph: Graph) -> None:
    op, a, nm = node.op, node.attrs, node.name
    if op is OpKind.HOST:
        o.nodes.append(a.to_node_proto(node))
        return
    x = node.inputs[0]
    out = node.outputs[0]
    y = out if node.act.kind is ActKind.NONE else out + "__pre_act"
    if op is OpKind.CONV:
        o.node("Conv", [x, o.const(nm + "__W", a.weight), o.const(nm + "__B", a.bias)], [y], nm,
               kernel_shape=list(a.kernel), strides=list(a.strides), dilations=list(a.dilations),
               pads=[a.pads[0], a.pads[1], a.pads[2], a.pads[3]], group=a.groups)
    elif op is OpKind.DENSE:
        o.node("Gemm", [x, o.const(nm + "__W", a.weight), o.const(nm + "__B", a.bias)], [y], nm, transB=1)
    elif op in (OpKind.MAXPOOL, OpKind.AVGPOOL):
        attrs = dict(kernel_shape=list(a.kernel), strides=list(a.strides), ceil_mode=int(a.ceil_mode),
                     pads=[a.pads[0], a.pads[1], a.pads[2], a.pads[3]])
        if op is OpKind.MAXPOOL:
            attrs["dilations"] = list(a.dilations)
        else:
            attrs["count_include_pad"] = int(a.count_include_pad)
        o.node("MaxPool" if op is OpKind.MAXPOOL else "AveragePool", [x], [y], nm, **attrs)
    elif op is OpKind.GLOBAL_AVGPOOL:
        o.node("GlobalAveragePool", [x], [y], nm)
    elif op is OpKind.GLOBAL_MAXPOOL:
        o.node("GlobalMaxPool", [x], [y], nm)
    elif op is OpKind.ADD:
        o.node("Add", list(node.inputs), [y], nm)
    elif op is OpKind.CONCAT:
        o.node("Concat", list(node.inputs), [y], nm, axis=a.axis)
    elif op is OpKind.AFFINE:
        rank = graph.tensors[x].rank
        shp = (-1,) + (1,) * (rank - 1 - a.axis)
        mid = out + "__scaled"
        o.node("Mul", [x, o.const(nm + "__scale", a.scale.reshape(shp))], [mid], nm)
        o.node("Add", [mid, o.const(nm + "__shift", a.shift.reshape(shp))], [y], nm + "__add")
    elif op is OpKind.BATCHNORM:
        ins = [x] + [o.const(f"{nm}__{k}", getattr(a, k)) for k in ("gamma", "beta", "mean", "var")]
        o.node("BatchNormalization", ins, [y], nm, epsilon=a.epsilon)
    elif op is OpKind.ACT:
        y = x
    elif op is OpKind.RESHAPE:
        o.node("Reshape", [x, o.const(nm + "__shape", np.array(a.shape, np.int64))], [y], nm)
    elif op is OpKind.PAD:
        pads = np.array(list(a.before) + list(a.after), np.int64)
        o.node("Pad", [x, o.const(nm + "__pads", pads), o.const(nm + "__value", np.array(a.value, np.float32))],
               [y], nm)
    elif op is OpKind.TRANSPOSE:
        o.node("Transpose", [x], [y], nm, perm=list(a.perm))
    else:
        raise AssertionError(op)
    if y != out:
        _emit_act(o, node, y, out)


def _vi(graph: Graph, name: str) -> onnx.ValueInfoProto:
    t = graph.tensors[name]
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(t.dtype.np), list(t.shape))


def to_onnx(graph: Graph, nodes: Sequence[Node] | None = None, *, inputs: Sequence[str] | None = None,
            outputs: Sequence[str] | None = None, name: str | None = None) -> onnx.ModelProto:
    """An ONNX model of ``nodes`` (default: the whole graph) reading ``inputs`` and producing
    ``outputs`` (defaults: the graph's). Constants the nodes read become initializers."""
    nodes = list(graph.nodes if nodes is None else nodes)
    inputs = list(graph.inputs if inputs is None else inputs)
    outputs = list(graph.outputs if outputs is None else outputs)
    o = _Out()
    for n in nodes:
        _emit(o, n, graph)
    read = {i for n in nodes for i in n.inputs}
    for c in sorted(read & graph.constants.keys()):
        o.inits[c] = graph.constants[c]
    g = helper.make_graph(
        o.nodes, name or graph.name, [_vi(graph, i) for i in inputs], [_vi(graph, x) for x in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in o.inits.items()])
    # keep the source opset so HOST nodes keep their semantics; the typed exports above need 11+
    # (Clip bounds and Pad widths as inputs), so only a segment with typed nodes is raised to 11
    opsets = dict(graph.opsets)
    if any(n.op is not OpKind.HOST for n in nodes):
        opsets[""] = max(opsets.get("", 17), 11)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                          producer_name="accelml.compiler")
    m.ir_version = IR_VERSION
    return m
