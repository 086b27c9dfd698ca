"""Canonicalisation passes on the IR.

Each pass is ``pass(graph) -> (graph, changed)``; it may rewrite ``graph`` in place and returns
it. ``PIPELINE`` is the one ordered list ``canonicalize`` runs, top to bottom, until a whole
round changes nothing. Every pass leaves a graph that ``ir.verify`` accepts.

After canonicalisation a graph of supported operators has: no BATCHNORM (folded into the conv or
dense before it, else turned into AFFINE), no per-channel Mul/Add after a conv or dense (folded
into its weights and bias), no layout TRANSPOSE between NHWC and NCHW (cancelled, pushed to the
graph boundary and recorded in ``Graph.input_perms``/``output_perms``, or absorbed into a dense
layer's weight order), no PAD in front of a conv or pool (fused into its pads), activations fused
into their producer, and no no-op or chained RESHAPE.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .ir import (
    ACT_CAPABLE,
    ActKind,
    AffineAttrs,
    ConvAttrs,
    DenseAttrs,
    DType,
    Graph,
    Node,
    OpKind,
    PoolAttrs,
    ReshapeAttrs,
    Tensor,
    TransposeAttrs,
)
from .onnx_import import evaluate_onnx_node, lift

__all__ = [
    "PIPELINE", "canonicalize", "fold_constants", "remove_transposes", "fold_batchnorm",
    "fold_affine", "fuse_pad", "fuse_activation", "simplify_reshapes",
]

Pass = Callable[[Graph], tuple[Graph, bool]]
F32 = np.float32


def _finish(g: Graph, changed: bool) -> tuple[Graph, bool]:
    g.prune()
    g.toposort()
    return g, changed


def _sole_consumer(g: Graph, cons: dict[str, list[Node]], tensor: str) -> Node | None:
    """The only node reading ``tensor`` if it is not also a graph output."""
    users = cons.get(tensor, [])
    if len(users) != 1 or tensor in g.outputs:
        return None
    return users[0]


def _absorb_into_producer(g: Graph, producer: Node, node: Node) -> None:
    """``node`` (one input, one output) has been merged into ``producer``: drop it and let the
    producer write ``node``'s output tensor."""
    old = producer.outputs[0]
    g.nodes.remove(node)
    producer.outputs = [node.outputs[0]]
    g.tensors.pop(old, None)


# -- fold_constants ----------------------------------------------------------------------------

def fold_constants(g: Graph) -> tuple[Graph, bool]:
    """Evaluate HOST nodes whose inputs are all constant (and Shape/Size of static tensors), then
    re-import HOST nodes that became liftable (e.g. a Reshape whose target was built from
    Shape/Gather/Concat)."""
    changed = False
    for node in list(g.nodes):
        if node.op is not OpKind.HOST:
            continue
        op, ins = node.attrs.op_type, [i for i in node.inputs if i]
        if op in ("Shape", "Size") and not node.attrs.domain:
            shape = g.shape(node.inputs[0])
            if op == "Size":
                vals = [np.array(int(np.prod(shape)), np.int64)]
            else:
                att = {a.name: a.i for a in node.attrs.attributes}
                r = len(shape)
                start, end = att.get("start", 0), att.get("end", r)
                vals = [np.array(shape[slice(start, end)], np.int64)]
        elif all(i in g.constants for i in ins):
            proto = node.attrs.to_node_proto(node)
            vals = evaluate_onnx_node(proto, {i: g.constants[i] for i in ins}, g.opsets)
        else:
            continue
        outs = [o for o in node.outputs if o]
        for o, v in zip(outs, vals, strict=True):
            g.constants[o] = v
            g.tensors[o] = Tensor(o, tuple(v.shape), DType.of(v.dtype))
        g.nodes.remove(node)
        changed = True
    out: list[Node] = []
    for node in g.nodes:
        if node.op is OpKind.HOST and not node.attrs.domain:
            res = lift(g, node.attrs.to_node_proto(node), node.name)
            if isinstance(res, list):
                out.extend(res)
                changed = True
                continue
        out.append(node)
    g.nodes = out
    return _finish(g, changed)


