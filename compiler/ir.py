"""The compiler's typed IR: the engine-relevant view of a CNN graph.

Conventions (the contract with lowering and the simulators):

* Activations are **NCHW** (rank 4) or **(N, features)** (rank 2), float32. A graph whose source
  was NHWC (tf2onnx) is rewritten to NCHW by the frontend; the permutation the host applies to a
  graph input or output is recorded in ``Graph.input_perms`` / ``Graph.output_perms``.
* Conv weights are float32 arrays of shape **(Cout, Cin/groups, kh, kw)**, conv and dense biases
  float32 **(Cout,)** and always present (zeros when the source had none).
* Dense weights are float32 **(out_features, in_features)**: ``y = x @ weight.T + bias``.
* Weights live inside the node attributes (``ConvAttrs.weight`` ...), never as graph tensors.
  ``Graph.constants`` holds only the constant operands of ``HOST`` nodes (shape tensors, ...).
  Passes replace arrays, they never write into one, so copies of a graph may share arrays.
* ``Graph.nodes`` is always in topological order: walk it front to back. ``verify`` checks it.
* Every node carries a fused ``act`` (``Activation``); it is applied last:
  ``y = act(op(x))``. Only ``ACT_CAPABLE`` kinds may carry one other than ``Activation.NONE``.

Op kinds that canonicalisation removes (``BATCHNORM``, ``PAD``, ``TRANSPOSE``) are still legal IR
so that every stage of the pipeline can be verified; ``HOST`` wraps an ONNX operator the IR does
not model (it runs on onnxruntime after partitioning).
"""

from __future__ import annotations

import copy
import enum
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from accelml.hdl.errors import IRError

__all__ = [
    "DType", "Tensor", "OpKind", "ActKind", "Activation", "ConvAttrs", "DenseAttrs", "PoolAttrs",
    "ConcatAttrs", "AffineAttrs", "BatchNormAttrs", "PadAttrs", "TransposeAttrs", "ReshapeAttrs",
    "HostAttrs", "NoAttrs", "Node", "Graph", "ACT_CAPABLE", "ATTRS_TYPE", "infer_shapes",
    "node_macs", "verify", "conv_out_size", "pool_out_size",
]


