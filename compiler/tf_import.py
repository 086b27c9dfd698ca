"""TensorFlow import: a SavedModel, a ``tf.function`` or a frozen GraphDef -> ONNX (tf2onnx).

    model = saved_model_to_onnx("export/")                 # signature "serving_default"
    model = function_to_onnx(fn, [tf.TensorSpec([1, 224, 224, 3], tf.float32, name="images")])
    model = frozen_graph_to_onnx(graph_def, ["images:0"], ["logits:0"])
    pre = HostPreprocess.from_onnx(model)                  # None, or the host preprocessing

Every result is checked with ``onnx.checker`` and written as IR version 8 / opset 17. Graph inputs
and outputs are named after the signature's keys (``function_to_onnx``: the TensorSpec names;
``frozen_graph_to_onnx``: the tensor names without ``:0``); outputs that are not a dict are named
``output_0``, ``output_1``, ...

Host preprocessing split: when the graph starts from encoded image bytes (DecodeJpeg, DecodePng,
DecodeImage), the part from the bytes to the image the featurizer reads (decode, resize, cast,
channel reversal, scale and mean subtraction, batch dimension) is not converted. It is found from
the graph structure: the data path from the decode op to the first convolution; the featurizer
starts at the last rank-4 float32 tensor on that path that the supported preprocessing ops lead
to. Only the featurizer, from that tensor to the outputs, is converted, with that tensor as its
input ``image``; the preprocessing becomes a ``HostPreprocess`` (stored as JSON in the ONNX
model's ``metadata_props`` under ``accelml.host_preprocess``) that the runtime applies with numpy
(runtime/host.py holds the description and its arithmetic; this module only finds it).
The description is checked against TensorFlow's own preprocessing on a probe image before it is
returned. An op it cannot describe ends the preprocessing: if the image already is a fixed-size
rank-4 float32 tensor there, the op stays in the featurizer graph; otherwise it raises
``UnsupportedOperatorError`` naming the op. docs/compiler-frontend.md lists what is described.

Without TensorFlow and tf2onnx installed, every entry point raises ``ModelFormatError`` telling
the user to install ``accelml[tf]``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import onnx

from accelml.hdl.errors import ModelFormatError, ShapeError, UnsupportedOperatorError
from accelml.runtime.host import PREPROCESS_KEY, HostPreprocess, host_preprocess

__all__ = ["HostPreprocess", "saved_model_to_onnx", "function_to_onnx", "frozen_graph_to_onnx",
           "host_preprocess", "OPSET", "IR_VERSION", "PREPROCESS_KEY"]

OPSET = 17
IR_VERSION = 8  # onnx writes a newer IR version by default than onnxruntime reads
FEATURIZER_INPUT = "image"

_DECODERS = {"DecodeJpeg": "jpeg", "DecodePng": "png", "DecodeImage": "image", "DecodeBmp": "bmp"}
_OTHER_DECODERS = {"DecodeAndCropJpeg", "DecodeGif", "DecodeWebP", "DecodeRaw"}
_CONVS = {"Conv2D", "DepthwiseConv2dNative", "_FusedConv2D", "Conv3D"}
_PASS = {"Identity", "EnsureShape", "Snapshot", "StopGradient", "CheckNumerics", "PreventGradient"}
_LAYOUT = {"ExpandDims", "Squeeze", "Reshape"}
_AFFINE = {"Sub", "Add", "AddV2", "BiasAdd", "Mul", "RealDiv", "Div"}
_PERMUTE = {"ReverseV2", "StridedSlice", "GatherV2", "Gather", "Slice"}
_RESIZE = {"ResizeBilinear": "bilinear", "ResizeNearestNeighbor": "nearest"}
# ops between the string input and the decode that pick one image out of a batch of one
_SELECT = {"Identity", "Squeeze", "Reshape", "StridedSlice", "GatherV2", "Gather", "Slice"} | _PASS


# -- TensorFlow access ---------------------------------------------------------------------------

def _tf(source: str):
    """Import TensorFlow and tf2onnx quietly, or raise a ModelFormatError naming ``source``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
        import tf2onnx  # noqa: F401
        import tf2onnx.convert  # noqa: F401
        import tf2onnx.tf_loader  # noqa: F401
    except ImportError as e:
        raise ModelFormatError(f"reading a TensorFlow model needs TensorFlow and tf2onnx ({e}); "
                               "install them with: pip install 'accelml[tf]'", source=source) from None
    for name in ("tf2onnx", "tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return tf


def _first_line(e: BaseException) -> str:
    """One line of an exception's text: the first, or the last when the first only introduces a
    traceback (TensorFlow's "in user code:")."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    return lines[-1] if lines[0].endswith(":") and len(lines) > 1 else lines[0]


def _tname(name: str) -> str:
    """A tensor name with its output index (``x`` -> ``x:0``)."""
    return name if ":" in name else f"{name}:0"


def _plain(name: str) -> str:
    """A tensor name without a ``:0`` suffix."""
    return name[:-2] if name.endswith(":0") else name


def _src(inp: str) -> tuple[str, int] | None:
    """A NodeDef input -> (producer node, output index); None for a control input."""
    if inp.startswith("^"):
        return None
    node, _, idx = inp.partition(":")
    return node, int(idx or 0)


# -- entry points --------------------------------------------------------------------------------

def saved_model_to_onnx(path: str | os.PathLike, *, signature: str = "serving_default") -> onnx.ModelProto:
    """Convert a TensorFlow SavedModel directory's serving signature to ONNX."""
    path = Path(path)
    source = str(path)
    if not path.is_dir():
        raise ModelFormatError("no such directory", source=source)
    if not (path / "saved_model.pb").is_file() and not (path / "saved_model.pbtxt").is_file():
        raise ModelFormatError("not a TensorFlow SavedModel (no saved_model.pb)", source=source)
    tf = _tf(source)
    try:
        loaded = tf.saved_model.load(source)
    except Exception as e:  # TensorFlow raises many types for unreadable SavedModels
        raise ModelFormatError(f"TensorFlow cannot load the SavedModel: {_first_line(e)}", source=source) from None
    sigs = sorted(k for k in getattr(loaded, "signatures", {}).keys() if not k.startswith("_"))
    if signature not in sigs:
        has = ", ".join(repr(s) for s in sigs) if sigs else "none"
        raise ModelFormatError(f"the SavedModel has no {signature!r} signature (its signatures: {has}); "
                               "export it with signatures={'serving_default': ...}", source=source)
    fn = loaded.signatures[signature]
    model = _convert_concrete(tf, fn, source)
    del loaded
    return model


def function_to_onnx(tf_function, input_signature=None) -> onnx.ModelProto:
    """Convert a ``tf.function`` traced with ``input_signature`` (a list of ``tf.TensorSpec``;
    default: the function's own)."""
    source = getattr(tf_function, "__name__", None) or getattr(tf_function, "name", None) or "<tf.function>"
    tf = _tf(str(source))
    if input_signature is None:
        input_signature = getattr(tf_function, "input_signature", None)
        if input_signature is None:
            raise ModelFormatError("the function has no input_signature; pass one", source=str(source))
    try:
        fn = tf_function.get_concrete_function(*input_signature)
    except Exception as e:
        raise ModelFormatError(f"cannot trace the function: {_first_line(e)}", source=str(source)) from None
    return _convert_concrete(tf, fn, str(source))


def frozen_graph_to_onnx(graph_def, inputs: list[str], outputs: list[str]) -> onnx.ModelProto:
    """Convert a frozen ``tf.compat.v1.GraphDef`` (no variables) between the named tensors."""
    source = "<GraphDef>"
    tf = _tf(source)
    import tf2onnx.tf_loader

    ins, outs = [_tname(n) for n in inputs], [_tname(n) for n in outputs]
    try:
        with tf.Graph().as_default():
            graph_def = tf2onnx.tf_loader.tf_optimize(ins, outs, graph_def)
    except Exception as e:
        raise ModelFormatError(f"TensorFlow cannot optimise the graph: {_first_line(e)}", source=source) from None
    renames = {n: _plain(n) for n in ins + outs}
    return _convert(tf, graph_def, ins, outs, renames, source)


# -- conversion ----------------------------------------------------------------------------------

def _convert_concrete(tf, fn, source: str) -> onnx.ModelProto:
    """Freeze a concrete function and convert it; inputs/outputs named after its structure."""
    import tf2onnx.tf_loader

    specs = [s for s in tf.nest.flatten(fn.structured_input_signature) if isinstance(s, tf.TensorSpec)]
    args = [t for t in fn.inputs[:len(specs)]]
    if any(t.dtype == tf.resource for t in args):
        raise ModelFormatError("the function takes a resource (variable) argument", source=source)
    ins = [t.name for t in args]
    outs = [t.name for t in fn.outputs if t.dtype != tf.resource]
    renames = {t: (s.name or _plain(t)) for t, s in zip(ins, specs, strict=True)}
    structured = fn.structured_outputs
    if isinstance(structured, dict) and len(structured) == len(outs):
        renames.update(zip(outs, sorted(structured), strict=True))
    else:
        renames.update({t: f"output_{i}" for i, t in enumerate(outs)})
    try:
        graph_def = tf2onnx.tf_loader.from_function(fn, ins, outs)
    except Exception as e:
        raise ModelFormatError(f"TensorFlow cannot freeze the function: {_first_line(e)}", source=source) from None
    return _convert(tf, graph_def, ins, outs, renames, source)


def _convert(tf, graph_def, ins: list[str], outs: list[str], renames: dict[str, str], source: str) -> onnx.ModelProto:
    import tf2onnx.convert

    split = _split_preprocess(tf, graph_def, ins, outs, renames, source)
    pre = None
    if split is not None:
        graph_def, ins, pre = split
    try:
        model, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=ins, output_names=outs, opset=OPSET,
                                                  tensors_to_rename=renames)
    except Exception as e:
        raise ModelFormatError(f"tf2onnx cannot convert the graph: {_first_line(e)}", source=source) from None
    return _finish(model, pre, source)