# -- remove_transposes -------------------------------------------------------------------------

def _compose(p1: tuple[int, ...], p2: tuple[int, ...]) -> tuple[int, ...]:
    """x.transpose(p1).transpose(p2) == x.transpose(_compose(p1, p2))."""
    return tuple(p1[i] for i in p2)


def _inverse(p: tuple[int, ...]) -> tuple[int, ...]:
    inv = [0] * len(p)
    for i, v in enumerate(p):
        inv[v] = i
    return tuple(inv)


def _moves_only_unit_axes(shape: tuple[int, ...], perm: tuple[int, ...]) -> bool:
    big = [p for p in perm if shape[p] != 1]
    return big == sorted(big)


_PUSHABLE = (OpKind.ACT, OpKind.AFFINE, OpKind.PAD, OpKind.ADD, OpKind.CONCAT)
# host operators that act element by element (with numpy broadcasting): a transpose commutes
_ELEMENTWISE_HOST = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sqrt", "Exp", "Log", "Neg", "Abs",
    "Reciprocal", "Sigmoid", "Tanh", "Erf", "HardSigmoid", "HardSwish", "Softplus", "Elu", "Selu",
    "Gelu", "Mish", "Sin", "Cos", "Floor", "Ceil", "Round", "Sign",
})


def _movable_operand(g: Graph, prod, cons, name: str, perm: tuple[int, ...], user: Node) -> bool:
    """Can a transpose be moved below ``user`` as far as operand ``name`` is concerned?"""
    if name in g.constants:
        return g.constants[name].ndim <= len(perm)
    s = prod.get(name)
    return (s is not None and s.op is OpKind.TRANSPOSE and s.attrs.perm == perm
            and _sole_consumer(g, cons, s.outputs[0]) is user)


def _elementwise_host(u: Node) -> bool:
    return u.op is OpKind.HOST and not u.attrs.domain and u.attrs.op_type in _ELEMENTWISE_HOST \
        and len(u.outputs) == 1


def _drop_noop_reshapes(g: Graph) -> bool:
    changed = False
    for n in [n for n in g.nodes if n.op is OpKind.RESHAPE]:
        if g.shape(n.inputs[0]) == g.shape(n.outputs[0]) and g.bypass(n):
            changed = True
    return changed


def _drop(g: Graph, node: Node) -> None:
    """Remove a node that a rewrite just made dead (its outputs are read by nothing)."""
    g.nodes.remove(node)
    for o in node.outputs:
        g.tensors.pop(o, None)


def _to_reshape(g: Graph, t: Node) -> None:
    t.op, t.attrs = OpKind.RESHAPE, ReshapeAttrs(g.shape(t.outputs[0]))
    if g.shape(t.inputs[0]) == g.shape(t.outputs[0]):
        g.bypass(t)


def _affine_on_axis(a: AffineAttrs, axis: int, shape: tuple[int, ...]) -> AffineAttrs:
    """The affine moved to ``axis``; a uniform (scalar) one is put back on the channel axis."""
    if axis != 1 and len(shape) > 1 and np.all(a.scale == a.scale[0]) and np.all(a.shift == a.shift[0]):
        return AffineAttrs(np.full(shape[1], a.scale[0], F32), np.full(shape[1], a.shift[0], F32), 1)
    return AffineAttrs(a.scale, a.shift, axis)


def _merge_duplicate_transposes(g: Graph) -> bool:
    """Transposes of one tensor with one perm (left over from fan-out) become one."""
    seen: dict[tuple, Node] = {}
    changed = False
    for t in [n for n in g.nodes if n.op is OpKind.TRANSPOSE]:
        key = (t.inputs[0], t.attrs.perm)
        if key in seen and t.outputs[0] not in g.outputs:
            g.replace_uses(t.outputs[0], seen[key].outputs[0])
            g.nodes.remove(t)
            g.tensors.pop(t.outputs[0])
            changed = True
        else:
            seen.setdefault(key, t)
    return changed