class DType(enum.Enum):
    """Element types a tensor can have (the engine path is FLOAT32 only)."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"
    FLOAT64 = "float64"
    INT8 = "int8"
    UINT8 = "uint8"
    INT16 = "int16"
    INT32 = "int32"
    INT64 = "int64"
    BOOL = "bool"

    @property
    def np(self) -> np.dtype:
        return np.dtype(self.value)

    @classmethod
    def of(cls, dtype) -> DType:
        return cls(np.dtype(dtype).name)


@dataclass(frozen=True)
class Tensor:
    """A named value with a static shape (every dim >= 1)."""

    name: str
    shape: tuple[int, ...]
    dtype: DType = DType.FLOAT32

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)


class OpKind(enum.Enum):
    CONV = "conv"                       # ConvAttrs; 1 input (N,C,H,W)
    DENSE = "dense"                     # DenseAttrs; 1 input (N,K)
    MAXPOOL = "maxpool"                 # PoolAttrs
    AVGPOOL = "avgpool"                 # PoolAttrs
    GLOBAL_AVGPOOL = "global_avgpool"   # NoAttrs; (N,C,H,W) -> (N,C,1,1)
    GLOBAL_MAXPOOL = "global_maxpool"   # NoAttrs
    ADD = "add"                         # NoAttrs; 2 inputs of one shape (residual add)
    CONCAT = "concat"                   # ConcatAttrs
    AFFINE = "affine"                   # AffineAttrs; per-channel x * scale + shift (mul/add by const)
    ACT = "act"                         # NoAttrs; a stand-alone activation (see Node.act)
    RESHAPE = "reshape"                 # ReshapeAttrs; flatten / squeeze / reshape, row-major
    BATCHNORM = "batchnorm"             # BatchNormAttrs; removed by canonicalisation
    PAD = "pad"                         # PadAttrs; constant pad; fused into conv/pool when possible
    TRANSPOSE = "transpose"             # TransposeAttrs; layout transposes are removed
    HOST = "host"                       # HostAttrs; an ONNX operator the IR does not model


class ActKind(enum.Enum):
    NONE = "none"
    RELU = "relu"
    CLIP = "clip"              # min(max(x, lo), hi), lo may be -inf and hi +inf
    LEAKY_RELU = "leaky_relu"  # x if x >= 0 else alpha * x


@dataclass(frozen=True)
class Activation:
    """A fused element-wise activation applied to a node's result."""

    kind: ActKind = ActKind.NONE
    lo: float = 0.0
    hi: float = 0.0
    alpha: float = 0.0

    NONE: ClassVar[Activation]  # Activation() -- set below
    RELU: ClassVar[Activation]  # Activation(ActKind.RELU)

    @staticmethod
    def clip(lo: float, hi: float) -> Activation:
        return Activation(ActKind.CLIP, lo=float(lo), hi=float(hi))

    @staticmethod
    def leaky(alpha: float) -> Activation:
        return Activation(ActKind.LEAKY_RELU, alpha=float(alpha))

    def _as_clip(self) -> tuple[float, float] | None:
        if self.kind is ActKind.RELU:
            return 0.0, math.inf
        if self.kind is ActKind.CLIP:
            return self.lo, self.hi
        return None

    def then(self, after: Activation) -> Activation | None:
        """The single activation equal to ``after(self(x))``, or None if there is none."""
        if after.kind is ActKind.NONE:
            return self
        if self.kind is ActKind.NONE:
            return after
        if self.kind is ActKind.LEAKY_RELU:
            # relu(leaky(x)) == relu(x) for alpha >= 0
            if after.kind is ActKind.RELU and self.alpha >= 0:
                return after
            return None
        first = self._as_clip()
        if after.kind is ActKind.LEAKY_RELU:
            # leaky is the identity on non-negative values
            return self if first is not None and first[0] >= 0 else None
        second = after._as_clip()
        lo = min(max(first[0], second[0]), second[1])
        hi = min(max(first[1], second[0]), second[1])
        if lo == 0.0 and hi == math.inf:
            return Activation.RELU
        return Activation.clip(lo, hi)

    @property
    def nonnegative(self) -> bool:
        """True if every output of this activation is >= 0."""
        c = self._as_clip()
        return c is not None and c[0] >= 0.0

    def __str__(self) -> str:
        if self.kind is ActKind.CLIP:
            return f"clip({self.lo:g},{self.hi:g})"
        if self.kind is ActKind.LEAKY_RELU:
            return f"leaky_relu({self.alpha:g})"
        return self.kind.value


Activation.NONE = Activation()
Activation.RELU = Activation(ActKind.RELU)


Pair = tuple[int, int]
Pads4 = tuple[int, int, int, int]  # (top, left, bottom, right)


@dataclass(eq=False)
class ConvAttrs:
    weight: np.ndarray  # (Cout, Cin/groups, kh, kw) float32
    bias: np.ndarray    # (Cout,) float32
    strides: Pair = (1, 1)
    dilations: Pair = (1, 1)
    pads: Pads4 = (0, 0, 0, 0)
    groups: int = 1

    @property
    def kernel(self) -> Pair:
        return (int(self.weight.shape[2]), int(self.weight.shape[3]))

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[1]) * self.groups


@dataclass(eq=False)
class DenseAttrs:
    weight: np.ndarray  # (out_features, in_features) float32
    bias: np.ndarray    # (out_features,) float32


@dataclass(frozen=True)
class PoolAttrs:
    kernel: Pair
    strides: Pair = (1, 1)
    pads: Pads4 = (0, 0, 0, 0)
    dilations: Pair = (1, 1)           # MAXPOOL only; AVGPOOL requires (1, 1)
    ceil_mode: bool = False
    count_include_pad: bool = False    # AVGPOOL only


@dataclass(frozen=True)
class ConcatAttrs:
    axis: int = 1