def _finish(model: onnx.ModelProto, pre: HostPreprocess | None, source: str) -> onnx.ModelProto:
    """Opset / IR version, TensorFlow ops tf2onnx left unconverted, the ONNX checker."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = OPSET
    model.ir_version = IR_VERSION
    bad = []
    for n in model.graph.node:
        if n.domain in ("", "ai.onnx") and not onnx.defs.has(n.op_type):
            bad.append((n.name, n.op_type, "a TensorFlow op that tf2onnx could not convert"))
    if bad:
        raise UnsupportedOperatorError(
            f"{source}: {len(bad)} TensorFlow op(s) have no ONNX conversion: "
            + ", ".join(f"{name} ({op})" for name, op, _ in bad), nodes=bad)
    if pre is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = PREPROCESS_KEY, pre.to_json()
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as e:
        raise ModelFormatError(f"the converted model fails the ONNX checker: {_first_line(e)}",
                               source=source) from None
    return model


# -- the host preprocessing split ----------------------------------------------------------------

class _State:
    """What the preprocessing has done so far, in canonical order: resize, permute, affine
    (``y[c] = x[perm[c]] * scale[c] + offset[c]``)."""

    def __init__(self, channels: int):
        self.channels = channels
        self.resize: tuple[str, bool, bool, tuple[int, int]] | None = None
        self.perm = list(range(channels))
        self.scale = np.ones(channels)
        self.offset = np.zeros(channels)

    def copy(self) -> _State:
        s = _State(self.channels)
        s.resize, s.perm, s.scale, s.offset = self.resize, list(self.perm), self.scale.copy(), self.offset.copy()
        return s


class _Graph:
    """A GraphDef imported for inspection: nodes, consumers, static shapes, evaluation."""

    def __init__(self, tf, graph_def):
        self.tf, self.graph_def = tf, graph_def
        self.nodes = {n.name: n for n in graph_def.node}
        self.consumers: dict[str, list[str]] = {n: [] for n in self.nodes}
        for n in graph_def.node:
            for inp in n.input:
                s = _src(inp)
                if s is not None and s[0] in self.consumers:
                    self.consumers[s[0]].append(n.name)
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.compat.v1.import_graph_def(graph_def, name="")
        self._sess = None

    def data_inputs(self, name: str) -> list[tuple[str, int]]:
        return [s for s in (_src(i) for i in self.nodes[name].input) if s is not None]

    def tensor(self, node: str, idx: int = 0):
        return self.graph.get_tensor_by_name(f"{node}:{idx}")

    def shape(self, node: str, idx: int = 0) -> list[int | None] | None:
        s = self.tensor(node, idx).shape
        return None if s.rank is None else list(s.as_list())

    def dtype(self, node: str, idx: int = 0):
        return self.tensor(node, idx).dtype

    def run(self, fetch, feeds=None):
        if self._sess is None:
            self._sess = self.tf.compat.v1.Session(graph=self.graph)
        return self._sess.run(fetch, feeds or {})

    def close(self):
        if self._sess is not None:
            self._sess.close()

    def ancestors(self, start: list[str]) -> set[str]:
        seen, todo = set(), list(start)
        while todo:
            n = todo.pop()
            if n in seen or n not in self.nodes:
                continue
            seen.add(n)
            todo.extend(s for s, _ in self.data_inputs(n))
        return seen

    def descendants(self, start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            n = todo.pop()
            if n in seen:
                continue
            seen.add(n)
            todo.extend(self.consumers.get(n, []))
        return seen

    def topo(self) -> list[str]:
        order, state = [], {}
        for root in self.nodes:
            stack = [(root, False)]
            while stack:
                n, done = stack.pop()
                if done:
                    order.append(n)
                    state[n] = 2
                    continue
                if state.get(n):
                    continue
                state[n] = 1
                stack.append((n, True))
                stack.extend((s, False) for s, _ in self.data_inputs(n) if s in self.nodes and not state.get(s))
        return order


def _unsupported(node, reason: str, source: str) -> UnsupportedOperatorError:
    return UnsupportedOperatorError(f"{source}: host preprocessing: {node.op} {node.name!r}: {reason}",
                                    nodes=[(node.name, node.op, reason)])


def _find_decoder(graph_def, source: str):
    """The one image decode op of the graph, or None."""
    decodes = [n for n in graph_def.node if n.op in _DECODERS or n.op in _OTHER_DECODERS]
    if not decodes:
        callers = {}
        for n in graph_def.node:
            for v in n.attr.values():
                for f in ([v.func] if v.HasField("func") else []):
                    callers.setdefault(f.name, []).append(n)
        for f in graph_def.library.function:
            for nd in f.node_def:
                if nd.op in _DECODERS or nd.op in _OTHER_DECODERS:
                    caller = (callers.get(f.signature.name) or [None])[0]
                    where = caller if caller is not None else nd
                    raise _unsupported(where, f"decodes images ({nd.op}) inside a function or loop (tf.map_fn "
                                       "over a batch?); decode one image per call, outside any loop", source)
        return None
    if len(decodes) > 1:
        reason = "the graph decodes more than one image"
        raise UnsupportedOperatorError(f"{source}: host preprocessing: {reason}: "
                                       + ", ".join(f"{n.name} ({n.op})" for n in decodes),
                                       nodes=[(n.name, n.op, reason) for n in decodes])
    d = decodes[0]
    if d.op in _OTHER_DECODERS:
        raise _unsupported(d, "this decoder is not supported on the host (DecodeJpeg, DecodePng, "
                           "DecodeImage, DecodeBmp are)", source)
    return d


def _image_input(g: _Graph, decode, ins: list[str], source: str) -> str:
    """The graph input the decode's bytes come from (through ops that pick one image)."""
    cur = _src(decode.input[0])[0]
    while True:
        node = g.nodes[cur]
        if f"{cur}:0" in ins:
            return f"{cur}:0"
        if node.op in _SELECT:
            cur = _src(node.input[0])[0]
            continue
        raise _unsupported(node, "the image bytes must come from a graph input (through indexing or "
                           "reshapes only)", source)


