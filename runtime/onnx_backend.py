"""An ``onnx.backend`` for accelml: ONNX models through ``compile_model`` and the package runtime.

    from accelml.runtime.onnx_backend import AccelmlBackend

    rep = AccelmlBackend.prepare(model)      # a ModelProto, the serialized bytes or a path
    (y,) = rep.run([x])                      # inputs in graph-input order (or a dict); outputs in order

This is the backend of the ONNX conformance suite (tests/compiler/test_onnx_conformance.py). It
compiles for the ``wide`` preset by default (23-bit mantissas: engine results match float32 within
the suite's tolerances), writes the package to a temporary directory, loads it back with
``accelml.runtime.load`` (hashes and EngineConfig verified) and runs it: engine segments on the
functional simulator, host segments on onnxruntime. ``CPU`` is the only device.

Weights fed at run time
    The engine needs constant weights. A Conv whose ``W`` is a graph input rather than an
    initializer is imported as a host node ("conv weight is not a constant") and partition runs it
    on onnxruntime. With ``weights="bind"`` (the default) the backend instead treats every graph
    input that only feeds parameter slots (``PARAMETER_SLOTS``: Conv W/B, Gemm B/C, MatMul B,
    BatchNormalization scale/bias/mean/var, Clip bounds, Pad widths/value/axes, Reshape shape,
    Squeeze/Unsqueeze/ReduceMean axes) as a constant of the call: ``run`` compiles the model with
    the fed values as initializers, so the engine computes the layer. Compilations are cached by a
    digest of the bound values, so runs with the same weights compile once. ``weights="host"``
    compiles the model as it is: such nodes run on the host (parameters fed at run time must then
    be float32, like every runtime input).

Shapes
    Symbolic dimensions of the graph inputs take the fed sizes: the model is compiled for the
    shapes of the call (cached like the weights). Everything downstream must then be static, else
    the frontend raises ``ShapeError``.

Batch
    The engine runs batch 1. When the first data input has a leading dimension N > 1 and the graph
    is batch-separable (``batch_plan``: every node treats axis 0 independently -- element-wise
    ops, conv / pool / inference BN on NCHW, Gemm / MatMul rows against constant weights with a
    per-column bias, Flatten / Softmax / Concat / reductions / Transpose / Pad that leave axis 0
    alone, Reshapes that keep it), the model is compiled with batch 1, run sample by sample and
    the results are stacked along axis 0. A graph that is not separable (Softmax or Concat over
    axis 0, Gemm with transA or a per-row bias, Flatten(axis=0), a Reshape that moves axis 0, ...)
    is compiled as it is: fine when those nodes run on the host, an error when an engine tensor
    has batch > 1.

Errors
    Models the toolchain rejects raise accelml's typed errors: ``ModelFormatError`` (unreadable,
    fails the ONNX checker, an element type the runtime does not take), ``ShapeError``,
    ``UnsupportedOperatorError``, ``CapacityError``, ... The runtime takes float32 data inputs: any
    other element type raises ``ModelFormatError`` naming the input. Bad ``run`` arguments (count,
    names, dtype, shape) raise ``PackageError``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.backend.base import Backend, BackendRep

from accelml.compiler.frontend import parse_model
from accelml.hdl.config import EngineConfig, preset
from accelml.hdl.errors import ModelFormatError, PackageError

__all__ = ["AccelmlBackend", "AccelmlBackendRep", "BatchPlan", "PARAMETER_SLOTS", "ORT_MAX_IR_VERSION",
           "lower_ir_version", "parameter_inputs", "bind_inputs", "batch_plan", "per_sample_model",
           "prepare", "run_model", "run_node", "supports_device"]

ORT_MAX_IR_VERSION = 13  # the newest IR version onnxruntime 1.31 reads (onnx 1.23 writes 14)

# the input positions of an ONNX operator that hold parameters (weights, bounds, shapes), not data
PARAMETER_SLOTS: dict[str, frozenset[int]] = {
    "Conv": frozenset({1, 2}),
    "Gemm": frozenset({1, 2}),
    "MatMul": frozenset({1}),
    "BatchNormalization": frozenset({1, 2, 3, 4}),
    "Clip": frozenset({1, 2}),
    "Pad": frozenset({1, 2, 3}),
    "Reshape": frozenset({1}),
    "Squeeze": frozenset({1}),
    "Unsqueeze": frozenset({1}),
    "ReduceMean": frozenset({1}),
}

_F32 = onnx.TensorProto.FLOAT
_STANDARD = ("", "ai.onnx")


# -- the model as given --------------------------------------------------------------------------

def _source_name(model: onnx.ModelProto) -> str:
    return model.graph.name or "<model>"


def _to_proto(model: Any) -> onnx.ModelProto:
    """A private copy of ``model`` (ModelProto, bytes or path) as a ModelProto."""
    if isinstance(model, onnx.ModelProto):
        m = onnx.ModelProto()
        m.CopyFrom(model)
        return m
    if isinstance(model, str | os.PathLike):
        path = Path(model)
        if not path.is_file():
            raise ModelFormatError("no such file", source=str(path))
        data, source = path.read_bytes(), str(path)
    elif isinstance(model, bytes | bytearray):
        data, source = bytes(model), "<bytes>"
    else:
        raise ModelFormatError(f"expected an onnx.ModelProto, bytes or a path, not {type(model).__name__}")
    m = parse_model(data, source)
    if isinstance(model, str | os.PathLike):
        from onnx.external_data_helper import load_external_data_for_model

        try:
            load_external_data_for_model(m, str(Path(model).parent))
        except (OSError, ValueError) as e:
            raise ModelFormatError(f"cannot read external tensor data: {e}", source=source) from None
    return m


def _check(model: onnx.ModelProto) -> None:
    """The ONNX checker, with failures as ModelFormatError (as ``frontend.load_onnx`` reports them)."""
    if not model.HasField("graph") or model.ir_version == 0:
        raise ModelFormatError("not an ONNX model (no graph or no IR version)", source=_source_name(model))
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFormatError(f"fails the ONNX checker: {first}", source=_source_name(model)) from None


def _walk_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _walk_nodes(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    yield from _walk_nodes(g)


def lower_ir_version(model: onnx.ModelProto) -> onnx.ModelProto:
    """Make a model whose IR version onnxruntime cannot read (> ORT_MAX_IR_VERSION) readable, in place.

    Each domain's opset becomes the newest ``since_version`` among the operators the graph uses
    from it -- the very definitions the model had, so the same semantics -- and the IR version the
    lowest one that admits those opsets. ModelFormatError when that is still too new."""
    if model.ir_version <= ORT_MAX_IR_VERSION:
        return model
    src = _source_name(model)
    if model.functions:
        raise ModelFormatError(f"IR version {model.ir_version} with model-local functions; onnxruntime reads IR "
                               f"<= {ORT_MAX_IR_VERSION}", source=src)
    versions = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}
    needed: dict[str, int] = {}
    for node in _walk_nodes(model.graph):
        dom = "" if node.domain == "ai.onnx" else node.domain
        if dom not in versions:
            continue  # the checker names it
        try:
            schema = onnx.defs.get_schema(node.op_type, versions[dom], dom)
        except onnx.defs.SchemaError:
            raise ModelFormatError(f"node {node.name or node.op_type!r}: {node.op_type} is not in opset "
                                   f"{dom or 'ai.onnx'} {versions[dom]}", source=src) from None
        needed[dom] = max(needed.get(dom, 1), schema.since_version)
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(d, needed.get(d, v)) for d, v in versions.items())
    ir = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    if ir > ORT_MAX_IR_VERSION:
        raise ModelFormatError(f"IR version {model.ir_version}: its operators need opsets "
                               f"{ {d or 'ai.onnx': v for d, v in needed.items()} } (IR {ir}); onnxruntime reads IR "
                               f"<= {ORT_MAX_IR_VERSION}", source=src)
    model.ir_version = max(ir, 3)
    return model


def _runtime_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def _elem_type(vi: onnx.ValueInfoProto) -> int:
    return vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else 0


def _dims(vi: onnx.ValueInfoProto) -> tuple[int | None, ...] | None:
    """The declared dims (None where symbolic), or None without a shape."""
    tt = vi.type.tensor_type
    if not vi.type.HasField("tensor_type") or not tt.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)


def parameter_inputs(model: onnx.ModelProto) -> list[str]:
    """The runtime graph inputs that only ever feed parameter slots (``PARAMETER_SLOTS``)."""
    uses: dict[str, list[bool]] = {}
    for node in _walk_nodes(model.graph):
        slots = PARAMETER_SLOTS.get(node.op_type, frozenset()) if node.domain in _STANDARD else frozenset()
        for k, name in enumerate(node.input):
            if name:
                uses.setdefault(name, []).append(k in slots)
    outs = {o.name for o in model.graph.output}
    return [vi.name for vi in _runtime_inputs(model)
            if uses.get(vi.name) and all(uses[vi.name]) and vi.name not in outs]


def bind_inputs(model: onnx.ModelProto, values: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of ``model`` in which the named graph inputs are initializers holding ``values``."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    keep = [vi for vi in m.graph.input if vi.name not in values]
    del m.graph.input[:]
    m.graph.input.extend(keep)
    m.graph.initializer.extend(numpy_helper.from_array(np.asarray(v), k) for k, v in values.items())
    return m


def _fix_dims(model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Give the symbolic dims of these graph inputs the fed sizes, in place."""
    for vi in model.graph.input:
        if vi.name in shapes:
            for d, size in zip(vi.type.tensor_type.shape.dim, shapes[vi.name], strict=True):
                if not d.HasField("dim_value"):
                    d.Clear()
                    d.dim_value = int(size)