def _transpose_step(g: Graph, last_resort: bool) -> bool:
    """Apply one transpose rewrite; True if one applied. With ``last_resort`` only turn
    transposes that move size-1 axes alone into reshapes (done once nothing else applies, so
    such transposes can still cancel against their inverse first)."""
    prod, cons = g.producers(), g.consumers()
    for t in g.nodes:
        if t.op is not OpKind.TRANSPOSE:
            continue
        x, y, perm = t.inputs[0], t.outputs[0], t.attrs.perm
        xshape = g.shape(x)
        if last_resort:
            if _moves_only_unit_axes(xshape, perm):
                _to_reshape(g, t)
                return True
            continue
        if perm == tuple(range(len(perm))):
            _to_reshape(g, t)
            return True
        # transpose of a transpose
        p = prod.get(x)
        if p is not None and p.op is OpKind.TRANSPOSE:
            t.inputs = [p.inputs[0]]
            t.attrs = TransposeAttrs(_compose(p.attrs.perm, perm))
            if cons.get(x) == [t]:
                _drop(g, p)
            return True
        # graph input read only through transposes with one perm: move the layout to the host
        if x in g.inputs and x not in g.outputs and all(
                c.op is OpKind.TRANSPOSE and c.attrs.perm == perm for c in cons.get(x, [])):
            g.input_perms[x] = _compose(g.input_perms.get(x, tuple(range(len(perm)))), perm)
            g.tensors[x] = Tensor(x, g.shape(y), g.tensors[x].dtype)
            for c in cons[x]:
                c.op, c.attrs = OpKind.RESHAPE, ReshapeAttrs(g.shape(c.outputs[0]))
                g.bypass(c)
            return True
        users = cons.get(y, [])
        # graph output made by a transpose: move the layout to the host
        if (y in g.outputs and not users and x not in g.inputs and x not in g.outputs
                and x not in g.constants and g.outputs.count(y) == 1):
            g.output_perms[y] = _compose(perm, g.output_perms.get(y, tuple(range(len(perm)))))
            g.nodes.remove(t)
            g.tensors.pop(y)
            g.rename(x, y)
            return True
        if y in g.outputs or not users:
            continue
        # fan-out: one transpose per consumer, so each can move on its own
        if len(users) > 1:
            for k, u in enumerate(users[1:], 1):
                name = g.fresh_name(f"{y}_c{k}")
                g.add_tensor(name, g.shape(y), g.tensors[y].dtype)
                clone = Node(g.fresh_name(f"{t.name}_c{k}"), OpKind.TRANSPOSE, [x], [name], t.attrs)
                g.nodes.insert(g.nodes.index(t) + 1, clone)
                u.inputs = [name if i == y else i for i in u.inputs]
            return True
        (u,) = users
        # transpose -> flatten -> dense: permute the dense weight columns instead
        if u.op is OpKind.RESHAPE and perm[0] == 0 and len(g.shape(u.outputs[0])) == 2:
            d = _sole_consumer(g, cons, u.outputs[0])
            if d is not None and d.op is OpKind.DENSE and g.shape(u.outputs[0])[0] == xshape[0]:
                src = np.arange(int(np.prod(xshape[1:]))).reshape(xshape[1:])
                order = src.transpose([q - 1 for q in perm[1:]]).reshape(-1)
                w = np.empty_like(d.attrs.weight)
                w[:, order] = d.attrs.weight
                d.attrs = DenseAttrs(w, d.attrs.bias)
                u.inputs = [x]
                _drop(g, t)
                return True
        if (u.op not in _PUSHABLE and not _elementwise_host(u)) or y in g.outputs:
            continue
        # push the transpose below an element-wise / axis-aware consumer
        operands = u.inputs
        dead: list[Node] = []
        if u.op is OpKind.HOST:
            # every run-time operand must come through the same transpose; constants are
            # transposed back (after numpy-style right-aligned broadcasting)
            if len(g.shape(u.outputs[0])) != len(perm) or not all(
                    _movable_operand(g, prod, cons, i, perm, u) for i in operands):
                continue
            new_inputs = []
            for i in operands:
                if i in g.constants:
                    c = g.constants[i]
                    c = c.reshape((1,) * (len(perm) - c.ndim) + c.shape).transpose(_inverse(perm))
                    name = g.fresh_name(f"{i}_nchw")
                    g.constants[name] = np.ascontiguousarray(c)
                    g.add_tensor(name, c.shape, DType.of(c.dtype))
                    new_inputs.append(name)
                else:
                    new_inputs.append(prod[i].inputs[0])
                    dead.append(prod[i])
        elif u.op in (OpKind.ADD, OpKind.CONCAT):
            srcs = [prod.get(i) for i in operands]
            if not all(s is not None and s.op is OpKind.TRANSPOSE and s.attrs.perm == perm
                       and _sole_consumer(g, cons, s.outputs[0]) is u for s in srcs):
                continue
            new_inputs = [s.inputs[0] for s in srcs]
            dead = srcs
        else:
            new_inputs = [x]
            dead = [t]
        inv = _inverse(perm)
        out = u.outputs[0]
        oshape = g.shape(out)
        mid = g.fresh_name(f"{out}_nchw")
        g.add_tensor(mid, tuple(oshape[i] for i in inv), g.tensors[out].dtype)
        a = u.attrs
        if u.op is OpKind.AFFINE:
            u.attrs = _affine_on_axis(a, perm[a.axis], g.shape(mid))
        elif u.op is OpKind.CONCAT:
            u.attrs = type(a)(perm[a.axis])
        elif u.op is OpKind.PAD:
            before, after = [0] * len(perm), [0] * len(perm)
            for i, q in enumerate(perm):
                before[q], after[q] = a.before[i], a.after[i]
            u.attrs = type(a)(tuple(before), tuple(after), a.value)
        u.inputs = new_inputs
        u.outputs = [mid]
        pushed = Node(g.fresh_name(f"{t.name}_pushed"), OpKind.TRANSPOSE, [mid], [out], TransposeAttrs(perm))
        g.nodes.insert(g.nodes.index(u) + 1, pushed)  # the order stays topological
        for d in {id(n): n for n in dead}.values():
            _drop(g, d)
        return True
    return False