@dataclass(eq=False)
class AffineAttrs:
    """``x * scale + shift`` broadcast along ``axis`` (1 = channels in the canonical IR)."""

    scale: np.ndarray  # (C,) float32
    shift: np.ndarray  # (C,) float32
    axis: int = 1

    @property
    def is_scale_only(self) -> bool:
        return not np.any(self.shift)

    @property
    def is_shift_only(self) -> bool:
        return bool(np.all(self.scale == 1.0))


@dataclass(eq=False)
class BatchNormAttrs:
    """Inference batch normalisation over axis 1: ``(x - mean) / sqrt(var + eps) * gamma + beta``."""

    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    epsilon: float = 1e-5

    def scale_shift(self) -> tuple[np.ndarray, np.ndarray]:
        """The equivalent per-channel (scale, shift), computed in float64."""
        scale = self.gamma.astype(np.float64) / np.sqrt(self.var.astype(np.float64) + self.epsilon)
        shift = self.beta.astype(np.float64) - self.mean.astype(np.float64) * scale
        return scale, shift


@dataclass(frozen=True)
class PadAttrs:
    """Constant padding: ``before[i]`` / ``after[i]`` elements on axis i (negative crops)."""

    before: tuple[int, ...]
    after: tuple[int, ...]
    value: float = 0.0


@dataclass(frozen=True)
class TransposeAttrs:
    perm: tuple[int, ...]


@dataclass(frozen=True)
class ReshapeAttrs:
    shape: tuple[int, ...]  # fully resolved, every dim >= 1


@dataclass(frozen=True)
class HostAttrs:
    """An ONNX operator kept as is. ``attributes`` are its AttributeProtos."""

    op_type: str
    domain: str = ""
    attributes: tuple = ()
    reason: str = ""

    def to_node_proto(self, node: Node):
        import onnx

        proto = onnx.NodeProto()
        proto.op_type, proto.domain, proto.name = self.op_type, self.domain, node.name
        proto.input.extend(node.inputs)
        proto.output.extend(node.outputs)
        proto.attribute.extend(self.attributes)
        return proto


@dataclass(frozen=True)
class NoAttrs:
    pass


ATTRS_TYPE: dict[OpKind, type] = {
    OpKind.CONV: ConvAttrs, OpKind.DENSE: DenseAttrs, OpKind.MAXPOOL: PoolAttrs,
    OpKind.AVGPOOL: PoolAttrs, OpKind.GLOBAL_AVGPOOL: NoAttrs, OpKind.GLOBAL_MAXPOOL: NoAttrs,
    OpKind.ADD: NoAttrs, OpKind.CONCAT: ConcatAttrs, OpKind.AFFINE: AffineAttrs,
    OpKind.ACT: NoAttrs, OpKind.RESHAPE: ReshapeAttrs, OpKind.BATCHNORM: BatchNormAttrs,
    OpKind.PAD: PadAttrs, OpKind.TRANSPOSE: TransposeAttrs, OpKind.HOST: HostAttrs,
}

# Kinds whose result can carry a fused activation.
ACT_CAPABLE = frozenset({OpKind.CONV, OpKind.DENSE, OpKind.ADD, OpKind.AFFINE, OpKind.ACT,
                         OpKind.BATCHNORM})

_ARITY: dict[OpKind, int | None] = {k: 1 for k in OpKind}
_ARITY.update({OpKind.ADD: 2, OpKind.CONCAT: None, OpKind.HOST: None})


@dataclass(eq=False)
class Node:
    name: str
    op: OpKind
    inputs: list[str]
    outputs: list[str]
    attrs: object = field(default_factory=NoAttrs)
    act: Activation = Activation.NONE

    def __repr__(self) -> str:
        act = "" if self.act.kind is ActKind.NONE else f" +{self.act}"
        return f"<{self.op.value}{act} {self.name}: {self.inputs} -> {self.outputs}>"

    @property
    def op_type(self) -> str:
        """The ONNX op type for HOST nodes, the IR kind name otherwise (for reports)."""
        return self.attrs.op_type if self.op is OpKind.HOST else self.op.value