# -- batch separability --------------------------------------------------------------------------

# element-wise with multidirectional broadcasting (a batch-free operand must not span axis 0)
_ELEMENTWISE = frozenset({
    "Relu", "LeakyRelu", "Clip", "Identity", "Dropout", "Exp", "Log", "Neg", "Abs", "Sqrt", "Sigmoid", "Tanh",
    "Softplus", "Softsign", "Elu", "Selu", "HardSigmoid", "HardSwish", "Erf", "Floor", "Ceil", "Reciprocal",
    "Cast", "CastLike", "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Equal", "Less",
    "LessOrEqual", "Greater", "GreaterOrEqual", "Where", "And", "Or", "Not", "Xor",
})
# per sample over (N, C, ...) with batch-free parameters
_PER_SAMPLE = frozenset({"Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool",
                         "BatchNormalization", "LRN", "InstanceNormalization"})
_REDUCE = frozenset({"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                     "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"})


@dataclass
class BatchPlan:
    """Run the ``split`` inputs one sample (along axis 0, of size ``n``) at a time; stack the
    ``outputs`` that are batched, take the others (batch-free) from the first sample. ``tensors``:
    every batched tensor."""

    n: int
    split: list[str]
    outputs: set[str] = field(default_factory=set)
    tensors: set[str] = field(default_factory=set)


def _attr(node: onnx.NodeProto, key: str, default=None):
    for a in node.attribute:
        if a.name == key:
            return helper.get_attribute_value(a)
    return default


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in _STANDARD), 1)


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    vals = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.domain in _STANDARD and node.attribute:
            a = node.attribute[0]
            if a.name == "value":
                vals[node.output[0]] = numpy_helper.to_array(a.t)
            elif a.name in ("value_ints", "value_floats", "value_int", "value_float"):
                vals[node.output[0]] = np.asarray(helper.get_attribute_value(a))
    return vals


