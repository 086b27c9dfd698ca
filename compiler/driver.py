"""``compile_model``: a model file -> a package, through the one visible pipeline.

    frontend.to_ir       load, check, shape-infer, import, canonicalise (passes.PIPELINE)
    partition.partition  engine segments vs host segments, every unsupported node reported
    precision            per-layer numerics under a latency budget (precision.py)
    lower.lower_segment  engine segment -> layer ops on buffers (numerics decided here)
    codegen.generate     schedule -> program + external-memory image
    report               per-layer MACs, bytes, modelled cycles, utilisation, roofline

``explain`` stops after partitioning and returns the support report.
"""

from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx

from accelml.hdl.config import EngineConfig, preset
from accelml.hdl.errors import CapacityError, ConfigError, ModelFormatError
from accelml.sim.funcsim import FuncSim

from . import codegen, frontend, lower
from . import precision as prec_policy
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

    @property
    def roofline_share(self) -> float:
        """The layer's own bound over its cycles, at most 1: per-layer cycles are the advance of the
        network's completion time, so a layer whose weights or inputs were loaded during earlier
        layers can take fewer cycles than its own bound; it is then shown at 100 %."""
        return min(1.0, self.bound_cycles / self.cycles) if self.cycles else 1.0

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
    host_postprocess: dict | None = None  # decoding the host applies after the outputs (runtime.postprocess)
    bias_correction: dict = field(default_factory=lambda: {"samples": 0, "layers": 0})
    split_weights: bool = False  # weights in two BFP parts, two passes of products
    split_activations: bool = False  # convolution inputs in two BFP planes, one more pass of products
    precision: dict = field(default_factory=dict)  # the per-layer precision choice (manifest "precision")

    @property
    def layers(self) -> list[LayerReport]:
        return [lr for s in self.segments for lr in s.layers]

    def summary(self) -> dict:
        """Whole-network figures. The roofline bound is max(MACs / peak, unavoidable bytes /
        memory bytes per cycle), the unavoidable bytes being the constant image (weights, biases)
        and each engine segment's inputs and outputs, never the schedule's own spills, so a worse
        schedule never scores better (docs/architecture.md, "Performance figures")."""
        layers = self.layers
        cycles = sum(lr.cycles for lr in layers)
        macs = sum(lr.macs for lr in layers)
        unavoidable = sum(_unavoidable_bytes(s, self.cfg) for s in self.segments if s.compiled is not None)
        bound = max(macs / self.cfg.peak_macs_per_cycle, unavoidable / self.cfg.mem_bytes_per_cycle)
        insns = sum(len(s.compiled.program.instructions) for s in self.segments if s.compiled)
        return {
            "roofline_bound_cycles": bound, "unavoidable_bytes": unavoidable,
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
                         f"{100 * lr.utilisation:5.1f}% {100 * lr.roofline_share:8.1f}%")
        lines.append(f"total: {s['macs'] / 1e9:.3f} GMAC, {s['instructions']} instructions, {s['cycles']} cycles "
                     f"= {s['latency_us']:.1f} us at {cfg.clock_mhz:g} MHz; MVU utilisation "
                     f"{100 * s['utilisation']:.1f} %, roofline efficiency {100 * s['roofline_efficiency']:.1f} %; "
                     f"{s['engine_segments']} engine / {s['host_segments']} host segment(s); compiled in "
                     f"{s['compile_seconds']:.2f} s")
        lines.append(f"roofline: the network's bound is {s['roofline_bound_cycles']:.0f} cycles (max of MACs at peak "
                     f"and {s['unavoidable_bytes'] / 1e6:.2f} MB of weights, inputs and outputs at "
                     f"{cfg.mem_bytes_per_cycle:g} B/cycle); per-layer rows attribute it and stop at 100 % where a "
                     "layer's data arrived during earlier layers")
        resident = [b for seg in self.segments if seg.compiled is not None for b in seg.compiled.resident.values()]
        if resident:
            lines.append(f"resident activations: {len(resident)} buffers ({sum(n for _, n in resident)} vectors) stay "
                         "in the VRF between the layers that write and read them")
        if self.split_weights:
            lines.append("split weights: every layer's weights in two BFP parts, multiplied in two passes")
        if self.split_activations:
            lines.append("split activations: every convolution input in two BFP planes, multiplied in two passes")
        if self.precision:
            lines.append(precision_summary(self.precision))
        bc = self.bias_correction
        if bc["samples"]:
            kind = "synthetic" if bc.get("synthetic") else "calibration"
            lines.append(f"bias correction: {bc['layers']} layers, from {bc['samples']} {kind} sample(s)")
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike) -> None:
        """Per-layer utilisation and roofline efficiency as a PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        layers = self.layers
        x = np.arange(len(layers))
        util = [100 * lr.utilisation for lr in layers]
        roof = [100 * lr.roofline_share for lr in layers]
        fig, ax = plt.subplots(figsize=(max(8, len(layers) * 0.18), 4.5))
        ax.bar(x, util, color="#4c72b0", label="MVU utilisation")
        ax.plot(x, roof, "o-", color="#dd8452", markersize=3, label="roofline efficiency (per-layer attribution)")
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


def _unavoidable_bytes(seg: CompiledSegment, cfg: EngineConfig) -> int:
    """Bytes an engine segment cannot avoid moving: its constant image (weights, biases) and its
    inputs and outputs in their engine encoding."""
    c, plan = seg.compiled, seg.plan
    total = sum(len(blob) for _, blob in c.image.chunks)
    for views in (plan.inputs, plan.outputs):
        for buf in views.values():
            vb = cfg.fp_vector_bytes if buf.fp32 else cfg.bfp_vector_bytes
            total += buf.h * buf.w * buf.cb * vb * (2 if c.buffers[buf.base].get("split") else 1)
    return total


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


PRECISION_ROUNDS = 6  # chosen programs the budgeted policy times at most
PRECISION_SLACK = 0.1  # ... stopping at the first that uses at least 90 % of the budget's extra cycles
def _timing(plan: lower.Plan, cfg: EngineConfig, params: tuple[float, int, str]) -> dict[str, int]:
    """Modelled cycles per layer of ``plan`` on one schedule (pool, lookahead, issue order)."""
    compiled = codegen.generate(plan, pool=params[0], lookahead=params[1], order=params[2])
    return {r.name: r.cycles for r in _layer_reports(compiled, cfg)}


POOLS = (0.5, 0.875)  # VRF fractions for resident activations tried by _schedule (and none)
LOOKAHEADS = (1, 2)  # weight chunks loaded ahead, tried by _schedule


def _schedule(plan: lower.Plan, cfg: EngineConfig) -> tuple[codegen.Compiled, list[LayerReport],
                                                               tuple[float, int, str]]:
    """The segment's program with part of the VRF (``POOLS``) keeping activations resident where
    they fit or with every activation streamed through external memory (larger streaming regions:
    fewer bands and weight reloads), and with weights loaded ``LOOKAHEADS`` chunks ahead:
    whichever the cycle model finds fastest (in the first of ``codegen.ISSUE_ORDERS``); then that
    one in the other issue orders. The numerics are the same in every candidate. Returns the
    program, its layer reports and its schedule (pool, lookahead, issue order)."""
    best, tried, tiles = None, set(), {}

    def timed(pool: float, lookahead: int, order: str) -> None:
        nonlocal best
        compiled = codegen.generate(plan, pool=pool, lookahead=lookahead, tile_cache=tiles, order=order)
        # a pool that did not fit may give a program already timed; the same effective pool can
        # still lay buffers out differently, so the program itself, not the pool, says which
        key = compiled.program.to_bytes()
        if key in tried:
            return
        tried.add(key)
        reports = _layer_reports(compiled, cfg)
        cycles = sum(r.cycles for r in reports)
        if best is None or cycles < best[0]:
            best = (cycles, compiled, reports, (compiled.pool, lookahead, order))

    first, *others = codegen.ISSUE_ORDERS
    for pool in (*POOLS, 0.0):
        for lookahead in LOOKAHEADS:
            timed(pool, lookahead, first)
    pool, lookahead, _ = best[3]
    for order in others:
        timed(pool, lookahead, order)
    return best[1], best[2], best[3]


def compile_model(model, *, config: EngineConfig | str = "a10", format: str | None = None,
                  pack_first: bool = True, name: str | None = None, calibration=None,
                  split_weights: bool = False, split_activations: bool = False,
                  precision: str | None = None, latency_budget: float | None = None,
                  weight_rounding: str = "nearest", postprocess: str | None = None) -> CompiledModel:
    """Compile an ONNX model (path, bytes or ModelProto) or a SavedModel directory.

    ``precision``: the per-layer precision policy (``precision.py``): ``"fast"`` (single pass
    everywhere), ``"balanced"`` (the default: the layers where it pays get split weights and / or
    split activations within a modelled latency of 1.3x the fast program) or ``"exact"`` (every
    layer split); ``latency_budget``: the balanced policy with another budget, a ratio (>= 1) to
    the fast program's modelled latency. The choice is recorded per layer (``precision``).
    ``weight_rounding="min-error"``: the budgeted policies may also give a layer error-aware weight
    rounding (``bfp.quantize_min_error``) where it lowers that layer's measured weight error.

    ``calibration``: optional samples (each a dict of input name -> array of the input's shape).
    The budgeted policies measure each layer's error on them instead of synthetic inputs, give the
    single-pass layers error-compensating weight rounding where it lowers their error on these
    inputs (``lower.compensate_rounding``), and every layer gets empirical bias correction: its
    bias absorbs the mean error its quantised weights add on these inputs (``lower.correct_biases``).
    Without them the budgeted policies do both on synthetic samples (``precision.SYNTHETIC_CALIBRATION``;
    ``bias_correction`` records ``synthetic``); ``fast`` and ``exact`` stay uncalibrated.

    ``split_weights`` / ``split_activations`` (the ``manual`` policy, not combinable with the
    others): every conv / dense weight as the sum of two BFP tensors (the second quantises what
    the first misses), multiplied in two passes that accumulate into the same sums; every
    convolution / dense input stored as two BFP planes (the second quantises what the first
    misses, computed on the engine as each layer writes its output), one more pass of products and
    twice the activation traffic. Pooling reads the first plane only.

    ``postprocess="ssd"``: the model's outputs are SSD multibox heads; the package declares the host
    decoding and NMS that ``Model.run`` applies after them (``accelml.runtime.postprocess``)."""
    t0 = time.perf_counter()
    if postprocess not in (None, "ssd"):
        raise ConfigError(f"unknown postprocess {postprocess!r}; known: ssd")
    req = prec_policy.request(precision, latency_budget, split_weights=split_weights,
                              split_activations=split_activations, weight_rounding=weight_rounding)
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
    host_post = None
    if postprocess == "ssd":
        from accelml.runtime.postprocess import SsdPostprocess

        host_post = SsdPostprocess.for_outputs(outs, ins[0]["shape"])
    samples = prec_policy.check_calibration(calibration, ins) if calibration is not None else []
    part = partition(graph)
    segments, subgraphs = [], []
    for seg in part.segments:
        cs = CompiledSegment(seg.index, seg.device, list(seg.inputs), list(seg.outputs))
        if seg.device is Device.HOST:
            cs.onnx = seg.to_onnx(graph).SerializeToString()
        else:
            subgraphs.append(seg.subgraph(graph))
        segments.append(cs)
    ctx = _Context(cfg, part, subgraphs, pack_first, samples, ins)
    chosen = _compile_precision(ctx, req)
    bias_correction = {"samples": len(chosen.calibrated_on), "layers": chosen.corrected}
    if chosen.calibrated_on and not samples:
        bias_correction["synthetic"] = True
    for cs, plan, (compiled, reports) in zip([c for c in segments if c.onnx is None], chosen.plans,
                                             chosen.schedules, strict=True):
        cs.plan, cs.compiled, cs.layers = plan, compiled, reports
    convs = [op for plan in chosen.plans for op in plan.ops if isinstance(op, lower.ConvOp)]
    cm = CompiledModel(cfg, name or graph.name, part, segments, ins, outs, host_preprocess=host_pre,
                       bias_correction=bias_correction,
                       split_weights=bool(convs) and all(op.wq_lo is not None for op in convs),
                       split_activations=bool(convs) and all(
                           p.bases[op.src.base].split for p in chosen.plans for op in p.ops
                           if isinstance(op, lower.ConvOp)))
    cm.precision = _precision_record(req, chosen, bool(samples))
    cm.host_postprocess = host_post
    cm.compile_seconds = time.perf_counter() - t0
    return cm


@dataclass
class _Context:
    """What every precision candidate is lowered from."""

    cfg: EngineConfig
    part: Partition
    subgraphs: list  # engine segments' subgraphs, in order
    pack_first: bool
    samples: list[dict[str, np.ndarray]]  # checked calibration samples (external feeds)
    inputs: list[dict]
    weight_caches: list[dict] = field(init=False)  # per segment: lower_segment's weight_cache

    def __post_init__(self) -> None:
        self.weight_caches = [{} for _ in self.subgraphs]

    def lower(self, precs: list[dict[str, lower.LayerPrecision]] | None = None, **kw) -> list[lower.Plan]:
        """Every engine segment lowered (the candidates share their rounded weights)."""
        return [lower.lower_segment(sg, self.cfg, pack_first=self.pack_first,
                                    precision=precs[i] if precs else None, weight_cache=self.weight_caches[i], **kw)
                for i, sg in enumerate(self.subgraphs)]

    def segment_inputs(self, feeds_list: list[dict[str, np.ndarray]]) -> list[list[dict]]:
        """Each engine segment's inputs (IR layout) for each feed, upstream engine segments in float32."""
        from . import reference

        seg_inputs: list[list[dict]] = [[] for _ in self.subgraphs]
        for feeds in feeds_list:
            ran = iter(range(len(self.subgraphs)))  # engine segments run in order

            def record(sg, f, ran=ran):
                seg_inputs[next(ran)].append(f)
                return reference.run(sg, f, external=False)

            self.part.run(feeds, engine=record)
        return seg_inputs

    def correct(self, plans: list[lower.Plan], compensate: list[dict[str, lower.LayerPrecision]] | None = None,
                samples: list[dict[str, np.ndarray]] | None = None) -> int:
        """Bias correction of every plan on ``samples`` (default: the calibration samples); with
        ``compensate`` (the plans' per-layer choices) error-compensating rounding too
        (``lower.calibrate``: one pass), recorded in those choices."""
        samples = self.samples if samples is None else samples
        if not samples or not plans:
            return 0
        seg_inputs = self.segment_inputs(samples)
        corrected = 0
        for i, plan in enumerate(plans):
            names, n = lower.calibrate(plan, seg_inputs[i], compensate=compensate is not None, correct=True)
            corrected += n
            for name in names:
                lp = compensate[i].get(name, lower.LayerPrecision(bias_correction=True))
                compensate[i][name] = replace(lp, rounding=lower.Rounding.COMPENSATED)
        return corrected


@dataclass
class _Chosen:
    plans: list[lower.Plan]
    schedules: list[tuple[codegen.Compiled, list[LayerReport]]]
    corrected: int = 0
    fast: list[list[LayerReport]] | None = None  # the fast program's per-layer reports (budget, exact)
    noise: dict[str, prec_policy.LayerNoise] = field(default_factory=dict)
    precs: list[dict[str, lower.LayerPrecision]] | None = None
    calibrated_on: list = field(default_factory=list)  # the samples rounding / biases were calibrated on

    @property
    def cycles(self) -> int:
        return sum(r.cycles for _, reports in self.schedules for r in reports)


def _uniform(ctx: _Context, layer: lower.LayerPrecision) -> list[dict[str, lower.LayerPrecision]]:
    return [{n.name: layer for n in sg.nodes} for sg in ctx.subgraphs]


def _compile_precision(ctx: _Context, req: prec_policy.PrecisionRequest) -> _Chosen:
    """Lower, bias-correct and schedule every engine segment with the requested precision."""
    bc = bool(ctx.samples)
    if req.policy in (prec_policy.Policy.FAST, prec_policy.Policy.MANUAL, prec_policy.Policy.EXACT):
        both = req.policy is prec_policy.Policy.EXACT
        layer = lower.LayerPrecision(req.split_weights or both, req.split_activations or both, bc)
        precs = _uniform(ctx, layer)
        plans = ctx.lower(precs, keep_float=bc)
        corrected = ctx.correct(plans)
        fast = [r for _, r in (_schedule(p, ctx.cfg)[:2] for p in ctx.lower())] if both else None
        return _Chosen(plans, [_schedule(p, ctx.cfg)[:2] for p in plans], corrected, fast, precs=precs,
                       calibrated_on=ctx.samples)
    # budgeted: measure, cost, choose, verify
    fast_plans = ctx.lower()
    fast_sched = [_schedule(p, ctx.cfg) for p in fast_plans]
    fast_total = sum(r.cycles for _, reports, _ in fast_sched for r in reports)
    limit = req.budget * fast_total
    feeds = ctx.samples[:prec_policy.MEASURE_SAMPLES] or prec_policy.synthetic_samples(ctx.inputs)
    # without calibration samples, rounding and biases are calibrated on synthetic ones: always calibrated
    cal = ctx.samples or prec_policy.synthetic_samples(ctx.inputs, prec_policy.SYNTHETIC_CALIBRATION)
    both = lower.LayerPrecision(True, True)
    noise: dict[str, prec_policy.LayerNoise] = {}
    mes = (ctx.lower(_uniform(ctx, replace(both, rounding=lower.Rounding.MIN_ERROR))) if req.min_error_rounding
           else [None] * len(ctx.subgraphs))
    for near, me, sin, sg in zip(ctx.lower(_uniform(ctx, both)), mes, ctx.segment_inputs(feeds), ctx.subgraphs,
                                 strict=True):
        noise.update(prec_policy.measure(near, me, sin, sg))
    upgrades, params = [], []
    for plan, (_, _, sched) in zip(fast_plans, fast_sched, strict=True):
        params.append(sched)
        upgrades += prec_policy.upgrade_costs(plan, functools.partial(_timing, cfg=ctx.cfg, params=params[-1]))
    # the per-upgrade costs are estimates: the cycles offered to the greedy choice are scaled (a
    # bracketing search) until the cycle model of the whole chosen program (on the fast program's
    # schedule) fits the budget; the least noisy program that fits is kept
    extra = limit - fast_total
    best, scale, lo, hi, seen = None, 1.0, 0.0, None, set()
    for _ in range(PRECISION_ROUNDS):
        taken = prec_policy.choose(noise, upgrades, scale * extra)
        key = tuple(taken)
        if key in seen:
            break
        seen.add(key)
        layer_precs = prec_policy.layer_precisions(noise, taken, True)
        sw = {n for n, lp in layer_precs.items() if lp.split_weights}
        sa = {n for n, lp in layer_precs.items() if lp.split_activations}
        try:
            total = sum(sum(_timing(prec_policy.timing_variant(p, split_weights=sw, split_activations=sa), ctx.cfg,
                                    params[i]).values()) for i, p in enumerate(fast_plans))
        except CapacityError:  # split weights of a layer whose tiles no longer fit: as over budget
            total = 2 * limit
        noise_left = prec_policy.total_noise(noise, layer_precs)
        if total <= limit:
            if best is None or noise_left < best[0]:
                best = (noise_left, layer_precs)
            if total >= limit - PRECISION_SLACK * extra or not taken:
                break
            lo = scale
            scale = (scale + hi) / 2 if hi is not None else scale * min(4.0, extra / max(total - fast_total, 1.0))
        else:
            hi = scale
            scale = (lo + scale) / 2 if lo > 0 else scale * 0.9 * extra / max(total - fast_total, 1.0)
    layer_precs = best[1] if best is not None else prec_policy.layer_precisions(noise, [], True)
    precs = [{n.name: layer_precs[n.name] for n in sg.nodes if n.name in layer_precs} for sg in ctx.subgraphs]
    plans = ctx.lower(precs, keep_float=True)
    corrected = ctx.correct(plans, compensate=precs, samples=cal)
    schedules = []
    for plan, (pool, lookahead, order) in zip(plans, params, strict=True):  # the schedule the choice was timed on
        compiled = codegen.generate(plan, pool=pool, lookahead=lookahead, order=order)
        schedules.append((compiled, _layer_reports(compiled, ctx.cfg)))
    return _Chosen(plans, schedules, corrected, [r for _, r, _ in fast_sched], noise, precs, cal)


def _precision_record(req: prec_policy.PrecisionRequest, chosen: _Chosen, calibration: bool) -> dict:
    """The manifest's / report's record of the precision choice: the policy, the modelled cost
    against the fast program, and each conv / dense layer's choice and modelled cycles."""
    fast = {r.name: r.cycles for reports in (chosen.fast or []) for r in reports}
    cycles = chosen.cycles
    fast_total = sum(fast.values()) if chosen.fast is not None else None
    if req.policy is prec_policy.Policy.FAST:
        fast, fast_total = {r.name: r.cycles for _, reports in chosen.schedules for r in reports}, cycles
    layers = []
    for i, plan in enumerate(chosen.plans):
        reports = {r.name: r for r in chosen.schedules[i][1]}
        for op in plan.ops:
            if not isinstance(op, lower.ConvOp):
                continue
            lp = chosen.precs[i].get(op.name, lower.LayerPrecision()) if chosen.precs else lower.LayerPrecision()
            entry = {"name": op.name, "split_weights": op.wq_lo is not None,
                     "split_activations": plan.bases[op.src.base].split,
                     "bias_correction": lp.bias_correction and bool(chosen.calibrated_on),
                     "rounding": lp.rounding.value,
                     "cycles": reports[op.name].cycles if op.name in reports else 0}
            if op.name in fast:
                entry["fast_cycles"] = fast[op.name]
            if op.name in chosen.noise:
                n = chosen.noise[op.name]
                entry["noise_fast"] = n.single
                entry["noise"] = n.noise(entry["split_weights"], entry["split_activations"])
            layers.append(entry)
    rec = {"policy": req.policy.value, "budget": req.budget, "cycles": cycles, "fast_cycles": fast_total,
           "ratio": cycles / fast_total if fast_total else None,
           "measured_on": None if not chosen.noise else ("calibration" if calibration else "synthetic"),
           "layers": layers}
    if chosen.noise:
        rec["noise_fast"] = sum(n.single for n in chosen.noise.values())
        rec["noise"] = sum(e.get("noise", 0.0) for e in layers)
    return rec


def precision_summary(rec: dict) -> str:
    """One line: the policy and what it chose."""
    layers = rec["layers"]
    budget = f" (budget {rec['budget']:.2f}x the fast program)" if rec.get("budget") else ""
    parts = [f"of {len(layers)} conv / dense layers, {sum(e['split_weights'] for e in layers)} with two-part weights",
             f"{sum(e['split_activations'] for e in layers)} reading two-plane inputs",
             f"{sum(e['rounding'] == 'min-error' for e in layers)} with min-error rounding",
             f"{sum(e['rounding'] == 'compensated' for e in layers)} with compensated rounding",
             f"{sum(e['bias_correction'] for e in layers)} bias-corrected"]
    cost = f"; modelled {rec['cycles']} cycles"
    if rec.get("ratio"):
        cost += f" = {rec['ratio']:.2f}x the fast program ({rec['fast_cycles']})"
    noise = ""
    if rec.get("noise_fast"):
        noise = (f"; modelled output noise {rec['noise']:.3g} (fast: {rec['noise_fast']:.3g}, "
                 f"{rec['measured_on']} inputs)")
    return f"precision: {rec['policy']}{budget}: " + ", ".join(parts) + cost + noise


def precision_table(rec: dict) -> str:
    """Per conv / dense layer: its choice, modelled cycles (and the fast program's) and noise."""
    lines = [precision_summary(rec),
             f"{'layer':28} {'weights':8} {'acts':6} {'rounding':11} {'bias':5} {'cycles':>9} {'fast':>9} "
             f"{'noise':>9} {'fast':>9}"]
    for e in rec["layers"]:
        fast = f"{e['fast_cycles']:9d}" if "fast_cycles" in e else f"{'-':>9}"
        noise = f"{e['noise']:9.2e} {e['noise_fast']:9.2e}" if "noise" in e else f"{'-':>9} {'-':>9}"
        lines.append(f"{e['name'][:28]:28} {'split' if e['split_weights'] else 'single':8} "
                     f"{'split' if e['split_activations'] else 'single':6} {e['rounding']:11} "
                     f"{'yes' if e['bias_correction'] else 'no':5} {e['cycles']:9d} {fast} {noise}")
    return "\n".join(lines)


def _external_shape(ir_shape, perm_ext_to_ir):
    """External shape from the IR shape: ir = transpose(ext, perm) -> ext[perm[i]] = ir[i]."""
    if perm_ext_to_ir is None:
        return tuple(ir_shape)
    ext = [0] * len(ir_shape)
    for i, p in enumerate(perm_ext_to_ir):
        ext[p] = ir_shape[i]
    return tuple(ext)