def _supported(op: str) -> bool:
    return op in _PASS or op in _LAYOUT or op in _AFFINE or op in _PERMUTE or op in _RESIZE or op == "Cast"


def _path_problem(node, on_path: list) -> str | None:
    """Why an op on the image path cannot be described, as far as its inputs tell."""
    if not _supported(node.op):
        return "not a supported preprocessing op"
    if len(on_path) > 1:
        if node.op in _AFFINE:
            return "combines the image with itself (per-image statistics?)"
        return "an operand other than the image depends on the image (a size computed from tf.shape?)"
    return None


def _const(g: _Graph, node: str, idx: int, image_nodes: set[str], user, source: str) -> np.ndarray:
    if node in image_nodes or g.ancestors([node]) & image_nodes:
        raise _unsupported(user, "an operand other than the image depends on the image (a size or "
                           "statistic computed from it?)", source)
    try:
        return np.asarray(g.run(g.tensor(node, idx)))
    except Exception as e:
        raise _unsupported(user, f"cannot evaluate its constant operand {node!r}: {_first_line(e)}",
                           source) from None


def _probe_shape(shape: list[int | None] | None) -> list[int]:
    return [d if d is not None else 5 + i for i, d in enumerate(shape or [])]


def _channel_perm(g: _Graph, node, data: tuple[str, int], state: _State) -> list[int] | None:
    """Evaluate a slicing / gathering / reversing op on a probe: the channel permutation it is
    (possibly adding or removing a leading batch dimension), or None if it is anything else (a
    crop, a channel subset, a spatial flip)."""
    in_shape = g.shape(*data)
    if not in_shape or in_shape[-1] not in (None, state.channels):
        return None
    shape = _probe_shape(in_shape)
    shape[-1] = state.channels
    rng = np.random.default_rng(1)
    dtype = g.dtype(*data).as_numpy_dtype
    probe = rng.permutation(np.arange(int(np.prod(shape)))).reshape(shape) % 251
    probe = probe.astype(dtype)
    try:
        out = np.asarray(g.run(g.tensor(node.name), {g.tensor(*data): probe}))
    except Exception:
        return None
    if out.size != probe.size or not _layout_ok(list(probe.shape), list(out.shape)):
        return None
    out = out.reshape(probe.shape)
    perm = []
    for c in range(state.channels):
        match = [k for k in range(state.channels) if np.array_equal(out[..., c], probe[..., k])]
        if len(match) != 1:
            return None
        perm.append(match[0])
    return perm


