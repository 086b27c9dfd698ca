"""``compile_model``: a model file -> a package, through the one visible pipeline.

    frontend.to_ir       load, check, shape-infer, import, canonicalise (passes.PIPELINE)
    partition.partition  engine segments vs host segments, every unsupported node reported
    lower.lower_segment  engine segment -> layer ops on buffers (numerics decided here)
    codegen.generate     schedule -> program + external-memory image
    report               per-layer MACs, bytes, modelled cycles, utilisation, roofline

``explain`` stops after partitioning and returns the support report.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from accelml.hdl.config import EngineConfig, preset
from accelml.hdl.errors import ModelFormatError, ShapeError
from accelml.sim.funcsim import FuncSim

from . import codegen, frontend, lower
from .partition import Device, Partition, partition

__all__ = ["compile_model", "CompiledModel", "CompiledSegment", "LayerReport", "load_model_source"]


@dataclass
class LayerReport:
    name: str
    kind: str
    macs: int
    weight_bytes: int
    act_bytes: int
    cycles: int
    bound_cycles: float
    tile_ops: int
    utilisation: float

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class CompiledSegment:
    index: int
    device: Device
    inputs: list[str]
    outputs: list[str]
    onnx: bytes | None = None  # host segments
    compiled: codegen.Compiled | None = None  # engine segments
    plan: lower.Plan | None = None
    layers: list[LayerReport] = field(default_factory=list)


@dataclass
class CompiledModel:
    cfg: EngineConfig
    name: str
    partition: Partition
    segments: list[CompiledSegment]
    inputs: list[dict]  # external name, shape, dtype, perm (external -> IR)
    outputs: list[dict]
    compile_seconds: float = 0.0
    host_preprocess: dict | None = None  # preprocessing the host applies before the inputs (JSON)
    bias_correction: dict = field(default_factory=lambda: {"samples": 0, "layers": 0})
    split_weights: bool = False  # weights in two BFP parts, two passes of products
    split_activations: bool = False  # convolution inputs in two BFP planes, one more pass of products

    @property
    def layers(self) -> list[LayerReport]:
        return [lr for s in self.segments for lr in s.layers]

    def summary(self) -> dict:
        layers = self.layers
        cycles = sum(lr.cycles for lr in layers)
        macs = sum(lr.macs for lr in layers)
        bound = sum(lr.bound_cycles for lr in layers)
        insns = sum(len(s.compiled.program.instructions) for s in self.segments if s.compiled)
        return {
            "instructions": insns, "engine_segments": sum(1 for s in self.segments if s.compiled),
            "host_segments": sum(1 for s in self.segments if s.onnx is not None), "macs": macs,
            "cycles": cycles, "latency_us": cycles / self.cfg.clock_mhz,
            "utilisation": macs / (cycles * self.cfg.peak_macs_per_cycle) if cycles else 0.0,
            "roofline_efficiency": bound / cycles if cycles else 0.0,
            "compile_seconds": self.compile_seconds,
        }

    def run_golden(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The whole model with every engine segment executed by the golden layer ops
        (``lower.run_golden``) and host segments on onnxruntime: the reference the package's
        functional-simulator run must equal bit for bit."""
        plans = iter([s.plan for s in self.segments if s.plan is not None])
        return self.partition.run(feeds, engine=lambda sg, f: lower.run_golden(next(plans), f))

    def report(self) -> str:
        cfg, s = self.cfg, self.summary()
        lines = [f"{self.name} on {cfg.describe()}",
                 f"{'layer':28} {'kind':12} {'MMACs':>9} {'KB moved':>9} {'cycles':>10} {'util':>6} {'roofline':>9}"]
        for lr in self.layers:
            lines.append(f"{lr.name[:28]:28} {lr.kind:12} {lr.macs / 1e6:9.2f} "
                         f"{(lr.weight_bytes + lr.act_bytes) / 1024:9.1f} {lr.cycles:10d} "
                         f"{100 * lr.utilisation:5.1f}% {lr.bound_cycles / max(lr.cycles, 1) * 100:8.1f}%")
        lines.append(f"total: {s['macs'] / 1e9:.3f} GMAC, {s['instructions']} instructions, {s['cycles']} cycles "
                     f"= {s['latency_us']:.1f} us at {cfg.clock_mhz:g} MHz; MVU utilisation "
                     f"{100 * s['utilisation']:.1f} %, roofline efficiency {100 * s['roofline_efficiency']:.1f} %; "
                     f"{s['engine_segments']} engine / {s['host_segments']} host segment(s); compiled in "
                     f"{s['compile_seconds']:.2f} s")
        resident = [b for seg in self.segments if seg.compiled is not None for b in seg.compiled.resident.values()]
        if resident:
            lines.append(f"resident activations: {len(resident)} buffers ({sum(n for _, n in resident)} vectors) stay "
                         "in the VRF between the layers that write and read them")
        if self.split_weights:
            lines.append("split weights: every layer's weights in two BFP parts, multiplied in two passes")
        if self.split_activations:
            lines.append("split activations: every convolution input in two BFP planes, multiplied in two passes")
        bc = self.bias_correction
        if bc["samples"]:
            lines.append(f"bias correction: {bc['layers']} layers, from {bc['samples']} calibration sample(s)")
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike) -> None:
        """Per-layer utilisation and roofline efficiency as a PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        layers = self.layers
        x = np.arange(len(layers))
        util = [100 * lr.utilisation for lr in layers]
        roof = [100 * lr.bound_cycles / max(lr.cycles, 1) for lr in layers]
        fig, ax = plt.subplots(figsize=(max(8, len(layers) * 0.18), 4.5))
        ax.bar(x, util, color="#4c72b0", label="MVU utilisation")
        ax.plot(x, roof, "o-", color="#dd8452", markersize=3, label="roofline efficiency")
        ax.set_ylim(0, 105)
        ax.set_xlabel("layer")
        ax.set_ylabel("%")
        s = self.summary()
        ax.set_title(f"{self.name} on {self.cfg.name}: utilisation {100 * s['utilisation']:.1f} %, "
                     f"roofline efficiency {100 * s['roofline_efficiency']:.1f} %")
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)


def load_model_source(src):
    """An ONNX path / bytes / ModelProto, or a TensorFlow SavedModel directory (converted with tf2onnx)."""
    if isinstance(src, str | os.PathLike) and Path(src).is_dir():
        from .tf_import import saved_model_to_onnx

        return saved_model_to_onnx(Path(src))
    return src


def _layer_reports(seg_compiled: codegen.Compiled, cfg: EngineConfig) -> list[LayerReport]:
    """Modelled cycles per layer from a timing-only run of the functional simulator."""
    sim = FuncSim(cfg, seg_compiled.mem_bytes, numerics=False)
    sim.run(seg_compiled.program)
    ends = sim.insn_end
    reports, prev = [], 0
    bpc = cfg.mem_bytes_per_cycle
    for info in seg_compiled.layers:
        end = int(ends[info.first_insn:info.last_insn].max()) if info.last_insn > info.first_insn else prev
        cycles = max(0, end - prev)
        prev = max(prev, end)
        moved = info.weight_bytes + info.act_bytes
        bound = max(info.macs / cfg.peak_macs_per_cycle, moved / bpc)
        util = info.macs / (cycles * cfg.peak_macs_per_cycle) if cycles else 0.0
        reports.append(LayerReport(info.name, info.kind, info.macs, info.weight_bytes, info.act_bytes, cycles,
                                   bound, info.tile_ops, util))
    return reports


POOLS = (0.5, 0.875)  # VRF fractions for resident activations tried by _schedule (and none)
LOOKAHEADS = (1, 2)  # weight chunks loaded ahead, tried by _schedule


def _schedule(plan: lower.Plan, cfg: EngineConfig) -> tuple[codegen.Compiled, list[LayerReport]]:
    """The segment's program with part of the VRF (``POOLS``) keeping activations resident where
    they fit or with every activation streamed through external memory (larger streaming regions:
    fewer bands and weight reloads), and with weights loaded ``LOOKAHEADS`` chunks ahead:
    whichever the cycle model finds fastest. The numerics are the same in every candidate."""
    best, tried = None, set()
    for pool in (*POOLS, 0.0):
        for lookahead in LOOKAHEADS:
            compiled = codegen.generate(plan, pool=pool, lookahead=lookahead)
            if (compiled.pool, lookahead) in tried:  # the pool did not fit: a schedule already timed
                continue
            tried.add((compiled.pool, lookahead))
            reports = _layer_reports(compiled, cfg)
            cycles = sum(r.cycles for r in reports)
            if best is None or cycles < best[0]:
                best = (cycles, compiled, reports)
    return best[1], best[2]


def _check_calibration(calibration, inputs: list[dict]) -> list[dict[str, np.ndarray]]:
    """Calibration samples as a list of feeds (external names and shapes), checked."""
    samples = list(calibration)
    if not samples:
        raise ShapeError("calibration needs at least one sample")
    out = []
    for i, feeds in enumerate(samples):
        if not isinstance(feeds, dict):
            raise ShapeError(f"calibration sample {i} is a {type(feeds).__name__}, not a dict of inputs")
        checked = {}
        for spec in inputs:
            name, shape = spec["name"], tuple(spec["shape"])
            if name not in feeds:
                raise ShapeError(f"calibration sample {i} has no value for this input", tensor=name)
            v = np.asarray(feeds[name], dtype=np.float32)
            if v.shape == shape[1:] and shape[:1] == (1,):  # a sample without its batch axis
                v = v[None]
            if v.shape != shape:
                raise ShapeError(f"calibration sample {i}: shape {v.shape}, the model takes {shape}", tensor=name)
            if not np.isfinite(v).all():
                raise ShapeError(f"calibration sample {i} holds NaN or infinity", tensor=name)
            checked[name] = v
        out.append(checked)
    return out


def compile_model(model, *, config: EngineConfig | str = "a10", format: str | None = None,
                  pack_first: bool = True, name: str | None = None, calibration=None,
                  split_weights: bool = False, split_activations: bool = False) -> CompiledModel:
    """Compile an ONNX model (path, bytes or ModelProto) or a SavedModel directory.

    ``calibration``: optional samples (each a dict of input name -> array of the input's shape)
    for empirical bias correction: each layer's bias absorbs the mean error its quantised weights
    add on these inputs (``lower.correct_biases``). Nothing else is learnt from them; without
    them the compile is data-free.

    ``split_weights``: every conv / dense weight as the sum of two BFP tensors (the second
    quantises what the first misses), multiplied in two passes that accumulate into the same sums:
    about twice the weight mantissa, for twice the products and weight traffic.

    ``split_activations``: every convolution / dense input stored as two BFP planes (the second
    quantises what the first misses, computed on the engine as each layer writes its output) and
    multiplied by the weights in one pass each: about twice the activation mantissa, for one more
    pass of products and twice the activation traffic. Pooling reads the first plane only."""
    t0 = time.perf_counter()
    cfg = preset(config) if isinstance(config, str) else config
    if format:
        cfg = cfg.with_format(format)
    source = load_model_source(model)
    host_pre = None
    if isinstance(source, onnx.ModelProto):  # JPEG decode / resize / normalisation split off on the host
        from .tf_import import HostPreprocess

        pre = HostPreprocess.from_onnx(source)
        host_pre = json.loads(pre.to_json()) if pre is not None else None
    graph = frontend.to_ir(source)
    part = partition(graph)
    segments = []
    for seg in part.segments:
        cs = CompiledSegment(seg.index, seg.device, list(seg.inputs), list(seg.outputs))
        if seg.device is Device.HOST:
            model_proto = seg.to_onnx(graph)
            cs.onnx = model_proto.SerializeToString()
        else:
            cs.plan = lower.lower_segment(seg.subgraph(graph), cfg, pack_first=pack_first,
                                          keep_float=calibration is not None, split_weights=split_weights,
                                          split_activations=split_activations)
        segments.append(cs)
    ins = [{"name": n, "shape": list(_external_shape(graph.shape(n), graph.input_perms.get(n))),
            "dtype": graph.tensor(n).dtype.value,
            "perm": list(graph.input_perms[n]) if n in graph.input_perms else None} for n in graph.inputs]
    outs = [{"name": n, "shape": [graph.shape(n)[p] for p in graph.output_perms[n]] if n in graph.output_perms
             else list(graph.shape(n)),
             "dtype": graph.tensor(n).dtype.value,
             "perm": list(graph.output_perms[n]) if n in graph.output_perms else None}
            for n in graph.outputs]
    if not graph.outputs:
        raise ModelFormatError("the model has no outputs", source=str(name or graph.name))
    plans = [cs.plan for cs in segments if cs.plan is not None]
    samples = _check_calibration(calibration, ins) if calibration is not None else []
    corrected = 0
    if samples and plans:
        from . import reference

        seg_inputs: list[list[dict]] = [[] for _ in plans]
        for feeds in samples:  # each engine segment's inputs, upstream engine segments run in float32
            ran = iter(range(len(plans)))  # engine segments run in order

            def record(sg, f, ran=ran):
                seg_inputs[next(ran)].append(f)
                return reference.run(sg, f, external=False)

            part.run(feeds, engine=record)
        corrected = sum(lower.correct_biases(plan, seg_inputs[i]) for i, plan in enumerate(plans))
    for cs in segments:
        if cs.plan is not None:
            cs.compiled, cs.layers = _schedule(cs.plan, cfg)
    cm = CompiledModel(cfg, name or graph.name, part, segments, ins, outs, host_preprocess=host_pre,
                       bias_correction={"samples": len(samples), "layers": corrected},
                       split_weights=bool(split_weights), split_activations=bool(split_activations))
    cm.compile_seconds = time.perf_counter() - t0
    return cm


def _external_shape(ir_shape, perm_ext_to_ir):
    """External shape from the IR shape: ir = transpose(ext, perm) -> ext[perm[i]] = ir[i]."""
    if perm_ext_to_ir is None:
        return tuple(ir_shape)
    ext = [0] * len(ir_shape)
    for i, p in enumerate(perm_ext_to_ir):
        ext[p] = ir_shape[i]
    return tuple(ext)
