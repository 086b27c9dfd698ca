"""The compiler frontend: load an ONNX model, resolve its shapes, build and canonicalise the IR.

    model = load_onnx("resnet50.onnx")      # checked, static shapes, batch fixed to 1
    graph = import_model(model)             # raw IR (onnx_import)
    graph = canonicalize(graph)             # passes.PIPELINE, in order, to a fixed point
    verify(graph)

or all of it at once: ``to_ir(path_or_model)``.

Errors: a missing, truncated or non-ONNX file, or one that fails the ONNX checker, raises
``ModelFormatError`` naming the file; a dynamic dimension other than the batch, a zero-sized
dimension or a shape that inference cannot resolve raises ``ShapeError`` naming the tensor.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper, numpy_helper

from accelml.hdl.errors import ModelFormatError, ShapeError

from .ir import Graph, verify
from .onnx_import import import_model
from .passes import PIPELINE, canonicalize

__all__ = ["load_onnx", "parse_model", "fold_onnx_constants", "import_model", "canonicalize", "PIPELINE", "to_ir"]

ModelSource = str | os.PathLike | bytes | onnx.ModelProto


def parse_model(data: bytes, source: str) -> onnx.ModelProto:
    """Serialized bytes -> ModelProto; ModelFormatError naming ``source`` if they are not ONNX."""
    if not data:
        raise ModelFormatError("the file is empty", source=source)
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeWarning, ValueError) as e:
        raise ModelFormatError(f"not a readable ONNX protobuf (truncated or corrupt?): {e}",
                               source=source) from None
    return model


_NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                     "Bernoulli"}


def _foldable(node: onnx.NodeProto) -> bool:
    return (node.op_type not in _NONDETERMINISTIC and node.domain in ("", "ai.onnx")
            and not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute))


def fold_onnx_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """Evaluate (with onnx.reference) every node whose inputs are all constants (initializers or
    folded values), store the results as initializers and drop the nodes and the initializers no
    longer used. Only what changes is touched. Returns ``model``, modified in place."""
    from onnx.reference import ReferenceEvaluator

    g = model.graph
    init_names = {t.name for t in g.initializer}
    folded: dict[str, np.ndarray] = {}
    arrays: dict[str, np.ndarray] = {}  # initializers read by foldable nodes, decoded on demand

    def const(name: str) -> np.ndarray:
        if name in folded:
            return folded[name]
        if name not in arrays:
            arrays[name] = numpy_helper.to_array(next(t for t in g.initializer if t.name == name))
        return arrays[name]

    keep = []
    for node in g.node:
        ins = [i for i in node.input if i]
        if not _foldable(node) or not all(i in folded or i in init_names for i in ins):
            keep.append(node)
            continue
        values = {i: const(i) for i in ins}
        vin = [helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
               for i, v in values.items()]
        vout = [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output if o]
        one = helper.make_model(helper.make_graph([node], "fold", vin, vout), opset_imports=model.opset_import)
        try:
            outs = ReferenceEvaluator(one).run(None, values)
        except Exception:  # noqa: BLE001 - a node the reference cannot evaluate simply stays in the graph
            keep.append(node)
            continue
        for name, value in zip([o for o in node.output if o], outs, strict=True):
            folded[name] = np.asarray(value)
    if not folded:
        return model
    used = {i for n in keep for i in n.input} | {o.name for o in g.output}
    del g.node[:]
    g.node.extend(keep)
    dropped = {t.name for t in g.initializer if t.name not in used}
    if dropped:
        kept_inits = [t for t in g.initializer if t.name not in dropped]
        del g.initializer[:]
        g.initializer.extend(kept_inits)
    new = {k: v for k, v in folded.items() if k in used}
    g.initializer.extend(numpy_helper.from_array(v, k) for k, v in new.items())
    if model.ir_version < 4:  # before IR 4 every initializer is also a graph input
        kept_inputs = [i for i in g.input if i.name not in dropped]
        del g.input[:]
        g.input.extend(kept_inputs)
        g.input.extend(helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                       for k, v in new.items())
    kept_vi = [vi for vi in g.value_info if vi.name not in folded]
    del g.value_info[:]
    g.value_info.extend(kept_vi)
    return model


def _uses_external_data(model: onnx.ModelProto) -> bool:
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    return any(uses_external_data(t) for t in _get_all_tensors(model))


def _check_structure(model: onnx.ModelProto, source: str) -> None:
    g = model.graph
    if not g.node:
        raise ModelFormatError("the graph has no nodes (truncated?)", source=source)
    if not g.output:
        raise ModelFormatError("the graph declares no outputs (truncated?)", source=source)
    defined = {i.name for i in g.input} | {t.name for t in g.initializer}
    for n in g.node:
        defined.update(n.output)
    for o in g.output:
        if o.name not in defined:
            raise ModelFormatError(f"graph output {o.name!r} is never produced (truncated?)",
                                   source=source)


def _fix_input_dims(model: onnx.ModelProto, batch: int) -> None:
    inits = {t.name for t in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        if not vi.type.HasField("tensor_type"):
            raise ShapeError("graph input is not a tensor", tensor=vi.name)
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            raise ShapeError("graph input has no shape (rank unknown)", tensor=vi.name)
        for i, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value"):
                if d.dim_value <= 0:
                    raise ShapeError(f"dimension {i} is {d.dim_value}: zero-sized tensors are not "
                                     "supported", tensor=vi.name)
                continue
            label = f" ({d.dim_param!r})" if d.dim_param else ""
            if i == 0:
                d.Clear()
                d.dim_value = batch
            else:
                raise ShapeError(f"dimension {i}{label} is dynamic and cannot be resolved; export "
                                 "the model with a fixed input size", tensor=vi.name)
    # let inference recompute everything downstream of the fixed inputs
    del model.graph.value_info[:]
    for vi in model.graph.output:
        if vi.type.HasField("tensor_type"):
            vi.type.tensor_type.ClearField("shape")


def _check_shapes(model: onnx.ModelProto) -> None:
    g = model.graph
    known = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        known[vi.name] = vi
    inits = {t.name for t in g.initializer}
    producer = {o: (n.name or n.op_type) for n in g.node for o in n.output}
    for n in g.node:
        for o in n.output:
            if not o:
                continue
            vi = known.get(o)
            if vi is None or not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
                raise ShapeError("its shape could not be inferred", tensor=o, node=producer.get(o))
    for name, vi in known.items():
        if name in inits or not vi.type.HasField("tensor_type"):
            continue
        for i, d in enumerate(vi.type.tensor_type.shape.dim):
            if not d.HasField("dim_value"):
                raise ShapeError(f"dimension {i} is dynamic after shape inference "
                                 f"({d.dim_param or 'unknown'})", tensor=name, node=producer.get(name))
            if d.dim_value == 0:
                raise ShapeError(f"dimension {i} is zero: zero-sized tensors are not supported",
                                 tensor=name, node=producer.get(name))


def load_onnx(src: ModelSource, *, base_dir: str | os.PathLike | None = None,
              batch: int = 1) -> onnx.ModelProto:
    """Load, check and shape-infer an ONNX model; returns a new ModelProto with static shapes.

    ``src`` is a path, the serialized bytes or a ModelProto (never modified). Tensors stored as
    external data are read from ``base_dir`` (default: the model file's folder). A symbolic
    batch dimension (dim 0 of a graph input) is fixed to ``batch``.
    """
    if isinstance(src, onnx.ModelProto):
        source = "<ModelProto>"
        model = onnx.ModelProto()
        model.CopyFrom(src)
    elif isinstance(src, bytes | bytearray):
        source = "<bytes>"
        model = parse_model(bytes(src), source)
    elif isinstance(src, str | os.PathLike):
        path = Path(src)
        source = str(path)
        if not path.is_file():
            raise ModelFormatError("no such file", source=source)
        model = parse_model(path.read_bytes(), source)
        if base_dir is None:
            base_dir = path.parent
    else:
        raise TypeError(f"load_onnx takes a path, bytes or an onnx.ModelProto, not {type(src).__name__}")

    if not model.HasField("graph") or model.ir_version == 0:
        raise ModelFormatError("not an ONNX model (no graph or no IR version)", source=source)
    if _uses_external_data(model):
        if base_dir is None:
            raise ModelFormatError("the model stores tensors as external data; pass base_dir",
                                   source=source)
        from onnx.external_data_helper import load_external_data_for_model

        try:
            load_external_data_for_model(model, str(base_dir))
        except (OSError, ValueError, onnx.checker.ValidationError) as e:
            raise ModelFormatError(f"cannot read external tensor data: {e}", source=source) from None
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFormatError(f"fails the ONNX checker: {first}", source=source) from None
    _check_structure(model, source)
    # exporters compute some operands (torch's Pad widths) with constant subgraphs that shape
    # inference cannot see through: evaluate those first
    fold_onnx_constants(model)
    _fix_input_dims(model, batch)
    try:
        _infer_shapes(model)
    except onnx.shape_inference.InferenceError as e:
        raise ShapeError(f"ONNX shape inference failed: {str(e).strip()}") from None
    _check_shapes(model)
    return model


_STUB_ELEMENTS = 1 << 14  # larger initializers reach shape inference as type and dims only


def _inference_skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every large initializer reduced to its name, type and dims: all that shape
    inference reads of a weight (the small tensors that shapes are computed from keep their
    data). Serialising a VGG-16 twice for inference cost seconds; this costs nothing."""
    sk = onnx.ModelProto()
    sk.ir_version = model.ir_version
    sk.opset_import.extend(model.opset_import)
    g, src = sk.graph, model.graph
    g.name = src.name
    g.node.extend(src.node)
    g.input.extend(src.input)
    g.output.extend(src.output)
    g.value_info.extend(src.value_info)
    for t in src.initializer:
        if int(np.prod(t.dims, dtype=np.int64)) > _STUB_ELEMENTS:
            stub = g.initializer.add()
            stub.name, stub.data_type = t.name, t.data_type
            stub.dims.extend(t.dims)
        else:
            g.initializer.append(t)
    return sk


def _infer_shapes(model: onnx.ModelProto) -> None:
    """ONNX shape inference (strict, with data propagation) on the skeleton; its value_info and
    output types are written into ``model``."""
    inferred = onnx.shape_inference.infer_shapes(_inference_skeleton(model), check_type=True, strict_mode=True,
                                                 data_prop=True)
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    for out, inf in zip(model.graph.output, inferred.graph.output, strict=True):
        out.CopyFrom(inf)


def to_ir(src: ModelSource, *, base_dir: str | os.PathLike | None = None,
          after_pass: Callable[[str, Graph], None] | None = None) -> Graph:
    """Load, import and canonicalise a model; returns a verified IR graph."""
    graph = import_model(load_onnx(src, base_dir=base_dir))
    verify(graph)
    return verify(canonicalize(graph, after_pass=after_pass))