def _layout_ok(in_shape, out_shape) -> bool:
    """Adds or removes a leading batch dimension of 1 (or changes nothing)."""
    if in_shape is None or out_shape is None:
        return False
    def same(a, b):
        return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b, strict=True))

    return (same(in_shape, out_shape) or (len(out_shape) == len(in_shape) + 1 and out_shape[0] == 1
                                          and same(in_shape, out_shape[1:]))
            or (len(in_shape) == len(out_shape) + 1 and in_shape[0] in (1, None) and same(in_shape[1:], out_shape)))


def _step(g: _Graph, node, data: tuple[str, int], state: _State, image_nodes: set[str],
          source: str) -> str | None:
    """Apply one op to ``state``; returns None, or the reason the op cannot be described."""
    tf, op = g.tf, node.op
    in_shape, out_shape = g.shape(*data), g.shape(node.name)
    if op in _PASS:
        return None
    if op in _LAYOUT:
        return None if _layout_ok(in_shape, out_shape) else f"reshapes {in_shape} -> {out_shape}"
    if op == "Cast":
        dst = tf.as_dtype(node.attr["DstT"].type)
        src = tf.as_dtype(node.attr["SrcT"].type)
        if dst != tf.float32:
            return f"casts to {dst.name} (only casts to float32 are described)"
        if not (src.is_integer or src == tf.float32):
            return f"casts from {src.name}"
        return None
    if op in _RESIZE:
        if state.resize is not None:
            return "a second resize"
        size = _const(g, *g.data_inputs(node.name)[1], image_nodes, node, source).astype(np.int64).ravel()
        if size.shape != (2,) or (size <= 0).any():
            return f"resize size {size.tolist()}"
        state.resize = (_RESIZE[op], bool(node.attr["align_corners"].b), bool(node.attr["half_pixel_centers"].b),
                        (int(size[0]), int(size[1])))
        return None
    if op in _AFFINE:
        if g.dtype(*data) != tf.float32:
            return f"arithmetic on {g.dtype(*data).name} pixels (cast to float32 first)"
        operands = g.data_inputs(node.name)
        pos = operands.index(data)
        other = operands[1 - pos]
        c = _const(g, *other, image_nodes, node, source).astype(np.float64)
        if c.size == 1:
            c = np.full(state.channels, float(c.ravel()[0]))
        elif c.shape[-1] == state.channels and c.size == state.channels and (out_shape is None or len(out_shape) >= 1):
            c = c.reshape(state.channels)
        else:
            return f"a constant of shape {list(c.shape)} (only scalars and per-channel constants are described)"
        if op in ("Add", "AddV2", "BiasAdd"):
            state.offset = state.offset + c
        elif op == "Sub":
            if pos == 0:
                state.offset = state.offset - c
            else:
                state.scale, state.offset = -state.scale, c - state.offset
        elif op == "Mul":
            state.scale, state.offset = state.scale * c, state.offset * c
        else:  # RealDiv / Div
            if pos != 0:
                return "divides a constant by the image"
            state.scale, state.offset = state.scale / c, state.offset / c
        if not _layout_ok(in_shape, out_shape):
            return f"broadcasting {in_shape} -> {out_shape}"
        return None
    if op in _PERMUTE:
        p = _channel_perm(g, node, data, state)
        if p is None:
            return "not a channel permutation (a crop or channel subset cannot be described)"
        state.perm = [state.perm[k] for k in p]
        state.scale, state.offset = state.scale[p], state.offset[p]
        return None
    return "not a supported preprocessing op"


