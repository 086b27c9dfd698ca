"""Shared helpers for the compiler tests: tiny ONNX graphs, onnxruntime runs, and the
"canonicalisation preserves meaning" check."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from accelml.compiler import reference
from accelml.compiler.frontend import canonicalize, import_model, load_onnx
from accelml.compiler.ir import Graph, verify
from accelml.compiler.onnx_export import to_onnx

TOL = 1e-5  # max |got - want| / max |want|


def make_model(nodes, inputs: dict[str, list], outputs: list[str] | dict[str, list],
               inits: dict[str, np.ndarray] | None = None, opset: int = 17,
               name: str = "g") -> onnx.ModelProto:
    """A model from ``onnx.helper`` nodes: float32 inputs with the given shapes (a str dim is
    symbolic), outputs by name (shapes left to inference unless given)."""
    ins = [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in inputs.items()]
    if isinstance(outputs, dict):
        outs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in outputs.items()]
    else:
        outs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, None) for k in outputs]
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()]
    m = helper.make_model(helper.make_graph(nodes, name, ins, outs, inits),
                          opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    # the checker wants output shapes; fill in the ones left open from shape inference
    inferred = {o.name: o for o in onnx.shape_inference.infer_shapes(m).graph.output}
    for o in m.graph.output:
        if not o.type.tensor_type.HasField("shape") and inferred[o.name].type.tensor_type.HasField("shape"):
            o.type.CopyFrom(inferred[o.name].type)
    return m


def ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds), strict=True))


def random_feeds(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        shape = [d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim]
        feeds[vi.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = max(float(np.max(np.abs(want))), 1e-30)
    return float(np.max(np.abs(got.astype(np.float64) - want))) / scale


def assert_close(got: dict, want: dict, tol: float = TOL, what: str = "") -> None:
    assert set(got) == set(want), (sorted(got), sorted(want))
    for k in want:
        err = rel_err(got[k], want[k])
        assert err <= tol, f"{what}: output {k!r} differs from onnxruntime by {err:.3g} (tol {tol})"


def compile_checked(model: onnx.ModelProto, feeds: dict[str, np.ndarray] | None = None, *,
                    tol: float = TOL, per_pass: bool = True) -> Graph:
    """Import and canonicalise ``model``, verifying the IR after every pass and (with
    ``per_pass``) checking after every pass that the reference interpreter still matches
    onnxruntime on the original model. The final graph is also exported back to ONNX and run on
    onnxruntime. Returns the canonical graph."""
    feeds = feeds if feeds is not None else random_feeds(model)
    want = ort_run(model, feeds)
    graph = verify(import_model(load_onnx(model)))
    assert_close(reference.run(graph, feeds), want, tol, "imported IR")

    def after(name: str, g: Graph) -> None:
        verify(g)
        if per_pass:
            assert_close(reference.run(g, feeds), want, tol, f"after pass {name}")

    graph = canonicalize(graph, after_pass=after)
    assert_close(reference.run(graph, feeds), want, tol, "canonical IR")
    # second opinion: the canonical IR exported to ONNX, on onnxruntime
    ir_feeds = {k: (v.transpose(graph.input_perms[k]) if k in graph.input_perms else v)
                for k, v in feeds.items()}
    exported = ort_run(to_onnx(graph), ir_feeds)
    for k, v in exported.items():
        if k in graph.output_perms:
            exported[k] = v.transpose(graph.output_perms[k])
    assert_close(exported, want, tol, "canonical IR exported to onnxruntime")
    return graph


def ops(graph: Graph) -> dict[str, int]:
    return {k.value: v for k, v in graph.op_counts().items()}