def _separable(node: onnx.NodeProto, batched: set[str], shapes: dict[str, tuple[int, ...]],
               consts: dict[str, np.ndarray], opset: int) -> bool:
    """Does ``node`` (with at least one batched input) compute each sample on its own?"""
    op, ins = node.op_type, list(node.input)
    outs = [o for o in node.output if o]
    if any(o not in shapes for o in outs) or any(i not in shapes for i in ins if i):
        return False
    r_out = len(shapes[outs[0]])
    free = [i for i in ins if i and i not in batched]

    def axes_arg() -> list[int] | None | bool:
        """Axes from the attribute or input 1; False when they are not known."""
        axes = _attr(node, "axes")
        if axes is None and len(ins) > 1 and ins[1]:
            if ins[1] not in consts:
                return False
            axes = consts[ins[1]].reshape(-1).tolist()
        return axes

    if op in _ELEMENTWISE:
        if op == "Clip" and any(i in batched for i in ins[1:]):
            return False
        # a batched operand keeps axis 0 only at the output's rank; a batch-free one must not span it
        return (all(len(shapes[i]) == r_out for i in ins if i in batched)
                and all(len(shapes[i]) < r_out or shapes[i][0] == 1 for i in free))
    if op == "Concat":
        return all(i in batched for i in ins) and _attr(node, "axis") % r_out != 0
    if ins[0] not in batched or any(i in batched for i in ins[1:] if i):
        return False  # from here on: data input 0 only
    r_in = len(shapes[ins[0]])
    if op in _PER_SAMPLE:
        if op == "BatchNormalization" and (len(outs) > 1 or _attr(node, "training_mode", 0)):
            return False
        return r_in >= 2
    if op == "Gemm":
        if _attr(node, "transA", 0):
            return False
        c = ins[2] if len(ins) > 2 else ""
        return not c or len(shapes[c]) < 2 or shapes[c][0] == 1
    if op == "MatMul":
        b = ins[1]
        return r_in >= 2 and r_in == r_out and (len(shapes[b]) <= 2 or len(shapes[b]) < r_out or shapes[b][0] == 1)
    if op in ("Softmax", "LogSoftmax", "Hardmax"):
        return _attr(node, "axis", -1 if opset >= 13 else 1) % r_in != 0
    if op == "Flatten":
        return _attr(node, "axis", 1) % r_in != 0
    if op == "Transpose":
        perm = _attr(node, "perm")
        return perm is not None and perm[0] == 0
    if op in ("Squeeze", "Unsqueeze") or op in _REDUCE:
        axes = axes_arg()
        if axes is False:
            return False
        if axes is None or len(axes) == 0:
            # a Squeeze of every unit dim would drop the per-sample batch of 1 too
            return op in _REDUCE and bool(_attr(node, "noop_with_empty_axes", 0))
        r = r_out if op == "Unsqueeze" else r_in
        return all(a % r != 0 for a in axes)
    if op in ("ArgMax", "ArgMin"):
        return _attr(node, "axis", 0) % r_in != 0
    if op == "Reshape":
        # row-major: sample i is elements [i*S, (i+1)*S) before and after iff both keep n rows
        return ins[1] in consts and shapes[outs[0]][0] == shapes[ins[0]][0]
    if op == "Pad":
        if _attr(node, "pads") is not None:
            pads, axes = list(_attr(node, "pads")), list(range(r_in))
        else:
            if ins[1] not in consts or (len(ins) > 3 and ins[3] and ins[3] not in consts):
                return False
            pads = consts[ins[1]].reshape(-1).tolist()
            axes = ([a % r_in for a in consts[ins[3]].reshape(-1).tolist()] if len(ins) > 3 and ins[3]
                    else list(range(r_in)))
        k = len(axes)
        return not any(a == 0 and (pads[j] or pads[j + k]) for j, a in enumerate(axes))
    return False