def _split_preprocess(tf, graph_def, ins: list[str], outs: list[str], renames: dict[str, str], source: str):
    """None if the graph takes no encoded image; else (featurizer GraphDef, its inputs, HostPreprocess).

    ``renames`` is updated: the featurizer input gets its ONNX name."""
    decode = _find_decoder(graph_def, source)
    if decode is None:
        return None
    g = _Graph(tf, graph_def)
    try:
        return _split_at(tf, g, decode, ins, outs, renames, source)
    finally:
        g.close()


def _split_at(tf, g: _Graph, decode, ins, outs, renames, source):
    image_input = _image_input(g, decode, ins, source)
    image_nodes = g.descendants(decode.name)
    order = g.topo()
    convs = [n for n in order if n in image_nodes and g.nodes[n].op in _CONVS]
    if not convs:
        raise _unsupported(decode, "no convolution follows the decoded image: cannot tell where the "
                           "featurizer starts", source)
    conv = g.nodes[convs[0]]
    # the data path, back from the first convolution's input to the decode
    chain, cur = [], g.data_inputs(conv.name)[0]
    while cur[0] != decode.name:
        node = g.nodes[cur[0]]
        operands = g.data_inputs(node.name)
        on_path = [s for s in operands if s[0] in image_nodes]
        data = operands[0] if operands[0] in on_path else on_path[0]
        chain.append((node, data, _path_problem(node, on_path)))
        cur = data
    chain.reverse()
    if cur[1] != 0:
        raise _unsupported(decode, "the featurizer reads an unexpected output of the decoder", source)

    # the decoder
    attrs = decode.attr
    decoder = _DECODERS[decode.op]
    if decode.op == "DecodeJpeg" and attrs["ratio"].i not in (0, 1):
        raise _unsupported(decode, f"decodes at ratio 1/{attrs['ratio'].i}", source)
    if "dtype" in attrs and tf.as_dtype(attrs["dtype"].type) not in (tf.uint8, tf.float32):
        raise _unsupported(decode, f"decodes to {tf.as_dtype(attrs['dtype'].type).name}", source)
    channels = attrs["channels"].i if "channels" in attrs else 0
    if channels == 0:  # as stored: take the channel count the featurizer expects
        for node, _, _ in chain:
            s = g.shape(node.name)
            if s and s[-1] in (1, 3):
                channels = s[-1]
                break
    if channels not in (1, 3):
        raise _unsupported(decode, f"decodes {channels or 'an unknown number of'} channels (1 or 3 are described)",
                           source)
    state = _State(channels)
    if "dtype" in attrs and tf.as_dtype(attrs["dtype"].type) == tf.float32:
        state.scale = state.scale / 255.0  # DecodeImage(dtype=float32) gives pixels / 255

    # walk forward; remember the last point where the image is a static rank-4 float32 NHWC tensor
    split, stop = None, None
    for i, (node, data, problem) in enumerate(chain):
        reason = problem or _step(g, node, data, state, image_nodes, source)
        if reason is not None:
            stop = (node, reason)
            break
        s, dt = g.shape(node.name), g.dtype(node.name)
        if dt == tf.float32 and s is not None and len(s) == 4 and s[3] == channels and s[0] in (1, None):
            if s[1] is None or s[2] is None:
                split = ("dynamic", node)
            else:
                split = (i, state.copy(), node)
    if split is None or split[0] == "dynamic":
        if stop is not None:
            raise _unsupported(stop[0], stop[1], source)
        if split is not None:
            raise ShapeError("the featurizer input has no fixed height and width: resize the decoded image to "
                             "a constant size in the graph", tensor=f"{split[1].name}:0", node=split[1].name)
        raise _unsupported(conv, "the image reaches the first convolution without becoming a rank-4 float32 "
                           f"NHWC tensor with {channels} channel(s)", source)
    idx, st, split_node = split
    h, w = g.shape(split_node.name)[1:3]
    if st.resize is None:
        resize, align, half = None, False, False
    else:
        resize, align, half, size = st.resize
        if tuple(size) != (h, w):
            raise _unsupported(split_node, f"the image is resized to {size} but reaches the featurizer as {h}x{w}",
                               source)
    name = FEATURIZER_INPUT if FEATURIZER_INPUT not in renames.values() else f"{FEATURIZER_INPUT}_pixels"
    pre = HostPreprocess(
        input=renames.get(image_input, _plain(image_input)), output=name, decoder=decoder, channels=channels,
        size=(int(h), int(w)), resize=resize, align_corners=align, half_pixel_centers=half,
        channel_order=tuple(int(p) for p in st.perm), scale=tuple(float(v) for v in st.scale),
        offset=tuple(float(v) for v in st.offset),
        dct_method=attrs["dct_method"].s.decode() if "dct_method" in attrs else "",
        tf_ops=tuple([decode.op] + [n.op for n, _, _ in chain[:idx + 1]]), tf_tensor=f"{split_node.name}:0")
    _verify(g, decode, split_node, pre, source)

    # the featurizer: everything the outputs need, with the split tensor as a placeholder
    keep = _featurizer_nodes(g, outs, split_node.name)
    if decode.name in keep or image_input.split(":")[0] in keep:
        before = (image_nodes - g.descendants(split_node.name)) | {decode.name}
        users = [n for n in order if n in keep and n != split_node.name
                 and any(s in before for s, _ in g.data_inputs(n))]
        node = g.nodes[users[0]] if users else decode
        raise _unsupported(node, f"the model also uses the image before {split_node.name!r}, where the "
                           "featurizer starts", source)
    gd = tf.compat.v1.GraphDef()
    gd.versions.CopyFrom(g.graph_def.versions)
    gd.library.CopyFrom(g.graph_def.library)
    for n in g.graph_def.node:
        if n.name not in keep:
            continue
        if n.name == split_node.name:
            ph = gd.node.add()
            ph.name, ph.op = n.name, "Placeholder"
            ph.attr["dtype"].type = tf.float32.as_datatype_enum
            ph.attr["shape"].shape.CopyFrom(tf.TensorShape([1, h, w, channels]).as_proto())
            continue
        new = gd.node.add()
        new.CopyFrom(n)
        del new.input[:]
        new.input.extend(i for i in n.input if not i.startswith("^") or i[1:] in keep)
    split_tensor = f"{split_node.name}:0"
    new_ins = [split_tensor] + [t for t in ins if t != image_input and t.split(":")[0] in keep]
    renames.pop(image_input, None)
    renames[split_tensor] = name
    return gd, new_ins, pre