@dataclass(eq=False)
class Graph:
    name: str = "graph"
    nodes: list[Node] = field(default_factory=list)
    tensors: dict[str, Tensor] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    # ir_value = np.transpose(external_value, perm) for inputs; external = np.transpose(ir, perm)
    # for outputs. Absent means the external layout is the IR layout.
    input_perms: dict[str, tuple[int, ...]] = field(default_factory=dict)
    output_perms: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # ONNX opset per domain, for HOST nodes ("" is the default domain)
    opsets: dict[str, int] = field(default_factory=lambda: {"": 17})

    # -- queries -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Node]:
        """The nodes in topological order."""
        return iter(self.nodes)

    def tensor(self, name: str) -> Tensor:
        return self.tensors[name]

    def shape(self, name: str) -> tuple[int, ...]:
        return self.tensors[name].shape

    def producers(self) -> dict[str, Node]:
        return {o: n for n in self.nodes for o in n.outputs}

    def consumers(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    lst = out.setdefault(i, [])
                    if not lst or lst[-1] is not n:
                        lst.append(n)
        return out

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def macs(self) -> int:
        return sum(node_macs(n, self) for n in self.nodes)

    def op_counts(self) -> dict[OpKind, int]:
        out: dict[OpKind, int] = {}
        for n in self.nodes:
            out[n.op] = out.get(n.op, 0) + 1
        return out

    # -- edits ---------------------------------------------------------------------------------
    def fresh_name(self, base: str) -> str:
        taken = self.tensors.keys() | {n.name for n in self.nodes}
        if base not in taken:
            return base
        i = 1
        while f"{base}_{i}" in taken:
            i += 1
        return f"{base}_{i}"

    def add_tensor(self, name: str, shape: Sequence[int], dtype: DType = DType.FLOAT32) -> str:
        self.tensors[name] = Tensor(name, tuple(int(d) for d in shape), dtype)
        return name

    def replace_uses(self, old: str, new: str) -> None:
        """Every node that reads ``old`` reads ``new`` instead (graph outputs are not touched)."""
        for n in self.nodes:
            n.inputs = [new if i == old else i for i in n.inputs]

    def rename(self, old: str, new: str) -> None:
        """Rename tensor ``old`` to ``new`` everywhere (producers, consumers, graph io)."""
        for n in self.nodes:
            n.inputs = [new if i == old else i for i in n.inputs]
            n.outputs = [new if o == old else o for o in n.outputs]
        self.inputs = [new if i == old else i for i in self.inputs]
        self.outputs = [new if o == old else o for o in self.outputs]
        t = self.tensors.pop(old)
        self.tensors[new] = Tensor(new, t.shape, t.dtype)
        if old in self.constants:
            self.constants[new] = self.constants.pop(old)
        for perms in (self.input_perms, self.output_perms):
            if old in perms:
                perms[new] = perms.pop(old)

    def bypass(self, node: Node) -> bool:
        """Remove a node whose output equals its first input. False if that is impossible."""
        src, dst = node.inputs[0], node.outputs[0]
        if dst not in self.outputs:
            self.replace_uses(dst, src)
        elif (src not in self.inputs and src not in self.outputs and src not in self.constants
              and self.tensors[src].shape == self.tensors[dst].shape):
            self.nodes.remove(node)
            self.tensors.pop(dst)
            self.rename(src, dst)
            return True
        else:
            return False
        self.nodes.remove(node)
        self.tensors.pop(dst, None)
        return True

    def toposort(self) -> None:
        """Stable topological sort (keeps the current order where it is already valid)."""
        prod = self.producers()
        placed: set[int] = set()
        order: list[Node] = []
        state: dict[int, int] = {}

        def visit(n: Node) -> None:
            stack = [(n, 0)]
            while stack:
                cur, i = stack.pop()
                if id(cur) in placed:
                    continue
                if i == 0:
                    if state.get(id(cur)) == 1:
                        raise IRError("the graph has a cycle", node=cur.name)
                    state[id(cur)] = 1
                deps = [prod[x] for x in cur.inputs if x in prod]
                if i < len(deps):
                    stack.append((cur, i + 1))
                    if id(deps[i]) not in placed:
                        stack.append((deps[i], 0))
                    continue
                placed.add(id(cur))
                order.append(cur)

        for n in self.nodes:
            visit(n)
        self.nodes = order

    def prune(self) -> bool:
        """Drop nodes whose results are never used, then unused constants and tensors."""
        changed = False
        live = set(self.outputs)
        keep: list[Node] = []
        for n in reversed(self.nodes):
            if any(o in live for o in n.outputs):
                keep.append(n)
                live.update(i for i in n.inputs if i)
            else:
                changed = True
        keep.reverse()
        self.nodes = keep
        used = live | set(self.inputs)
        for n in self.nodes:
            used.update(n.outputs)
        for name in [c for c in self.constants if c not in used]:
            del self.constants[name]
            changed = True
        for name in [t for t in self.tensors if t not in used]:
            del self.tensors[name]
        return changed

    def copy(self) -> Graph:
        """A structural copy; weight arrays are shared (passes never write into arrays)."""
        g = copy.copy(self)
        g.nodes = [copy.copy(n) for n in self.nodes]
        for n in g.nodes:
            n.inputs, n.outputs = list(n.inputs), list(n.outputs)
        g.tensors, g.constants = dict(self.tensors), dict(self.constants)
        g.inputs, g.outputs = list(self.inputs), list(self.outputs)
        g.input_perms, g.output_perms = dict(self.input_perms), dict(self.output_perms)
        g.opsets = dict(self.opsets)
        return g

    def summary(self) -> str:
        lines = [f"graph {self.name}: inputs {[(i, self.shape(i)) for i in self.inputs]}"]
        for n in self.nodes:
            shapes = [self.shape(o) for o in n.outputs]
            lines.append(f"  {n!r} {shapes}")
        lines.append(f"  outputs {[(o, self.shape(o)) for o in self.outputs]}")
        return "\n".join(lines)


# -- shapes -----------------------------------------------------------------------------------

def conv_out_size(size: int, k: int, stride: int, dilation: int, pad_a: int, pad_b: int) -> int:
    return (size + pad_a + pad_b - dilation * (k - 1) - 1) // stride + 1


def pool_out_size(size: int, k: int, stride: int, dilation: int, pad_a: int, pad_b: int,
                  ceil_mode: bool) -> int:
    """onnxruntime's rule: with ceil_mode a last window that would start in the end padding is
    dropped (the PyTorch convention)."""
    span = size + pad_a + pad_b - dilation * (k - 1) - 1
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    if (out - 1) * stride >= size + pad_a:
        out -= 1
    return out


def _fail(node: Node, msg: str):
    raise IRError(msg, node=node.name)


def infer_shapes(node: Node, shapes: Sequence[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """Output shapes of a typed node from its input shapes; raises IRError when inconsistent.

    Not defined for HOST nodes (their shapes come from ONNX shape inference)."""
    op, a = node.op, node.attrs
    if op is OpKind.HOST:
        raise ValueError("infer_shapes is not defined for HOST nodes")
    arity = _ARITY[op]
    if arity is not None and len(shapes) != arity:
        _fail(node, f"{op.value} takes {arity} input(s), got {len(shapes)}")
    x = shapes[0] if shapes else ()
    if op in (OpKind.CONV, OpKind.MAXPOOL, OpKind.AVGPOOL, OpKind.GLOBAL_AVGPOOL,
              OpKind.GLOBAL_MAXPOOL) and len(x) != 4:
        _fail(node, f"{op.value} needs a rank-4 NCHW input, got shape {x}")
    if op is OpKind.CONV:
        n, c, h, w = x
        if c != a.in_channels:
            _fail(node, f"input has {c} channels, weight expects {a.in_channels}")
        (kh, kw), (sh, sw), (dh, dw), (t, l, b, r) = a.kernel, a.strides, a.dilations, a.pads
        return [(n, a.out_channels, conv_out_size(h, kh, sh, dh, t, b), conv_out_size(w, kw, sw, dw, l, r))]
    if op in (OpKind.MAXPOOL, OpKind.AVGPOOL):
        n, c, h, w = x
        (kh, kw), (sh, sw), (dh, dw), (t, l, b, r) = a.kernel, a.strides, a.dilations, a.pads
        return [(n, c, pool_out_size(h, kh, sh, dh, t, b, a.ceil_mode),
                 pool_out_size(w, kw, sw, dw, l, r, a.ceil_mode))]
    if op in (OpKind.GLOBAL_AVGPOOL, OpKind.GLOBAL_MAXPOOL):
        return [(x[0], x[1], 1, 1)]
    if op is OpKind.DENSE:
        if len(x) != 2:
            _fail(node, f"dense needs a rank-2 (N, features) input, got shape {x}")
        if x[1] != a.weight.shape[1]:
            _fail(node, f"input has {x[1]} features, weight expects {a.weight.shape[1]}")
        return [(x[0], int(a.weight.shape[0]))]
    if op is OpKind.ADD:
        if shapes[0] != shapes[1]:
            _fail(node, f"add operands differ in shape: {shapes[0]} vs {shapes[1]}")
        return [x]
    if op is OpKind.CONCAT:
        if not shapes:
            _fail(node, "concat without inputs")
        ax = a.axis
        if not 0 <= ax < len(x):
            _fail(node, f"concat axis {ax} out of range for rank {len(x)}")
        for s in shapes:
            if len(s) != len(x) or any(s[i] != x[i] for i in range(len(x)) if i != ax):
                _fail(node, f"concat operands disagree off axis {ax}: {list(shapes)}")
        return [x[:ax] + (sum(s[ax] for s in shapes),) + x[ax + 1:]]
    if op is OpKind.AFFINE:
        if not 0 <= a.axis < len(x):
            _fail(node, f"affine axis {a.axis} out of range for rank {len(x)}")
        if a.scale.shape != (x[a.axis],) or a.shift.shape != (x[a.axis],):
            _fail(node, f"affine scale/shift shapes {a.scale.shape}/{a.shift.shape} do not match "
                        f"axis {a.axis} of {x}")
        return [x]
    if op is OpKind.BATCHNORM:
        if len(x) < 2:
            _fail(node, f"batchnorm needs rank >= 2, got {x}")
        for nm in ("gamma", "beta", "mean", "var"):
            if getattr(a, nm).shape != (x[1],):
                _fail(node, f"batchnorm {nm} has shape {getattr(a, nm).shape}, expected ({x[1]},)")
        return [x]
    if op is OpKind.ACT:
        return [x]
    if op is OpKind.RESHAPE:
        if math.prod(a.shape) != math.prod(x):
            _fail(node, f"reshape {x} -> {a.shape} changes the element count")
        return [tuple(a.shape)]
    if op is OpKind.PAD:
        if len(a.before) != len(x) or len(a.after) != len(x):
            _fail(node, f"pad widths {a.before}/{a.after} do not match rank {len(x)}")
        return [tuple(d + p + q for d, p, q in zip(x, a.before, a.after, strict=True))]
    if op is OpKind.TRANSPOSE:
        if sorted(a.perm) != list(range(len(x))):
            _fail(node, f"perm {a.perm} is not a permutation of rank {len(x)}")
        return [tuple(x[p] for p in a.perm)]
    raise AssertionError(op)


def node_macs(node: Node, graph: Graph) -> int:
    """Multiply-accumulates of a conv or dense node (0 for every other kind)."""
    if node.op is OpKind.CONV:
        out = graph.shape(node.outputs[0])
        kh, kw = node.attrs.kernel
        return math.prod(out) * int(node.attrs.weight.shape[1]) * kh * kw
    if node.op is OpKind.DENSE:
        return math.prod(graph.shape(node.outputs[0])) * int(node.attrs.weight.shape[1])
    return 0


# -- verifier ---------------------------------------------------------------------------------

def _check_pairs(node: Node, what: str, vals, lo: int, n: int) -> None:
    if len(vals) != n or any((not isinstance(v, int | np.integer)) or v < lo for v in vals):
        _fail(node, f"{what} must be {n} integers >= {lo}, got {vals}")


def _check_array(node: Node, what: str, arr, shape: tuple[int, ...] | None = None) -> None:
    if not isinstance(arr, np.ndarray) or arr.dtype != np.float32:
        _fail(node, f"{what} must be a float32 numpy array, got {type(arr).__name__} "
                    f"{getattr(arr, 'dtype', '')}")
    if shape is not None and arr.shape != shape:
        _fail(node, f"{what} has shape {arr.shape}, expected {shape}")
    if not np.all(np.isfinite(arr)):
        _fail(node, f"{what} contains NaN or Inf")


def _check_attrs(node: Node) -> None:
    a, op = node.attrs, node.op
    if not isinstance(a, ATTRS_TYPE[op]):
        _fail(node, f"{op.value} needs {ATTRS_TYPE[op].__name__}, got {type(a).__name__}")
    if node.act.kind is not ActKind.NONE and op not in ACT_CAPABLE:
        _fail(node, f"{op.value} cannot carry a fused activation ({node.act})")
    act = node.act
    if act.kind is ActKind.CLIP and (math.isnan(act.lo) or math.isnan(act.hi) or act.lo > act.hi):
        _fail(node, f"clip bounds must satisfy lo <= hi, got ({act.lo}, {act.hi})")
    if act.kind is ActKind.LEAKY_RELU and not math.isfinite(act.alpha):
        _fail(node, f"leaky_relu alpha must be finite, got {act.alpha}")
    if op is OpKind.CONV:
        if a.weight.ndim != 4:
            _fail(node, f"conv weight must be (Cout, Cin/groups, kh, kw), got shape {a.weight.shape}")
        _check_array(node, "conv weight", a.weight)
        _check_array(node, "conv bias", a.bias, (a.out_channels,))
        _check_pairs(node, "strides", a.strides, 1, 2)
        _check_pairs(node, "dilations", a.dilations, 1, 2)
        _check_pairs(node, "pads", a.pads, 0, 4)
        if not isinstance(a.groups, int) or a.groups < 1 or a.out_channels % a.groups:
            _fail(node, f"groups={a.groups} must be >= 1 and divide Cout={a.out_channels}")
    elif op is OpKind.DENSE:
        if a.weight.ndim != 2:
            _fail(node, f"dense weight must be (out, in), got shape {a.weight.shape}")
        _check_array(node, "dense weight", a.weight)
        _check_array(node, "dense bias", a.bias, (a.weight.shape[0],))
    elif op in (OpKind.MAXPOOL, OpKind.AVGPOOL):
        _check_pairs(node, "kernel", a.kernel, 1, 2)
        _check_pairs(node, "strides", a.strides, 1, 2)
        _check_pairs(node, "dilations", a.dilations, 1, 2)
        _check_pairs(node, "pads", a.pads, 0, 4)
        if op is OpKind.AVGPOOL and tuple(a.dilations) != (1, 1):
            _fail(node, f"avgpool dilations must be (1, 1), got {a.dilations}")
        if op is OpKind.MAXPOOL and a.count_include_pad:
            _fail(node, "count_include_pad is an avgpool attribute")
        for p, k, d in ((a.pads[0], a.kernel[0], a.dilations[0]), (a.pads[2], a.kernel[0], a.dilations[0]),
                        (a.pads[1], a.kernel[1], a.dilations[1]), (a.pads[3], a.kernel[1], a.dilations[1])):
            if p >= d * (k - 1) + 1:
                _fail(node, f"pads {a.pads} must be smaller than the window {a.kernel}")
    elif op is OpKind.AFFINE:
        _check_array(node, "affine scale", a.scale)
        _check_array(node, "affine shift", a.shift)
    elif op is OpKind.BATCHNORM:
        for nm in ("gamma", "beta", "mean", "var"):
            _check_array(node, f"batchnorm {nm}", getattr(a, nm))
        if not a.epsilon >= 0 or np.any(a.var + a.epsilon <= 0):
            _fail(node, "batchnorm var + epsilon must be > 0")
    elif op is OpKind.RESHAPE:
        _check_pairs(node, "reshape shape", a.shape, 1, len(a.shape))
    elif op is OpKind.PAD:
        if not math.isfinite(a.value) and a.value != -math.inf:
            _fail(node, f"pad value {a.value} is not allowed")


def verify(graph: Graph) -> Graph:
    """Check the structural invariants of ``graph``; raise IRError naming the node. Returns graph."""
    names: set[str] = set()
    defined: set[str] = set(graph.inputs) | set(graph.constants)
    for name in graph.inputs:
        if name in graph.constants:
            raise IRError(f"graph input {name!r} is also a constant")
    for name in list(graph.inputs) + list(graph.constants):
        if name not in graph.tensors:
            raise IRError(f"tensor {name!r} has no Tensor entry")
    for name, arr in graph.constants.items():
        t = graph.tensors[name]
        if tuple(arr.shape) != t.shape or DType.of(arr.dtype) is not t.dtype:
            raise IRError(f"constant {name!r} is {arr.dtype}{arr.shape}, its tensor says "
                          f"{t.dtype.value}{t.shape}")
    for name, t in graph.tensors.items():
        if t.name != name:
            raise IRError(f"tensor entry {name!r} is named {t.name!r}")
        if any((not isinstance(d, int)) or d < 1 for d in t.shape) and name not in graph.constants:
            raise IRError(f"tensor {name!r} has a non-positive or non-integer dim: {t.shape}")
    consumed: set[str] = set()
    for node in graph.nodes:
        if not node.name or node.name in names:
            _fail(node, "node names must be non-empty and unique")
        names.add(node.name)
        if not isinstance(node.op, OpKind):
            _fail(node, f"op must be an OpKind, got {node.op!r}")
        for i in node.inputs:
            if i == "" and node.op is OpKind.HOST:
                continue
            if i not in defined:
                _fail(node, f"input {i!r} is not defined before use")
            consumed.add(i)
        if not node.outputs:
            _fail(node, "a node needs at least one output")
        for o in node.outputs:
            if o in defined:
                _fail(node, f"output {o!r} is defined twice")
            if o not in graph.tensors:
                _fail(node, f"output {o!r} has no Tensor entry")
            defined.add(o)
        _check_attrs(node)
        if node.op is OpKind.HOST:
            continue
        if len(node.outputs) != 1:
            _fail(node, f"{node.op.value} has exactly one output")
        for i in node.inputs:
            if i in graph.constants:
                _fail(node, f"input {i!r} is a constant; only HOST nodes read constants")
            if graph.tensors[i].dtype is not DType.FLOAT32:
                _fail(node, f"input {i!r} is {graph.tensors[i].dtype.value}, expected float32")
        want = infer_shapes(node, [graph.tensors[i].shape for i in node.inputs])
        got = [graph.tensors[o].shape for o in node.outputs]
        if want != got:
            _fail(node, f"declared output shape {got} != computed {want}")
        if graph.tensors[node.outputs[0]].dtype is not DType.FLOAT32:
            _fail(node, f"output {node.outputs[0]!r} must be float32")
    for o in graph.outputs:
        if o not in defined:
            raise IRError(f"graph output {o!r} is never produced")
    for node in graph.nodes:
        if not any(o in consumed or o in graph.outputs for o in node.outputs):
            _fail(node, f"dangling: none of its outputs {node.outputs} is used")
    used = consumed | set(graph.outputs) | set(graph.inputs)
    for n in graph.nodes:
        used.update(n.outputs)
    dangling = sorted(set(graph.tensors) - used)
    if dangling:
        raise IRError(f"dangling tensor entries {dangling[:5]}")
    unused_consts = sorted(set(graph.constants) - consumed - set(graph.outputs))
    if unused_consts:
        raise IRError(f"unused constants {unused_consts[:5]}")
    for name, perm in list(graph.input_perms.items()) + list(graph.output_perms.items()):
        if name not in graph.tensors or sorted(perm) != list(range(graph.tensors[name].rank)):
            raise IRError(f"layout perm {perm} of {name!r} does not fit its tensor")
    return graph