def batch_plan(model: onnx.ModelProto) -> BatchPlan | None:
    """How to run ``model`` one sample at a time; None when its first data input has no leading
    dim > 1 or the graph is not batch-separable. ``model`` must be shape-inferred with static
    shapes (``frontend.load_onnx``).

    Every tensor is batched (axis 0 is the batch, of size n) or batch-free (initializers,
    constants, data inputs without that leading dim, and what is computed from those only); a node
    with a batched input must compute each sample on its own and keep the batch on axis 0."""
    g = model.graph
    inputs = _runtime_inputs(model)
    if not inputs:
        return None
    shapes: dict[str, tuple[int, ...]] = {t.name: tuple(t.dims) for t in g.initializer}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        dims = _dims(vi)
        if dims is not None and None not in dims:
            shapes[vi.name] = dims
    first = shapes.get(inputs[0].name, ())
    if not first or first[0] <= 1:
        return None
    n = first[0]
    batched = {vi.name for vi in inputs if shapes.get(vi.name, ())[:1] == (n,)}
    consts, opset = _constants(model), _opset(model)
    for node in g.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            return None  # a subgraph may read batched values without naming them as inputs
        if not any(i in batched for i in node.input):
            continue  # batch-free
        if node.domain not in _STANDARD or not _separable(node, batched, shapes, consts, opset):
            return None
        outs = [o for o in node.output if o]
        if any(shapes[o][:1] != (n,) for o in outs):
            return None
        batched.update(outs)
    return BatchPlan(n, [vi.name for vi in inputs if vi.name in batched], {o.name for o in g.output} & batched,
                     batched)