def _featurizer_nodes(g: _Graph, outs: list[str], split: str) -> set[str]:
    seen, todo = set(), [_src(o)[0] for o in outs]
    while todo:
        n = todo.pop()
        if n in seen or n not in g.nodes:
            continue
        seen.add(n)
        if n != split:
            todo.extend(s for s, _ in g.data_inputs(n))
    return seen


def _verify(g: _Graph, decode, split_node, pre: HostPreprocess, source: str) -> None:
    """The description must reproduce TensorFlow's preprocessing on a probe image."""
    tf = g.tf
    h, w = pre.size
    shape = (h + 7, w + 13, pre.channels) if pre.resize else (h, w, pre.channels)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    out_dtype = g.dtype(decode.name)
    fed = pixels if out_dtype == tf.uint8 else (pixels.astype(np.float32) / np.float32(255.0))
    try:
        want = np.asarray(g.run(g.tensor(split_node.name), {g.tensor(decode.name): fed}), dtype=np.float32)
    except Exception as e:
        raise _unsupported(split_node, f"cannot run TensorFlow's preprocessing on a probe image: {_first_line(e)}",
                           source) from None
    got = pre.apply_pixels(pixels)
    want = want.reshape(got.shape) if want.size == got.size else want
    if want.shape != got.shape:
        raise _unsupported(split_node, f"TensorFlow's preprocessing gives shape {want.shape}, the host "
                           f"description {got.shape}", source)
    err = float(np.abs(got - want).max()) / max(1.0, float(np.abs(want).max()))
    if err > 1e-4:
        raise _unsupported(split_node, f"the host description differs from TensorFlow's preprocessing "
                           f"(relative error {err:.2g}); ops: {' -> '.join(pre.tf_ops)}", source)