def remove_transposes(g: Graph) -> tuple[Graph, bool]:
    """Remove layout transposes (tf2onnx NHWC <-> NCHW): cancel pairs, push transposes through
    element-wise ops, adds and concats, move the ones at graph inputs/outputs to the host
    (``input_perms``/``output_perms``), fold transpose+flatten into the next dense layer, and turn
    transposes that only move size-1 axes into reshapes."""
    changed = _drop_noop_reshapes(g)
    while _transpose_step(g, False) or _transpose_step(g, True):
        changed = True
    changed |= _merge_duplicate_transposes(g)
    return _finish(g, changed)


# -- fold_batchnorm ----------------------------------------------------------------------------

def _scale_producer(p: Node, scale: np.ndarray, shift: np.ndarray) -> None:
    """Fold a per-output-channel ``y * scale + shift`` into a conv or dense (float64 math)."""
    a = p.attrs
    w = a.weight.astype(np.float64) * scale.reshape((-1,) + (1,) * (a.weight.ndim - 1))
    b = a.bias.astype(np.float64) * scale + shift
    if p.op is OpKind.CONV:
        p.attrs = ConvAttrs(w.astype(F32), b.astype(F32), a.strides, a.dilations, a.pads, a.groups)
    else:
        p.attrs = DenseAttrs(w.astype(F32), b.astype(F32))


def fold_batchnorm(g: Graph) -> tuple[Graph, bool]:
    """Fold BatchNormalization into the conv/dense before it; any other BN becomes AFFINE."""
    changed = False
    for bn in [n for n in g.nodes if n.op is OpKind.BATCHNORM]:
        prod, cons = g.producers(), g.consumers()
        scale, shift = bn.attrs.scale_shift()
        p = prod.get(bn.inputs[0])
        if (p is not None and p.op in (OpKind.CONV, OpKind.DENSE) and p.act.kind is ActKind.NONE
                and _sole_consumer(g, cons, p.outputs[0]) is bn):
            _scale_producer(p, scale, shift)
            p.act = bn.act
            _absorb_into_producer(g, p, bn)
        else:
            bn.op, bn.attrs = OpKind.AFFINE, AffineAttrs(scale.astype(F32), shift.astype(F32), 1)
        changed = True
    return _finish(g, changed)