def per_sample_model(model: onnx.ModelProto, plan: BatchPlan) -> onnx.ModelProto:
    """A copy of ``model`` with batch 1 on the split inputs and the batched outputs; constant
    Reshape targets that spell the batch out get 1 in its place. Inner shapes are left to
    shape inference."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for vi in list(g.input) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        if (vi.name in plan.split or vi.name in plan.outputs) and len(dims):
            dims[0].dim_value = 1
    del g.value_info[:]
    consts = _constants(m)
    taken = {t.name for t in g.initializer} | {o for n in g.node for o in n.output} | {i.name for i in g.input}
    for k, node in enumerate(g.node):
        if node.op_type != "Reshape" or node.domain not in _STANDARD or node.input[0] not in plan.tensors:
            continue
        target = consts[node.input[1]].reshape(-1).astype(np.int64)
        if target.size and target[0] == plan.n:
            target = target.copy()
            target[0] = 1
            name = f"{node.input[1]}__sample_{k}"
            while name in taken:
                name += "_"
            taken.add(name)
            g.initializer.append(numpy_helper.from_array(target, name))
            node.input[1] = name
    return m


# -- the backend ---------------------------------------------------------------------------------

@dataclass
class Compiled:
    """One compilation: the CompiledModel, the loaded package and the batch plan (or None)."""

    compiled: Any   # accelml.compiler.CompiledModel
    package: Any    # accelml.runtime.Model
    plan: BatchPlan | None

    def run(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
        if self.plan is None:
            res = self.package.run(feeds)
            return [res[o] for o in outputs]
        plan = self.plan
        per = [self.package.run({k: (v[i:i + 1] if k in plan.split else v) for k, v in feeds.items()})
               for i in range(plan.n)]
        return [np.concatenate([r[o] for r in per], axis=0) if o in plan.outputs else per[0][o] for o in outputs]


class AccelmlBackendRep(BackendRep):
    """A prepared model. ``run(inputs)``: a list in graph-input order (initializers excluded) or a
    dict by name; returns the outputs in graph-output order."""

    def __init__(self, model: onnx.ModelProto, config: EngineConfig, *, weights: str = "bind",
                 device: str = "funcsim"):
        if weights not in ("bind", "host"):
            raise ValueError(f"weights must be 'bind' or 'host', not {weights!r}")
        _check(model)
        self.model = lower_ir_version(model)
        self.config, self.device, self.weights = config, device, weights
        vis = _runtime_inputs(self.model)
        self.inputs = [vi.name for vi in vis]
        self.outputs = [o.name for o in self.model.graph.output]
        self.params = parameter_inputs(self.model) if weights == "bind" else []
        self._types = {vi.name: _elem_type(vi) for vi in vis}
        self._dims = {vi.name: _dims(vi) for vi in vis}
        self._dynamic = [n for n in self.inputs
                         if n not in self.params and (self._dims[n] is None or None in self._dims[n])]
        for vi in vis:
            if vi.name not in self.params and _elem_type(vi) != _F32:
                dtype = helper.tensor_dtype_to_np_dtype(_elem_type(vi)) if _elem_type(vi) else "not a tensor"
                raise ModelFormatError(f"input {vi.name!r} is {dtype}: the accelml runtime takes float32 inputs",
                                       source=_source_name(self.model))
        self._cache: dict[str, Compiled] = {}
        if not self.params and not self._dynamic:
            self._cache[""] = self._compile(self.model)

    def _compile(self, model: onnx.ModelProto) -> Compiled:
        from accelml.compiler import compile_model
        from accelml.compiler.frontend import load_onnx

        from .package import load, save_package

        plan = batch_plan(load_onnx(model))
        src = per_sample_model(model, plan) if plan is not None else model
        cm = compile_model(src, config=self.config, name=model.graph.name or "model")
        with tempfile.TemporaryDirectory(prefix="accelml-onnx-") as tmp:
            package = load(save_package(cm, Path(tmp) / "model.accel"), device=self.device, config=self.config)
        return Compiled(cm, package, plan)

    def compiled_for(self, feeds: Mapping[str, np.ndarray]) -> Compiled:
        """The compilation for these feeds (the bound parameters and the fed dynamic shapes)."""
        if not self.params and not self._dynamic:
            return self._cache[""]
        h = hashlib.sha256()
        for name in self.params:
            v = np.ascontiguousarray(feeds[name])
            h.update(f"{name}\0{v.dtype.str}\0{v.shape}\0".encode())
            h.update(v.tobytes())
        for name in self._dynamic:
            h.update(f"{name}\0{np.shape(feeds[name])}\0".encode())
        key = h.hexdigest()
        if key not in self._cache:
            model = bind_inputs(self.model, {n: feeds[n] for n in self.params})
            _fix_dims(model, {n: np.shape(feeds[n]) for n in self._dynamic})
            self._cache[key] = self._compile(model)
        return self._cache[key]

    def _feeds(self, inputs: Any) -> dict[str, np.ndarray]:
        if isinstance(inputs, Mapping):
            feeds = dict(inputs)
            missing = [n for n in self.inputs if n not in feeds]
            if missing:
                raise PackageError(f"missing input(s) {', '.join(missing)} (inputs: {', '.join(self.inputs)})")
            unknown = sorted(set(feeds) - set(self.inputs))
            if unknown:
                raise PackageError(f"unknown input(s): {', '.join(unknown)}")
        else:
            seq = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
            if len(seq) != len(self.inputs):
                raise PackageError(f"expected {len(self.inputs)} input(s) ({', '.join(self.inputs)}), got {len(seq)}")
            feeds = dict(zip(self.inputs, seq, strict=True))
        for name, v in feeds.items():
            arr = np.asarray(v)
            want = helper.tensor_dtype_to_np_dtype(self._types[name])
            if arr.dtype != want:
                raise PackageError(f"input {name!r}: expected {want}, got {arr.dtype}")
            dims = self._dims[name]
            if dims is not None and (arr.ndim != len(dims) or any(
                    d is not None and d != s for d, s in zip(dims, arr.shape, strict=True))):
                shown = tuple(d if d is not None else "?" for d in dims)
                raise PackageError(f"input {name!r}: expected shape {shown}, got {arr.shape}")
            feeds[name] = arr
        return feeds

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        feeds = self._feeds(inputs)
        compiled = self.compiled_for(feeds)
        return tuple(compiled.run({k: v for k, v in feeds.items() if k not in self.params}, self.outputs))


class AccelmlBackend(Backend):
    """The accelml ONNX backend (device ``CPU``: the functional simulator and onnxruntime)."""

    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        return cls.supports_device(device)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device.split(":")[0].upper() == "CPU"

    @classmethod
    def prepare(cls, model: Any, device: str = "CPU", *, config: EngineConfig | str = "wide",
                weights: str = "bind", **kwargs: Any) -> AccelmlBackendRep:
        """Check and (unless it waits for bound weights or fed shapes) compile ``model``: a
        ModelProto, the serialized bytes or a path. ``config``: an EngineConfig or a preset name;
        ``weights``: "bind" or "host" (module docstring)."""
        if not cls.supports_device(device):
            raise ValueError(f"device {device!r}: the accelml backend runs on CPU only")
        cfg = preset(config) if isinstance(config, str) else config
        return AccelmlBackendRep(_to_proto(model), cfg, weights=weights)

    @classmethod
    def run_model(cls, model: Any, inputs: Any, device: str = "CPU", **kwargs: Any) -> tuple[np.ndarray, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Any, device: str = "CPU", outputs_info=None,
                 **kwargs: Any) -> tuple[np.ndarray, ...]:
        """Run one node, wrapped in a model whose input shapes are those of ``inputs``."""
        names = list(inputs) if isinstance(inputs, Mapping) else [i for i in node.input if i]
        arrays = [np.asarray(a) for a in (inputs.values() if isinstance(inputs, Mapping) else inputs)]
        vis = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
               for n, a in zip(names, arrays, strict=True)]
        outs = []
        for k, o in enumerate(o for o in node.output if o):
            dt, shape = outputs_info[k] if outputs_info is not None else (np.float32, None)
            outs.append(helper.make_tensor_value_info(o, helper.np_dtype_to_tensor_dtype(np.dtype(dt)), shape))
        opset = kwargs.pop("opset_version", None) or onnx.defs.onnx_opset_version()
        m = helper.make_model(helper.make_graph([node], f"{node.op_type}_node", vis, outs),
                              opset_imports=[helper.make_opsetid("", opset)])
        m = onnx.shape_inference.infer_shapes(m)
        return cls.prepare(m, device, **kwargs).run(dict(zip(names, arrays, strict=True)))


prepare = AccelmlBackend.prepare
run_model = AccelmlBackend.run_model
run_node = AccelmlBackend.run_node
supports_device = AccelmlBackend.supports_device
