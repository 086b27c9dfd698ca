"""Engine / host partitioning with an up-front support report.

``check_support(graph)`` lists EVERY node the engine cannot run (name, ONNX op type, reason)
before anything is lowered; ``SupportReport.render()`` is the text of
``accelml compile --explain``. ``partition(graph)`` assigns each node to the ENGINE or the HOST
(onnxruntime) and cuts the graph into an ordered list of segments, each a connected run of one
device, with the tensors that cross between segments as their inputs/outputs.

Placement: a node runs on the engine iff ``engine_support`` has no objection; additionally a
cheap element-wise or reshape node whose every producer is on the host stays on the host (moving
it to the engine would only add a transfer). Segments are formed by a topological schedule that
stays on one device as long as it has ready nodes, which keeps the number of switches low.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx

from accelml.hdl.errors import UnsupportedOperatorError

from .ir import DType, Graph, Node, OpKind
from .onnx_export import to_onnx

__all__ = ["Device", "UnsupportedNode", "SupportReport", "Segment", "Partition", "engine_support",
           "check_support", "require_engine", "partition", "explain"]


class Device(enum.Enum):
    ENGINE = "engine"
    HOST = "host"


@dataclass(frozen=True)
class UnsupportedNode:
    name: str
    op_type: str
    reason: str


_CHEAP = (OpKind.AFFINE, OpKind.ACT, OpKind.RESHAPE)


def _is_boundary_reshape(src: tuple[int, ...], dst: tuple[int, ...]) -> bool:
    """Flatten (N, C, H, W) -> (N, C*H*W), or a squeeze/unsqueeze of size-1 dims."""
    if len(src) == 4 and len(dst) == 2 and dst[0] == src[0]:
        return True
    return [d for d in src if d != 1] == [d for d in dst if d != 1]


def _engine_tensor(graph: Graph, name: str) -> str | None:
    """None if tensor ``name`` can live in engine memory, else why not."""
    t = graph.tensors.get(name)
    if t is None:
        return None
    if t.dtype is not DType.FLOAT32:
        return f"tensor {name!r} is {t.dtype.value}; the engine computes float32 tensors"
    if t.rank not in (2, 4):
        return f"tensor {name!r} has rank {t.rank}; the engine holds (1, C, H, W) or (1, C) tensors"
    if t.shape[0] != 1:
        return f"tensor {name!r} has batch {t.shape[0]}; the engine runs batch 1"
    return None


def engine_support(node: Node, graph: Graph) -> str | None:
    """None if the engine can run ``node``, else the reason it cannot."""
    op, a = node.op, node.attrs
    if op is OpKind.HOST:
        return a.reason or f"{a.op_type} is not an engine operation"
    for t in [*node.inputs, *node.outputs]:
        why = _engine_tensor(graph, t) if t and t not in graph.constants else None
        if why is not None:
            return why
    if op in (OpKind.CONV, OpKind.DENSE, OpKind.MAXPOOL, OpKind.AVGPOOL, OpKind.GLOBAL_AVGPOOL,
              OpKind.GLOBAL_MAXPOOL, OpKind.ADD, OpKind.ACT, OpKind.BATCHNORM):
        return None
    if op is OpKind.CONCAT:
        return None if a.axis == 1 else f"concat along axis {a.axis} (the engine concatenates channels)"
    if op is OpKind.AFFINE:
        return None if a.axis == 1 else f"per-axis scale/shift along axis {a.axis} (engine: channels)"
    if op is OpKind.RESHAPE:
        src, dst = graph.shape(node.inputs[0]), graph.shape(node.outputs[0])
        if _is_boundary_reshape(src, dst):
            return None
        return f"reshape {src} -> {dst} is not a flatten or squeeze"
    if op is OpKind.PAD:
        return "stand-alone Pad that could not be fused into a conv or pool"
    if op is OpKind.TRANSPOSE:
        return f"Transpose perm={list(a.perm)} that canonicalisation could not remove"
    raise AssertionError(op)


@dataclass
class SupportReport:
    graph: str
    total: int
    unsupported: list[UnsupportedNode]
    engine_ops: dict[str, int] = field(default_factory=dict)
    macs: int = 0

    @property
    def ok(self) -> bool:
        return not self.unsupported

    def render(self) -> str:
        n_eng = self.total - len(self.unsupported)
        ops = ", ".join(f"{k} {v}" for k, v in sorted(self.engine_ops.items(), key=lambda kv: -kv[1]))
        lines = [f"{self.graph}: {self.total} nodes after canonicalisation",
                 f"  engine: {n_eng} nodes ({ops}); {self.macs / 1e9:.3f} GMAC"]
        if self.ok:
            lines.append("  every node runs on the engine")
            return "\n".join(lines)
        lines.append(f"  not supported on the engine ({len(self.unsupported)}), run on the host:")
        w1 = max(len(u.name) for u in self.unsupported)
        w2 = max(len(u.op_type) for u in self.unsupported)
        for u in self.unsupported:
            lines.append(f"    {u.name:<{w1}}  {u.op_type:<{w2}}  {u.reason}")
        return "\n".join(lines)

    __str__ = render


def check_support(graph: Graph) -> SupportReport:
    """Every node the engine cannot run, with the reason, in graph order."""
    bad, ops = [], {}
    for n in graph.nodes:
        why = engine_support(n, graph)
        if why is None:
            ops[n.op.value] = ops.get(n.op.value, 0) + 1
        else:
            bad.append(UnsupportedNode(n.name, n.op_type, why))
    return SupportReport(graph.name, len(graph.nodes), bad, ops, graph.macs())


def require_engine(graph: Graph) -> SupportReport:
    """Raise UnsupportedOperatorError listing every node the engine cannot run."""
    rep = check_support(graph)
    if not rep.ok:
        raise UnsupportedOperatorError(
            f"{len(rep.unsupported)} node(s) cannot run on the engine:\n{rep.render()}",
            nodes=[(u.name, u.op_type, u.reason) for u in rep.unsupported])
    return rep


@dataclass
class Segment:
    index: int
    device: Device
    nodes: list[Node]
    inputs: list[str]   # tensors it reads that come from graph inputs or earlier segments
    outputs: list[str]  # tensors it makes that later segments or the graph outputs read

    def subgraph(self, graph: Graph) -> Graph:
        """This segment as a stand-alone IR graph (engine segments go to lowering)."""
        names = set(self.inputs) | {o for n in self.nodes for o in n.outputs}
        reads = {i for n in self.nodes for i in n.inputs if i}
        consts = {k: v for k, v in graph.constants.items() if k in reads}
        return Graph(name=f"{graph.name}_seg{self.index}", nodes=list(self.nodes),
                     tensors={k: graph.tensors[k] for k in names | consts.keys()},
                     inputs=list(self.inputs), outputs=list(self.outputs), constants=consts,
                     opsets=dict(graph.opsets))

    def to_onnx(self, graph: Graph) -> onnx.ModelProto:
        """This segment as an ONNX model (host segments run on onnxruntime)."""
        return to_onnx(graph, self.nodes, inputs=self.inputs, outputs=self.outputs,
                       name=f"{graph.name}_seg{self.index}")


@dataclass
class Partition:
    graph: Graph
    report: SupportReport
    segments: list[Segment]
    placement: dict[str, Device]
    notes: dict[str, str]  # supported nodes placed on the host, and why

    def render(self) -> str:
        lines = [self.report.render(), f"  partition: {len(self.segments)} segment(s)"]
        for s in self.segments:
            lines.append(f"    #{s.index} {s.device.value:<6} {len(s.nodes):4d} node(s)  "
                         f"in: {', '.join(s.inputs) or '-'}  out: {', '.join(s.outputs)}")
        for name, why in self.notes.items():
            lines.append(f"    note: {name} runs on the host: {why}")
        return "\n".join(lines)

    __str__ = render

    def run(self, feeds: Mapping[str, np.ndarray],
            engine: Callable[[Graph, dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None,
            ) -> dict[str, np.ndarray]:
        """Execute segment by segment (external layout in and out, like ``reference.run``):
        host segments on onnxruntime, engine segments with ``engine(subgraph, feeds)``
        (default: the float32 reference interpreter)."""
        from accelml.runtime.executor import FunctionSegment, HostSegment, permuted, run_segments

        from . import reference

        g = self.graph
        if engine is None:
            engine = lambda sg, f: reference.run(sg, f, external=False)  # noqa: E731
        env = {name: permuted(np.asarray(feeds[name]), g.input_perms.get(name)) for name in g.inputs}
        def on_engine(sg: Graph):
            return lambda f: engine(sg, dict(f))

        runners = [FunctionSegment(list(s.inputs), list(s.outputs), on_engine(s.subgraph(g)))
                   if s.device is Device.ENGINE else
                   HostSegment(list(s.inputs), list(s.outputs), s.to_onnx(g).SerializeToString())
                   for s in self.segments]
        env = run_segments(runners, env)
        out = {}
        for name in g.outputs:
            v = env[name] if name in env else g.constants[name]
            out[name] = permuted(v, g.output_perms[name]) if name in g.output_perms else v
        return out


def _place(graph: Graph) -> tuple[dict[str, Device], dict[str, str]]:
    place, notes = {}, {}
    prod = graph.producers()
    for n in graph.nodes:
        if engine_support(n, graph) is not None:
            place[n.name] = Device.HOST
            continue
        srcs = [prod[i] for i in n.inputs if i in prod]
        if n.op in _CHEAP and srcs and all(place[p.name] is Device.HOST for p in srcs):
            place[n.name] = Device.HOST
            notes[n.name] = "cheap op whose inputs all come from the host (saves a transfer)"
        else:
            place[n.name] = Device.ENGINE
    return place, notes


def partition(graph: Graph) -> Partition:
    """Split a canonical graph into engine and host segments (see the module docstring)."""
    report = check_support(graph)
    place, notes = _place(graph)
    prod = graph.producers()
    deps = {n.name: {prod[i].name for i in n.inputs if i in prod} for n in graph.nodes}
    users: dict[str, list[Node]] = {}
    for n in graph.nodes:
        for d in deps[n.name]:
            users.setdefault(d, []).append(n)
    waiting = {n.name: len(deps[n.name]) for n in graph.nodes}
    ready = [n for n in graph.nodes if waiting[n.name] == 0]
    pos = {n.name: k for k, n in enumerate(graph.nodes)}
    runs: list[tuple[Device, list[Node]]] = []
    device = place[ready[0].name] if ready else Device.ENGINE
    while ready:
        mine = [n for n in ready if place[n.name] is device]
        if not mine:
            device = Device.HOST if device is Device.ENGINE else Device.ENGINE
            continue
        n = min(mine, key=lambda m: pos[m.name])
        ready.remove(n)
        if not runs or runs[-1][0] is not device:
            runs.append((device, []))
        runs[-1][1].append(n)
        for u in users.get(n.name, []):
            waiting[u.name] -= 1
            if waiting[u.name] == 0:
                ready.append(u)
    seg_of = {n.name: k for k, (_, ns) in enumerate(runs) for n in ns}
    segments = []
    for k, (dev, ns) in enumerate(runs):
        made = {o for n in ns for o in n.outputs}
        ins: list[str] = []
        for n in ns:
            for i in n.inputs:
                if i and i not in made and i not in graph.constants and i not in ins:
                    ins.append(i)
        outs = []
        for n in ns:
            for o in n.outputs:
                later = any(seg_of[u.name] > k for u in users.get(n.name, []) if o in u.inputs)
                if (later or o in graph.outputs) and o not in outs:
                    outs.append(o)
        segments.append(Segment(k, dev, ns, ins, outs))
    return Partition(graph, report, segments, place, notes)


def explain(src, **kwargs) -> str:
    """The ``--explain`` text for a model path / bytes / ModelProto."""
    from .frontend import to_ir

    return partition(to_ir(src, **kwargs)).render()
