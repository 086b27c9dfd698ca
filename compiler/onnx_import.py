"""ONNX -> IR: one converter per ONNX operator, applied node by node.

``import_model`` expects a model that ``frontend.load_onnx`` has checked and shape-inferred (every
value has a static shape). Each ONNX node becomes the nearest typed IR node(s) when its parameters
are static (weights constant, ...); otherwise it is kept as a ``HOST`` node with the reason. The
``fold_constants`` pass calls ``lift`` again on HOST nodes once more of their inputs are constant.

Per-channel ``Mul``/``Add``/``Sub``/``Div`` by a constant become ``AFFINE``; ``Gemm`` and
``MatMul`` by a constant become ``DENSE`` (their bias ``Add`` is folded by ``fold_affine``);
``Flatten``/``Reshape``/``Squeeze``/``Unsqueeze``/``Identity``/``Dropout`` become ``RESHAPE``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from accelml.hdl.errors import ModelFormatError, ShapeError

from .ir import (
    Activation,
    AffineAttrs,
    BatchNormAttrs,
    ConcatAttrs,
    ConvAttrs,
    DenseAttrs,
    DType,
    Graph,
    HostAttrs,
    NoAttrs,
    Node,
    OpKind,
    PadAttrs,
    PoolAttrs,
    ReshapeAttrs,
    TransposeAttrs,
    pool_out_size,
)

__all__ = ["import_model", "lift", "evaluate_onnx_node", "onnx_dtype"]

F32 = np.float32


def onnx_dtype(elem_type: int, tensor: str) -> DType:
    try:
        return DType.of(helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, ValueError, TypeError):
        raise ModelFormatError(
            f"tensor {tensor!r} has element type {onnx.TensorProto.DataType.Name(elem_type)}, "
            "which accelml does not support", source="<model>") from None


def evaluate_onnx_node(proto: onnx.NodeProto, inputs: dict[str, np.ndarray],
                       opsets: dict[str, int]) -> list[np.ndarray]:
    """Evaluate one ONNX node with onnx's reference evaluator (used for constant folding)."""
    from onnx.reference import ReferenceEvaluator

    vis = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
           for k, v in inputs.items()]
    outs = [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in proto.output if o]
    model = helper.make_model(helper.make_graph([proto], "fold", vis, outs),
                              opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    return [np.asarray(v) for v in ReferenceEvaluator(model).run(None, inputs)]


class _Ctx:
    """What a converter may ask about the graph around one ONNX node."""

    def __init__(self, graph: Graph, proto: onnx.NodeProto, name: str):
        self.g, self.p, self.name = graph, proto, name
        self.attrs = {a.name: helper.get_attribute_value(a) for a in proto.attribute}
        self.ins = list(proto.input)
        self.outs = list(proto.output)

    def inp(self, i: int) -> str:
        return self.ins[i] if i < len(self.ins) else ""

    def const(self, i: int) -> np.ndarray | None:
        name = self.inp(i)
        return self.g.constants.get(name) if name else None

    def is_const(self, i: int) -> bool:
        return bool(self.inp(i)) and self.inp(i) in self.g.constants

    def shape(self, name: str) -> tuple[int, ...]:
        return self.g.tensors[name].shape

    def opset(self) -> int:
        return self.g.opsets.get("", 17)

    def attr(self, key: str, default=None):
        return self.attrs.get(key, default)

    def node(self, op: OpKind, attrs=None, inputs=None, outputs=None, act=Activation.NONE,
             suffix: str = "") -> Node:
        return Node(self.name + suffix, op, list(inputs if inputs is not None else self.ins[:1]),
                    list(outputs if outputs is not None else self.outs[:1]),
                    attrs if attrs is not None else NoAttrs(), act)


Result = list[Node] | str  # typed nodes, or the reason the op stays on the host
_CONVERTERS: dict[str, Callable[[_Ctx], Result]] = {}


def _converter(*ops: str):
    def deco(fn):
        for op in ops:
            _CONVERTERS[op] = fn
        return fn
    return deco


def _f32(arr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(arr, dtype=F32)


def _data_ok(ctx: _Ctx, *idx: int) -> str | None:
    """Reason why data input(s) can't feed a typed node, or None."""
    for i in idx:
        name = ctx.inp(i)
        if not name:
            return f"input {i} is missing"
        if name in ctx.g.constants:
            return "constant expression (evaluated by fold_constants)"
        if ctx.g.tensors[name].dtype is not DType.FLOAT32:
            return f"input {name!r} is {ctx.g.tensors[name].dtype.value}, the engine path is float32"
    return None


def _spatial_pads(ctx: _Ctx, in_hw, kernel, strides, dilations) -> tuple[int, int, int, int] | str:
    auto = ctx.attr("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("NOTSET", ""):
        pads = list(ctx.attr("pads", [0, 0, 0, 0]))
        if len(pads) != 4:
            return f"pads {pads} are not 2-D"
        return (pads[0], pads[1], pads[2], pads[3])
    if auto == "VALID":
        return (0, 0, 0, 0)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(in_hw, kernel, strides, dilations, strict=True):
            out = -(-size // s)
            total = max(0, (out - 1) * s + d * (k - 1) + 1 - size)
            small, big = total // 2, total - total // 2
            b, e = (small, big) if auto == "SAME_UPPER" else (big, small)
            begin.append(b)
            end.append(e)
        return (begin[0], begin[1], end[0], end[1])
    return f"auto_pad={auto} is not understood"


@_converter("Conv")
def _conv(ctx: _Ctx) -> Result:
    if (r := _data_ok(ctx, 0)):
        return r
    x = ctx.shape(ctx.inp(0))
    w = ctx.const(1)
    if w is None:
        return "conv weight is not a constant"
    if len(x) != 4 or w.ndim != 4:
        return f"only 2-D convolution is supported (input rank {len(x)})"
    if not np.issubdtype(w.dtype, np.floating):
        return f"conv weight is {w.dtype}, not a float type"
    b = ctx.const(2) if ctx.inp(2) else np.zeros(w.shape[0], F32)
    if b is None:
        return "conv bias is not a constant"
    strides = tuple(ctx.attr("strides", [1, 1]))
    dil = tuple(ctx.attr("dilations", [1, 1]))
    pads = _spatial_pads(ctx, x[2:], w.shape[2:], strides, dil)
    if isinstance(pads, str):
        return pads
    return [ctx.node(OpKind.CONV, ConvAttrs(_f32(w), _f32(b.reshape(-1)), strides, dil, pads,
                                             int(ctx.attr("group", 1))))]


@_converter("Gemm")
def _gemm(ctx: _Ctx) -> Result:
    if (r := _data_ok(ctx, 0)):
        return r
    bmat = ctx.const(1)
    if bmat is None:
        return "Gemm B operand is not a constant"
    if ctx.attr("transA", 0):
        return "Gemm with transA=1 is not a dense layer"
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    w = bmat if ctx.attr("transB", 0) else bmat.T
    w = w.astype(np.float64) * alpha
    m = w.shape[0]
    if ctx.inp(2):
        c = ctx.const(2)
        if c is None:
            return "Gemm C operand is not a constant"
        if c.size not in (1, m) or (c.ndim == 2 and c.shape[0] != 1):
            return f"Gemm C of shape {c.shape} is not a per-output bias"
        bias = np.broadcast_to(c.reshape(-1).astype(np.float64) * beta, (m,))
    else:
        bias = np.zeros(m)
    return [ctx.node(OpKind.DENSE, DenseAttrs(_f32(w), _f32(bias)))]


@_converter("MatMul")
def _matmul(ctx: _Ctx) -> Result:
    if (r := _data_ok(ctx, 0)):
        return r
    bmat = ctx.const(1)
    if bmat is None:
        return "MatMul of two run-time tensors is not a dense layer"
    if len(ctx.shape(ctx.inp(0))) != 2 or bmat.ndim != 2:
        return f"MatMul of rank {len(ctx.shape(ctx.inp(0)))} x {bmat.ndim} is not a dense layer"
    return [ctx.node(OpKind.DENSE, DenseAttrs(_f32(bmat.T), np.zeros(bmat.shape[1], F32)))]


def _per_channel(c: np.ndarray, xshape: tuple[int, ...]) -> tuple[int, np.ndarray] | None:
    """(axis, vector) if constant ``c`` broadcasts along exactly one axis of ``xshape``."""
    if c.ndim > len(xshape):
        return None
    cs = (1,) * (len(xshape) - c.ndim) + tuple(c.shape)
    big = [i for i, d in enumerate(cs) if d != 1]
    if any(cs[i] != xshape[i] for i in big):
        return None
    if not big:
        axis = 1 if len(xshape) >= 2 else 0
        return axis, np.full(xshape[axis], c.reshape(()), np.float64)
    if len(big) == 1:
        return big[0], c.reshape(-1).astype(np.float64)
    return None


@_converter("Add", "Sub", "Mul", "Div")
def _binary(ctx: _Ctx) -> Result:
    op = ctx.p.op_type
    ca, cb = ctx.is_const(0), ctx.is_const(1)
    if ca and cb:
        return "constant expression (evaluated by fold_constants)"
    if not ca and not cb:
        if (r := _data_ok(ctx, 0, 1)):
            return r
        if op != "Add":
            return f"{op} of two run-time tensors is not an engine operation"
        if ctx.shape(ctx.inp(0)) != ctx.shape(ctx.inp(1)):
            return (f"broadcasting Add of shapes {ctx.shape(ctx.inp(0))} and "
                    f"{ctx.shape(ctx.inp(1))} is not a residual add")
        return [ctx.node(OpKind.ADD, inputs=ctx.ins[:2])]
    xi = 1 if ca else 0
    if (r := _data_ok(ctx, xi)):
        return r
    xshape = ctx.shape(ctx.inp(xi))
    c = ctx.const(1 - xi)
    if ctx.shape(ctx.outs[0]) != xshape:
        return f"{op} by a constant broadcasts the tensor to a new shape"
    if not np.issubdtype(c.dtype, np.floating):
        return f"{op} by a {c.dtype} constant"
    pc = _per_channel(c, xshape)
    if pc is None:
        return f"{op} by a constant of shape {c.shape} that is not per-channel or scalar"
    axis, v = pc
    one, zero = np.ones_like(v), np.zeros_like(v)
    if op == "Add":
        scale, shift = one, v
    elif op == "Mul":
        scale, shift = v, zero
    elif op == "Sub":
        scale, shift = (one, -v) if xi == 0 else (-one, v)
    else:  # Div
        if xi == 1:
            return "division of a constant by a tensor is not an engine operation"
        if np.any(v == 0):
            return "division by a constant containing zero"
        scale, shift = 1.0 / v, zero
    return [ctx.node(OpKind.AFFINE, AffineAttrs(_f32(scale), _f32(shift), axis), inputs=[ctx.inp(xi)])]


@_converter("Relu", "LeakyRelu", "Clip")
def _act(ctx: _Ctx) -> Result:
    if (r := _data_ok(ctx, 0)):
        return r
    op = ctx.p.op_type
    if op == "Relu":
        act = Activation.RELU
    elif op == "LeakyRelu":
        act = Activation.leaky(ctx.attr("alpha", 0.01))
    else:
        if ctx.opset() < 11:
            lo, hi = ctx.attr("min", -math.inf), ctx.attr("max", math.inf)
        else:
            bounds = []
            for i, default in ((1, -math.inf), (2, math.inf)):
                if not ctx.inp(i):
                    bounds.append(default)
                elif ctx.is_const(i):
                    bounds.append(float(ctx.const(i).reshape(())))
                else:
                    return "Clip bounds are not constants"
            lo, hi = bounds
        if lo > hi:
            return f"Clip with min {lo} > max {hi}"
        act = Activation.RELU if (lo == 0 and hi == math.inf) else Activation.clip(lo, hi)
    return [ctx.node(OpKind.ACT, act=act)]


@_converter("BatchNormalization")
def _bn(ctx: _Ctx) -> Result:
    if (r := _data_ok(ctx, 0)):
        return r
    if ctx.attr("training_mode", 0) or len([o for o in ctx.outs if o]) > 1:
        return "BatchNormalization in training mode"
    params = [ctx.const(i) for i in range(1, 5)]
    if any(p is None for p in params):
        return "BatchNormalization parameters are not constants"
    if len(ctx.shape(ctx.inp(0))) < 2:
        return "BatchNormalization of a rank-1 tensor"
    gamma, beta, mean, var = (_f32(p.reshape(-1)) for p in params)
    return [ctx.node(OpKind.BATCHNORM, BatchNormAttrs(gamma, beta, mean, var,
                                                       float(ctx.attr("epsilon", 1e-5))))]


def _pool_common(ctx: _Ctx, is_max: bool) -> Result:
    if (r := _data_ok(ctx, 0)):
        return r
    if len([o for o in ctx.outs if o]) > 1:
        return "MaxPool with an Indices output"
    x = ctx.shape(ctx.inp(0))
    if len(x) != 4:
        return f"only 2-D pooling is supported (input rank {len(x)})"
    kernel = tuple(ctx.attr("kernel_shape"))
    strides = tuple(ctx.attr("strides", [1, 1]))
    dil = tuple(ctx.attr("dilations", [1, 1]))
    if not is_max and dil != (1, 1):
        return f"AveragePool with dilations {dil}"
    pads = _spatial_pads(ctx, x[2:], kernel, strides, dil)
    if isinstance(pads, str):
        return pads
    ceil = bool(ctx.attr("ceil_mode", 0))
    attrs = PoolAttrs(kernel, strides, pads, dil, ceil,
                      bool(ctx.attr("count_include_pad", 0)) and not is_max)
    out = ctx.shape(ctx.outs[0])
    mine = (pool_out_size(x[2], kernel[0], strides[0], dil[0], pads[0], pads[2], ceil),
            pool_out_size(x[3], kernel[1], strides[1], dil[1], pads[1], pads[3], ceil))
    if out[2:] != mine:
        raise ShapeError(
            f"ceil_mode pooling whose last window starts in the end padding: ONNX shape inference "
            f"says {out[2:]}, onnxruntime computes {mine}; re-export without ceil_mode or padding",
            tensor=ctx.outs[0], node=ctx.name)
    return [ctx.node(OpKind.MAXPOOL if is_max else OpKind.AVGPOOL, attrs)]


@_converter("MaxPool")
def _maxpool(ctx: _Ctx) -> Result:
    return _pool_common(ctx, True)


@_converter("AveragePool")
def _avgpool(ctx: _Ctx) -> Result:
    return _pool_common(ctx, False)


@_converter("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(ctx: _Ctx) -> Result:
    if (r := _data_ok(ctx, 0)):
        return r
    if len(ctx.shape(ctx.inp(0))) != 4:
        return "only 2-D global pooling is supported"
    op = OpKind.GLOBAL_AVGPOOL if ctx.p.op_type == "GlobalAveragePool" else OpKind.GLOBAL_MAXPOOL
    return [ctx.node(op)]


@_converter("ReduceMean")
def _reduce_mean(ctx: _Ctx) -> Result:
    if (r := _data_ok(ctx, 0)):
        return r
    x = ctx.shape(ctx.inp(0))
    axes = ctx.attr("axes")
    if axes is None and ctx.inp(1):
        if not ctx.is_const(1):
            return "ReduceMean axes are not constant"
        axes = ctx.const(1).reshape(-1).tolist()
    if len(x) != 4 or axes is None or sorted(a % 4 for a in axes) != [2, 3]:
        return f"ReduceMean over axes {axes} is not a global average pool"
    if ctx.attr("keepdims", 1):
        return [ctx.node(OpKind.GLOBAL_AVGPOOL)]
    mid = ctx.g.fresh_name(ctx.outs[0] + "_gap")
    ctx.g.add_tensor(mid, (x[0], x[1], 1, 1))
    return [ctx.node(OpKind.GLOBAL_AVGPOOL, outputs=[mid]),
            ctx.node(OpKind.RESHAPE, ReshapeAttrs(ctx.shape(ctx.outs[0])), inputs=[mid], suffix="_flatten")]


@_converter("Concat")
def _concat(ctx: _Ctx) -> Result:
    if (r := _data_ok(ctx, *range(len(ctx.ins)))):
        return r
    rank = len(ctx.shape(ctx.inp(0)))
    return [ctx.node(OpKind.CONCAT, ConcatAttrs(int(ctx.attr("axis")) % rank), inputs=ctx.ins)]


@_converter("Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Dropout")
def _reshape(ctx: _Ctx) -> Result:
    if (r := _data_ok(ctx, 0)):
        return r
    op = ctx.p.op_type
    if op == "Reshape" and not ctx.is_const(1):
        return "reshape target is computed at run time (folded by fold_constants when constant)"
    if op == "Dropout" and len([o for o in ctx.outs if o]) > 1:
        return "Dropout with a mask output"
    return [ctx.node(OpKind.RESHAPE, ReshapeAttrs(ctx.shape(ctx.outs[0])))]


@_converter("Pad")
def _pad(ctx: _Ctx) -> Result:
    if (r := _data_ok(ctx, 0)):
        return r
    mode = ctx.attr("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "constant":
        return f"Pad mode {mode!r} (only constant padding is an engine operation)"
    rank = len(ctx.shape(ctx.inp(0)))
    if ctx.opset() < 11:
        pads, value = list(ctx.attr("pads")), float(ctx.attr("value", 0.0))
    else:
        if not ctx.is_const(1):
            return "Pad widths are not constant"
        pads = ctx.const(1).reshape(-1).tolist()
        value = 0.0
        if ctx.inp(2):
            if not ctx.is_const(2):
                return "Pad value is not constant"
            value = float(ctx.const(2).reshape(()))
        if ctx.inp(3):
            if not ctx.is_const(3):
                return "Pad axes are not constant"
            axes = [a % rank for a in ctx.const(3).reshape(-1).tolist()]
            full = [0] * (2 * rank)
            for j, a in enumerate(axes):
                full[a], full[a + rank] = pads[j], pads[j + len(axes)]
            pads = full
    if len(pads) != 2 * rank:
        return f"Pad widths {pads} do not match rank {rank}"
    return [ctx.node(OpKind.PAD, PadAttrs(tuple(int(p) for p in pads[:rank]),
                                          tuple(int(p) for p in pads[rank:]), value))]


@_converter("Transpose")
def _transpose(ctx: _Ctx) -> Result:
    if (r := _data_ok(ctx, 0)):
        return r
    rank = len(ctx.shape(ctx.inp(0)))
    perm = tuple(ctx.attr("perm", list(range(rank))[::-1]))
    return [ctx.node(OpKind.TRANSPOSE, TransposeAttrs(perm))]


_HOST_REASONS = {
    "Softmax": "Softmax runs on the host (not an engine operation)",
    "LogSoftmax": "LogSoftmax runs on the host (not an engine operation)",
    "NonMaxSuppression": "NonMaxSuppression (box post-processing) runs on the host",
}


def lift(graph: Graph, proto: onnx.NodeProto, name: str) -> list[Node] | Node:
    """Convert one ONNX node: typed IR node(s), or a HOST node carrying the reason."""
    ctx = _Ctx(graph, proto, name)
    conv = _CONVERTERS.get(proto.op_type) if proto.domain in ("", "ai.onnx") else None
    result = conv(ctx) if conv is not None else None
    if isinstance(result, list):
        return result
    if result is None:
        if proto.domain not in ("", "ai.onnx"):
            result = f"operator of domain {proto.domain!r} is not an engine operation"
        else:
            result = _HOST_REASONS.get(proto.op_type, f"{proto.op_type} is not an engine operation")
    return Node(name, OpKind.HOST, list(proto.input), list(proto.output),
                HostAttrs(proto.op_type, proto.domain, tuple(proto.attribute), result))


def import_model(model: onnx.ModelProto) -> Graph:
    """Build the raw IR of a checked, shape-inferred model (see ``frontend.load_onnx``)."""
    og = model.graph
    g = Graph(name=og.name or "graph")
    g.opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}
    g.opsets.setdefault("", 17)
    for init in og.initializer:
        arr = numpy_helper.to_array(init)
        g.constants[init.name] = arr
        g.add_tensor(init.name, arr.shape, onnx_dtype(init.data_type, init.name))
    for vi in list(og.input) + list(og.value_info) + list(og.output):
        if vi.name in g.tensors or not vi.type.HasField("tensor_type"):
            continue
        tt = vi.type.tensor_type
        dims = tuple(d.dim_value for d in tt.shape.dim)
        g.add_tensor(vi.name, dims, onnx_dtype(tt.elem_type, vi.name))
    g.inputs = [i.name for i in og.input if i.name not in g.constants]
    taken: set[str] = set()
    for k, proto in enumerate(og.node):
        name = proto.name or f"{proto.op_type}_{k}"
        while name in taken:
            name = f"{name}_{k}"
        taken.add(name)
        for o in proto.output:
            if o and o not in g.tensors:
                raise ShapeError("no shape could be inferred for this tensor", tensor=o, node=name)
        if proto.op_type == "Constant" and proto.domain in ("", "ai.onnx"):
            (val,) = evaluate_onnx_node(proto, {}, g.opsets)
            g.constants[proto.output[0]] = val
            g.tensors[proto.output[0]] = g.tensors[proto.output[0]].__class__(
                proto.output[0], tuple(val.shape), DType.of(val.dtype))
            continue
        res = lift(g, proto, name)
        g.nodes.extend(res if isinstance(res, list) else [res])
    g.outputs = [o.name for o in og.output]
    g.prune()
    return g
