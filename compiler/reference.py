"""A float32 numpy interpreter for the compiler IR: the FP32 reference every later stage is
measured against.

Every typed op is computed in float32 with the IR's semantics (NCHW activations, conv weights
(Cout, Cin/groups, kh, kw), dense weights (out, in)); HOST nodes are evaluated with ONNX's own
reference evaluator (``onnx.reference``), so a graph with host parts still runs end to end.

``run(graph, feeds)`` takes and returns arrays in the *external* layout (the layout of the source
model), applying ``Graph.input_perms`` / ``output_perms``; pass ``external=False`` to work in the
IR's own layout.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from accelml.hdl.errors import ShapeError

from .ir import Activation, ActKind, Graph, Node, OpKind, pool_out_size

__all__ = ["run", "apply_activation", "eval_node"]

F32 = np.float32


def apply_activation(x: np.ndarray, act: Activation) -> np.ndarray:
    k = act.kind
    if k is ActKind.NONE:
        return x
    if k is ActKind.RELU:
        return np.maximum(x, F32(0))
    if k is ActKind.CLIP:
        return np.minimum(np.maximum(x, F32(act.lo)), F32(act.hi))
    if k is ActKind.LEAKY_RELU:
        return np.where(x >= 0, x, x * F32(act.alpha)).astype(F32)
    raise AssertionError(k)


def _windows(x: np.ndarray, kernel, strides, dilations, out_hw) -> np.ndarray:
    """A read-only (N, C, Ho, Wo, kh, kw) view of the sliding windows of a padded x."""
    n, c = x.shape[:2]
    s = x.strides
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, strides, dilations, out_hw
    return np.lib.stride_tricks.as_strided(
        x, shape=(n, c, ho, wo, kh, kw),
        strides=(s[0], s[1], s[2] * sh, s[3] * sw, s[2] * dh, s[3] * dw), writeable=False)


def _conv(x: np.ndarray, a) -> np.ndarray:
    n, c, h, w = x.shape
    t, l, b, r = a.pads
    (kh, kw), (sh, sw), (dh, dw) = a.kernel, a.strides, a.dilations
    ho = (h + t + b - dh * (kh - 1) - 1) // sh + 1
    wo = (w + l + r - dw * (kw - 1) - 1) // sw + 1
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r))) if any(a.pads) else x
    win = _windows(np.ascontiguousarray(xp), (kh, kw), (sh, sw), (dh, dw), (ho, wo))
    g, cout = a.groups, a.out_channels
    cg, og = c // g, cout // g
    wt = a.weight
    if g == 1:
        cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * kh * kw)
        y = cols @ wt.reshape(cout, -1).T
        y = y.reshape(n, ho, wo, cout).transpose(0, 3, 1, 2)
    elif cg == 1:
        # depthwise (with channel multiplier og): output channel o reads input channel o // og
        src = win[:, np.arange(cout) // og]  # (N, Cout, Ho, Wo, kh, kw)
        y = np.zeros((n, cout, ho, wo), F32)
        for i in range(kh):
            for j in range(kw):
                y += src[..., i, j] * wt[:, 0, i, j][None, :, None, None]
    else:
        y = np.empty((n, cout, ho, wo), F32)
        for gi in range(g):
            cols = win[:, gi * cg:(gi + 1) * cg].transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, -1)
            yg = cols @ wt[gi * og:(gi + 1) * og].reshape(og, -1).T
            y[:, gi * og:(gi + 1) * og] = yg.reshape(n, ho, wo, og).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(y + a.bias[None, :, None, None], dtype=F32)


def _pool(x: np.ndarray, a, is_max: bool) -> np.ndarray:
    n, c, h, w = x.shape
    t, l, b, r = a.pads
    (kh, kw), (sh, sw), (dh, dw) = a.kernel, a.strides, a.dilations
    ho = pool_out_size(h, kh, sh, dh, t, b, a.ceil_mode)
    wo = pool_out_size(w, kw, sw, dw, l, r, a.ceil_mode)
    # extra rows/cols past the end padding that ceil_mode windows may reach (never counted)
    eh = max(0, (ho - 1) * sh + dh * (kh - 1) + 1 - (h + t + b))
    ew = max(0, (wo - 1) * sw + dw * (kw - 1) + 1 - (w + l + r))
    fill = -np.inf if is_max else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (t, b + eh), (l, r + ew)), constant_values=fill)
    win = _windows(np.ascontiguousarray(xp), (kh, kw), (sh, sw), (dh, dw), (ho, wo))
    if is_max:
        return np.ascontiguousarray(win.max(axis=(4, 5)), dtype=F32)
    total = win.sum(axis=(4, 5), dtype=F32)
    mask = np.zeros((1, 1) + xp.shape[2:], F32)
    if a.count_include_pad:
        mask[..., : t + h + b, : l + w + r] = 1
    else:
        mask[..., t: t + h, l: l + w] = 1
    count = _windows(mask, (kh, kw), (sh, sw), (dh, dw), (ho, wo)).sum(axis=(4, 5), dtype=F32)
    return np.ascontiguousarray(total / count, dtype=F32)


def _bshape(rank: int, axis: int, n: int) -> tuple[int, ...]:
    s = [1] * rank
    s[axis] = n
    return tuple(s)


def _host(node: Node, graph: Graph, args: list[np.ndarray | None]) -> list[np.ndarray]:
    import onnx
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    proto = node.attrs.to_node_proto(node)
    feeds, vis = {}, []
    for name, val in zip(node.inputs, args, strict=True):
        if name and name not in feeds:
            feeds[name] = val
            vis.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(val.dtype), val.shape))
    outs = [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.outputs]
    model = helper.make_model(
        helper.make_graph([proto], "host", vis, outs),
        opset_imports=[helper.make_opsetid(d, v) for d, v in graph.opsets.items()])
    res = ReferenceEvaluator(model).run(None, feeds)
    return [np.asarray(v) for v in res]


def eval_node(node: Node, graph: Graph, args: list[np.ndarray]) -> list[np.ndarray]:
    """Evaluate one node on concrete inputs (float32 for every typed kind)."""
    op, a = node.op, node.attrs
    if op is OpKind.HOST:
        return _host(node, graph, args)
    x = args[0]
    if op is OpKind.CONV:
        y = _conv(x, a)
    elif op is OpKind.DENSE:
        y = x @ a.weight.T + a.bias
    elif op is OpKind.MAXPOOL:
        y = _pool(x, a, True)
    elif op is OpKind.AVGPOOL:
        y = _pool(x, a, False)
    elif op is OpKind.GLOBAL_AVGPOOL:
        y = x.mean(axis=(2, 3), keepdims=True, dtype=F32)
    elif op is OpKind.GLOBAL_MAXPOOL:
        y = x.max(axis=(2, 3), keepdims=True)
    elif op is OpKind.ADD:
        y = x + args[1]
    elif op is OpKind.CONCAT:
        y = np.concatenate(args, axis=a.axis)
    elif op is OpKind.AFFINE:
        shp = _bshape(x.ndim, a.axis, x.shape[a.axis])
        y = x * a.scale.reshape(shp) + a.shift.reshape(shp)
    elif op is OpKind.BATCHNORM:
        shp = _bshape(x.ndim, 1, x.shape[1])
        inv = (F32(1) / np.sqrt(a.var + F32(a.epsilon))).astype(F32)
        y = (x - a.mean.reshape(shp)) * (inv * a.gamma).reshape(shp) + a.beta.reshape(shp)
    elif op is OpKind.ACT:
        y = x
    elif op is OpKind.RESHAPE:
        y = x.reshape(a.shape)
    elif op is OpKind.PAD:
        crop = tuple(slice(max(0, -p), d - max(0, -q)) for d, p, q in zip(x.shape, a.before, a.after, strict=True))
        y = np.pad(x[crop], [(max(0, p), max(0, q)) for p, q in zip(a.before, a.after, strict=True)],
                   constant_values=a.value)
    elif op is OpKind.TRANSPOSE:
        y = np.ascontiguousarray(x.transpose(a.perm))
    else:
        raise AssertionError(op)
    return [apply_activation(np.asarray(y, dtype=F32), node.act)]


def run(graph: Graph, feeds: Mapping[str, np.ndarray], *, external: bool = True,
        outputs: list[str] | None = None) -> dict[str, np.ndarray]:
    """Execute ``graph`` on ``feeds`` (one array per graph input); returns the graph outputs
    (or the named ``outputs``, which may be any tensors)."""
    env: dict[str, np.ndarray] = dict(graph.constants)
    for name in graph.inputs:
        if name not in feeds:
            raise ShapeError("missing feed for graph input", tensor=name)
        v = np.asarray(feeds[name])
        if external and name in graph.input_perms:
            v = v.transpose(graph.input_perms[name])
        t = graph.tensors[name]
        if tuple(v.shape) != t.shape:
            raise ShapeError(f"feed has shape {tuple(v.shape)}, the graph expects {t.shape}", tensor=name)
        env[name] = np.ascontiguousarray(v, dtype=t.dtype.np)
    wanted = list(outputs) if outputs is not None else list(graph.outputs)
    last_use: dict[str, int] = {}
    for idx, n in enumerate(graph.nodes):
        for i in n.inputs:
            last_use[i] = idx
    keep = set(wanted) | set(graph.constants)
    for idx, n in enumerate(graph.nodes):
        args = [env[i] if i else None for i in n.inputs]
        for name, val in zip(n.outputs, eval_node(n, graph, args), strict=False):
            env[name] = val
        for i in set(n.inputs):
            if last_use.get(i) == idx and i not in keep:
                env.pop(i, None)
    out = {}
    for name in wanted:
        v = env[name]
        if external and name in graph.output_perms and outputs is None:
            v = np.ascontiguousarray(v.transpose(graph.output_perms[name]))
        out[name] = v
    return out