# -- fold_affine -------------------------------------------------------------------------------

def _fold_affine_into_consumer(g: Graph, aff: Node, c: Node) -> bool:
    """y = op(x * s + t) for a conv/dense op reading the affine's output: fold s, t into op."""
    a, s, t = c.attrs, aff.attrs.scale.astype(np.float64), aff.attrs.shift.astype(np.float64)
    if c.op is OpKind.DENSE:
        w = a.weight.astype(np.float64)
        c.attrs = DenseAttrs((w * s[None, :]).astype(F32), (a.bias + w @ t).astype(F32))
        return True
    if c.op is OpKind.CONV and (not any(a.pads) or not np.any(t)):
        cout, cin_g = a.weight.shape[:2]
        og = cout // a.groups
        # input channel read by weight[o, j] is (o // og) * cin_g + j
        idx = (np.arange(cout) // og)[:, None] * cin_g + np.arange(cin_g)[None, :]
        w = a.weight.astype(np.float64)
        bias = a.bias + np.einsum("ojhw,oj->o", w, t[idx])
        w = w * s[idx][:, :, None, None]
        c.attrs = ConvAttrs(w.astype(F32), bias.astype(F32), a.strides, a.dilations, a.pads, a.groups)
        return True
    return False


def fold_affine(g: Graph) -> tuple[Graph, bool]:
    """Fold per-channel constant Mul/Add (AFFINE): into the conv/dense before it (Keras BN as
    Mul+Add, a MatMul's bias Add), into the one before it if that is an AFFINE too, or into the
    conv/dense after it when that is exact (no zero padding of a shifted input)."""
    changed = False
    again = True
    while again:
        again = False
        prod, cons = g.producers(), g.consumers()
        for aff in [n for n in g.nodes if n.op is OpKind.AFFINE]:
            a = aff.attrs
            p = prod.get(aff.inputs[0])
            if (p is not None and p.act.kind is ActKind.NONE and a.axis == 1
                    and _sole_consumer(g, cons, p.outputs[0]) is aff):
                if p.op in (OpKind.CONV, OpKind.DENSE):
                    _scale_producer(p, a.scale.astype(np.float64), a.shift.astype(np.float64))
                    p.act = aff.act
                    _absorb_into_producer(g, p, aff)
                    again = changed = True
                    break
                if p.op is OpKind.AFFINE and p.attrs.axis == a.axis:
                    s1, t1 = p.attrs.scale.astype(np.float64), p.attrs.shift.astype(np.float64)
                    s2, t2 = a.scale.astype(np.float64), a.shift.astype(np.float64)
                    p.attrs = AffineAttrs((s1 * s2).astype(F32), (t1 * s2 + t2).astype(F32), a.axis)
                    p.act = aff.act
                    _absorb_into_producer(g, p, aff)
                    again = changed = True
                    break
            c = _sole_consumer(g, cons, aff.outputs[0])
            if (c is not None and aff.act.kind is ActKind.NONE and a.axis == 1
                    and c.op in (OpKind.CONV, OpKind.DENSE) and _fold_affine_into_consumer(g, aff, c)):
                if not g.bypass(aff):
                    raise AssertionError("an affine with one consumer can always be bypassed")
                again = changed = True
                break
    return _finish(g, changed)


# -- fuse_pad ----------------------------------------------------------------------------------

def _spatial_pad(a) -> tuple[int, int, int, int] | None:
    if len(a.before) != 4 or any(a.before[:2]) or any(a.after[:2]):
        return None
    t, l = a.before[2:]
    b, r = a.after[2:]
    if min(t, l, b, r) < 0:
        return None
    return (t, l, b, r)


def _pool_pads_ok(attrs: PoolAttrs, pads) -> bool:
    k = attrs.kernel
    d = attrs.dilations
    return all(p < d[i % 2] * (k[i % 2] - 1) + 1 for i, p in enumerate(pads))


def fuse_pad(g: Graph) -> tuple[Graph, bool]:
    """Fuse a constant spatial Pad into the pads of the convs / pools that read it (zero padding
    before max-pooling only when the padded values are known to be >= 0)."""
    changed = False
    prod, cons = g.producers(), g.consumers()
    for pad in [n for n in g.nodes if n.op is OpKind.PAD]:
        extra = _spatial_pad(pad.attrs)
        if extra is None:
            continue
        if not any(extra):
            if g.bypass(pad):
                changed = True
            continue
        x, val = pad.inputs[0], pad.attrs.value
        src = prod.get(x)
        nonneg = src is not None and (src.act.nonnegative or (
            src.op in (OpKind.MAXPOOL, OpKind.GLOBAL_MAXPOOL) and prod.get(src.inputs[0]) is not None
            and prod[src.inputs[0]].act.nonnegative))
        for c in cons.get(pad.outputs[0], []):
            a = c.attrs
            if c.op is OpKind.CONV and val == 0.0:
                pads = tuple(p + e for p, e in zip(a.pads, extra, strict=True))
                c.attrs = ConvAttrs(a.weight, a.bias, a.strides, a.dilations, pads, a.groups)
            elif c.op is OpKind.MAXPOOL and (val == -np.inf or (val == 0.0 and nonneg)):
                pads = tuple(p + e for p, e in zip(a.pads, extra, strict=True))
                if not _pool_pads_ok(a, pads):
                    continue
                c.attrs = PoolAttrs(a.kernel, a.strides, pads, a.dilations, a.ceil_mode, False)
            elif (c.op is OpKind.AVGPOOL and val == 0.0 and not a.ceil_mode
                  and (a.count_include_pad or not any(a.pads))):
                pads = tuple(p + e for p, e in zip(a.pads, extra, strict=True))
                if not _pool_pads_ok(a, pads):
                    continue
                c.attrs = PoolAttrs(a.kernel, a.strides, pads, a.dilations, False, True)
            else:
                continue
            c.inputs = [x if i == pad.outputs[0] else i for i in c.inputs]
            changed = True
    return _finish(g, changed)


# -- fuse_activation ---------------------------------------------------------------------------

def fuse_activation(g: Graph) -> tuple[Graph, bool]:
    """Fuse a stand-alone Relu / Clip / LeakyRelu into the node that produces its input."""
    changed = False
    for node in [n for n in g.nodes if n.op is OpKind.ACT]:
        if node.act.kind is ActKind.NONE:
            if g.bypass(node):
                changed = True
            continue
        prod, cons = g.producers(), g.consumers()
        p = prod.get(node.inputs[0])
        if p is None or p.op not in ACT_CAPABLE or _sole_consumer(g, cons, p.outputs[0]) is not node:
            continue
        merged = p.act.then(node.act)
        if merged is None:
            continue
        p.act = merged
        _absorb_into_producer(g, p, node)
        changed = True
    return _finish(g, changed)


# -- simplify_reshapes -------------------------------------------------------------------------

def simplify_reshapes(g: Graph) -> tuple[Graph, bool]:
    """Drop reshapes that change nothing and merge reshape chains."""
    changed = False
    for node in [n for n in g.nodes if n.op is OpKind.RESHAPE]:
        prod = g.producers()
        p = prod.get(node.inputs[0])
        if p is not None and p.op is OpKind.RESHAPE:
            node.inputs = [p.inputs[0]]
            changed = True
        if g.shape(node.inputs[0]) == g.shape(node.outputs[0]) and g.bypass(node):
            changed = True
    return _finish(g, changed)


PIPELINE: list[Pass] = [
    fold_constants,
    remove_transposes,
    fold_batchnorm,
    fold_affine,
    fuse_pad,
    fuse_activation,
    simplify_reshapes,
]


def canonicalize(g: Graph, *, after_pass: Callable[[str, Graph], None] | None = None,
                 max_rounds: int = 10) -> Graph:
    """Run ``PIPELINE`` in order until a whole round changes nothing. ``after_pass(name, graph)``
    is called after every pass (tests use it to run the verifier)."""
    for _ in range(max_rounds):
        any_change = False
        for p in PIPELINE:
            g, changed = p(g)
            any_change |= changed
            if after_pass is not None:
                after_pass(p.__name__, g)
        if not any_change:
            break
    return g
