"""The per-layer precision policy: which conv / dense layers get split weights, split activation
planes, bias correction and error-aware weight rounding, under a latency budget.

Policies (``compile_model(precision=...)``, ``accelml compile --precision``):

* ``fast``: every layer single-pass, weights rounded to nearest: the cheapest program.
* ``exact``: every layer with split weights and split activations (three passes of products).
* ``balanced`` (the default): a latency budget of ``BALANCED_BUDGET`` times the ``fast`` program's
  modelled latency, spent where it reduces the most error per cycle.
* an explicit ``latency_budget`` (``--latency-budget R``): the same, with budget ``R`` (a ratio to
  the ``fast`` program's modelled latency, ``R >= 1``).

The budgeted policy measures, on samples (the calibration samples when given, else
``SYNTHETIC_SAMPLES`` deterministic image-like inputs, ``synthetic_samples``), each layer's error
with the golden numerics. One golden run of the program with every layer split (weights and
activations) gives, per conv at its input ``x = hi + lo`` (the two activation planes) and weights
``W ~ Wq + Wq_lo``, the terms ``A = Wq.hi``, ``B = Wq.lo`` (what single activations lose) and
``C = Wq_lo.hi`` (what single weights lose): the layer's error is ``B + C`` single-pass, ``B`` with
split weights, ``C`` with split activations, about 0 with both. Each error is then added to that
layer's result in the segment's FP32 graph on onnxruntime (``_Injector``, one forward pass per
layer and choice) and its noise is what it does at the segment's outputs: their squared change
relative to their energy. Layers' output noises are taken as adding up (their errors are nearly
independent). The earlier measure, each layer's noise relative to its own output, ranked
EfficientNet-Lite0's layers poorly (docs/numerics.md); it remains for a layer the graph does not
show as one node.
With ``weight_rounding="min-error"``, error-aware rounding
(``bfp.quantize_min_error``) replaces a layer's nearest rounding where it lowers the layer's weight
error ``|(W - Wq).x|^2`` on the samples (never where it would raise it); it costs no cycles. It is
off by default: on EfficientNet-Lite0 it lowered every chosen layer's error yet cost top-1
agreement at the output (the saturated block maxima shrink each channel's largest weights, a
systematic error the per-layer measure does not see). Costs are modelled cycles: the cycle model's per-layer
cycles of the fast program, the program with every weight split and the one with every conv input
split, on the fast program's schedule; a split input's cost is shared by the layers that write and
read it. Upgrades are then taken greedily, the largest noise reduction per cycle first, while the
modelled cost fits; the chosen program is scheduled and, if the model says it exceeds the budget,
the last upgrades are dropped until it fits. Then the single-pass layers get error-compensating
weight rounding where it lowers their error on the calibration samples, or without them on
``SYNTHETIC_CALIBRATION`` synthetic ones (``lower.compensate_rounding``), and every layer's bias
is corrected on the same samples (``lower.correct_biases``), both in one pass (``lower.calibrate``).

Everything here is deterministic for a given model, engine configuration, options and samples.
Bad requests raise ``PrecisionError`` before any compile work.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from accelml.hdl.errors import CapacityError, PrecisionError
from accelml.sim import bfp, golden

from . import lower
from .lower import ConvOp, EltOp, LayerPrecision, PoolOp, Rounding

__all__ = ["Policy", "PrecisionRequest", "request", "LayerNoise", "Upgrade", "measure", "upgrade_costs",
           "timing_variant", "choose", "BALANCED_BUDGET", "SYNTHETIC_SAMPLES", "synthetic_samples", "check_calibration"]

BALANCED_BUDGET = 1.3  # the balanced policy's latency budget, times the fast program's
SYNTHETIC_SAMPLES = 2  # deterministic inputs the data-free policy measures on
MEASURE_SAMPLES = 4  # at most this many calibration samples are used for the measurement
SYNTHETIC_CALIBRATION = 8  # synthetic samples the budgeted policies calibrate rounding and biases on, data-free


class Policy(enum.Enum):
    FAST = "fast"
    BALANCED = "balanced"
    EXACT = "exact"
    BUDGET = "budget"  # an explicit latency budget
    MANUAL = "manual"  # the global split_weights / split_activations options


@dataclass(frozen=True)
class PrecisionRequest:
    policy: Policy
    budget: float | None = None  # latency budget, a ratio to the fast program (budgeted policies)
    split_weights: bool = False  # MANUAL only
    split_activations: bool = False
    min_error_rounding: bool = False  # budgeted only: layers may get bfp.quantize_min_error weights

    @property
    def budgeted(self) -> bool:
        return self.budget is not None


def request(precision: str | Policy | None, latency_budget=None, *, split_weights: bool = False,
            split_activations: bool = False, weight_rounding: str = "nearest") -> PrecisionRequest:
    """The checked precision request of a compile (``PrecisionError`` naming the bad option)."""
    known = [r.value for r in (Rounding.NEAREST, Rounding.MIN_ERROR)]  # compensated: with calibration
    if weight_rounding not in known:
        raise PrecisionError(f"weight rounding {weight_rounding!r} is unknown; known: {', '.join(known)}")
    req = _request(precision, latency_budget, split_weights, split_activations)
    if weight_rounding == Rounding.MIN_ERROR.value:
        if not req.budgeted:
            raise PrecisionError(f"weight rounding 'min-error' is chosen per layer by the balanced policy or a "
                                 f"latency budget, not by {req.policy.value!r}")
        req = replace(req, min_error_rounding=True)
    return req


def _request(precision, latency_budget, split_weights: bool, split_activations: bool) -> PrecisionRequest:
    manual = bool(split_weights or split_activations)
    if precision is None:
        precision = Policy.MANUAL if manual and latency_budget is None else Policy.BALANCED
    if isinstance(precision, str):
        names = [p.value for p in (Policy.FAST, Policy.BALANCED, Policy.EXACT)]
        if precision not in names:
            raise PrecisionError(f"precision policy {precision!r} is unknown; known: {', '.join(names)}")
        precision = Policy(precision)
    if not isinstance(precision, Policy):
        raise PrecisionError(f"precision policy {precision!r} is not a policy name")
    if manual and precision is not Policy.MANUAL:
        raise PrecisionError("split_weights / split_activations choose the precision of every layer; "
                             f"they cannot be combined with the {precision.value!r} policy or a latency budget")
    if latency_budget is not None:
        try:
            budget = float(latency_budget)
        except (TypeError, ValueError):
            raise PrecisionError(f"latency budget {latency_budget!r} is not a number (a ratio to the fast "
                                 "program's modelled latency, e.g. 1.3)") from None
        if not math.isfinite(budget) or budget < 1.0:
            raise PrecisionError(f"latency budget {latency_budget!r} is below 1.0, the fast program's modelled "
                                 "latency, which is the fastest this compiler can do")
        if precision not in (Policy.BALANCED, Policy.BUDGET):
            raise PrecisionError(f"a latency budget applies to the balanced policy, not to {precision.value!r}")
        return PrecisionRequest(Policy.BUDGET, budget)
    if precision is Policy.BALANCED:
        return PrecisionRequest(Policy.BALANCED, BALANCED_BUDGET)
    return PrecisionRequest(precision, None, bool(split_weights), bool(split_activations))


def check_calibration(calibration, inputs: list[dict]) -> list[dict[str, np.ndarray]]:
    """Calibration samples as a list of feeds (external names and shapes), checked: at least one
    sample, each a dict with a finite float array of the input's shape for every model input
    (``PrecisionError`` naming the sample and the input)."""
    if isinstance(calibration, dict):
        raise PrecisionError("calibration must be a list of samples (dicts of input name -> array), not one dict")
    try:
        samples = list(calibration)
    except TypeError:
        raise PrecisionError(f"calibration is a {type(calibration).__name__}, not a list of samples") from None
    if not samples:
        raise PrecisionError("calibration needs at least one sample, got zero")
    out = []
    for i, feeds in enumerate(samples):
        if not isinstance(feeds, dict):
            raise PrecisionError(f"calibration sample {i} is a {type(feeds).__name__}, not a dict of inputs")
        unknown = sorted(set(feeds) - {spec["name"] for spec in inputs})
        if unknown:
            raise PrecisionError(f"calibration sample {i}: input {unknown[0]!r} is not an input of the model "
                                 f"(its inputs: {', '.join(repr(s['name']) for s in inputs)})")
        checked = {}
        for spec in inputs:
            name, shape = spec["name"], tuple(spec["shape"])
            if name not in feeds:
                raise PrecisionError(f"calibration sample {i}: input {name!r} has no value for this input")
            v = np.asarray(feeds[name])
            if v.dtype.kind != "f":
                raise PrecisionError(f"calibration sample {i}: input {name!r} has dtype {v.dtype}, the model "
                                     f"takes {spec['dtype']}")
            v = v.astype(np.float32)
            if v.shape == shape[1:] and shape[:1] == (1,):  # a sample without its batch axis
                v = v[None]
            if v.shape != shape:
                raise PrecisionError(f"calibration sample {i}: input {name!r} has shape {v.shape}, the model "
                                     f"takes {shape}")
            if not np.isfinite(v).all():
                raise PrecisionError(f"calibration sample {i}: input {name!r} holds NaN or infinity")
            checked[name] = v
        out.append(checked)
    return out


def synthetic_samples(inputs: list[dict], n: int = SYNTHETIC_SAMPLES) -> list[dict[str, np.ndarray]]:
    """``n`` deterministic feeds for the data-free policy: image-like where an input is (N, C, H, W)
    or (N, H, W, C) with H, W > 1 (``_image_like``), else standard normal."""
    rng = np.random.default_rng(20240)
    return [{s["name"]: _image_like(tuple(s["shape"]), rng) for s in inputs} for _ in range(n)]


def _image_like(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Unit-variance noise with a natural image's statistics: a 1 / f amplitude spectrum over the
    two spatial axes (smooth regions and edges at every scale) and channels sharing most of it
    (like colour planes). White noise, the alternative, makes the layers' errors mostly high
    frequency, which ranks the layers unlike real inputs do."""
    if len(shape) != 4:
        return rng.standard_normal(shape).astype(np.float32)
    nchw = shape[1] <= 4 or shape[3] > 4  # channels first unless the last axis looks like channels
    n, c, h, w = shape if nchw else (shape[0], shape[3], shape[1], shape[2])
    if h < 2 or w < 2:
        return rng.standard_normal(shape).astype(np.float32)
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]
    amp = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(h, w))
    amp[0, 0] = 0.0

    def field(k: int) -> np.ndarray:
        spec = (rng.standard_normal((k, h, w // 2 + 1)) + 1j * rng.standard_normal((k, h, w // 2 + 1))) * amp
        f = np.fft.irfft2(spec, s=(h, w))
        return f / f.std(axis=(1, 2), keepdims=True)

    x = 0.8 * field(n)[:, None] + 0.6 * field(n * c).reshape(n, c, h, w)
    x = x + 0.3 * rng.standard_normal((n, c, 1, 1))  # a colour cast per channel
    x = x.astype(np.float32)
    return x if nchw else np.ascontiguousarray(x.transpose(0, 2, 3, 1))


# -- measurement --------------------------------------------------------------------------------

@dataclass
class LayerNoise:
    """A conv's noise-to-signal ratios (mean over the samples) for each choice, and its rounding."""

    name: str
    single: float  # |B + C|^2 / |A + B + C|^2: single weights, single activations
    split_w: float  # |B|^2 / ...: split weights
    split_a: float  # |C|^2 / ...: split activations
    rounding: Rounding = Rounding.NEAREST
    weight_error: dict[str, float] = field(default_factory=dict)  # rounding -> |(W - Wq).x|^2 on the samples

    def noise(self, sw: bool, sa: bool) -> float:
        if sw and sa:
            return 0.0
        return self.split_w if sw else self.split_a if sa else self.single


def _sq(x: np.ndarray) -> float:
    return float(np.square(x, dtype=np.float64).sum())


class _Injector:
    """The segment's FP32 graph on onnxruntime with an error input added to each measured conv /
    dense layer's result (before its activation): how an error at one layer shows at the outputs."""

    def __init__(self, graph, layers: list[str]):
        import onnxruntime as ort
        from onnx import TensorProto, helper

        from .onnx_export import to_onnx

        model = to_onnx(graph)
        by_name = {n.name: n for n in graph.nodes}
        self.shapes: dict[str, tuple[int, ...]] = {}
        nodes = []
        for node in model.graph.node:
            nodes.append(node)
            if node.name in layers and node.op_type in ("Conv", "Gemm"):
                err, out = f"{node.name}__error", node.output[0]
                node.output[0] = f"{out}__exact"
                nodes.append(helper.make_node("Add", [node.output[0], err], [out], name=f"{node.name}__inject"))
                self.shapes[node.name] = tuple(graph.shape(by_name[node.name].outputs[0]))
                model.graph.input.append(helper.make_tensor_value_info(err, TensorProto.FLOAT,
                                                                       list(self.shapes[node.name])))
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        self.zeros = {f"{k}__error": ort.OrtValue.ortvalue_from_numpy(np.zeros(v, np.float32))
                      for k, v in self.shapes.items()}
        self.outputs = [o.name for o in model.graph.output]
        self.binding = self.sess.io_binding()
        for name, z in self.zeros.items():
            self.binding.bind_ortvalue_input(name, z)

    def ir_error(self, layer: str, acc_error: np.ndarray) -> np.ndarray:
        """A layer's error in accumulator layout (H, W, Cout) as the graph's tensor (NCHW / NC)."""
        shape = self.shapes[layer]
        e = acc_error.reshape(shape) if len(shape) == 2 else acc_error.transpose(2, 0, 1)[None]
        return np.ascontiguousarray(e, np.float32)

    def _run(self) -> list[np.ndarray]:
        for o in self.outputs:
            self.binding.bind_output(o)
        self.sess.run_with_iobinding(self.binding)
        return self.binding.copy_outputs_to_cpu()

    def baseline(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Bind a sample's inputs (IR layout); the outputs without errors."""
        self.feeds = {k: np.ascontiguousarray(v, np.float32) for k, v in feeds.items()}  # kept alive while bound
        for name, v in self.feeds.items():
            self.binding.bind_cpu_input(name, v)
        return [y.astype(np.float64) for y in self._run()]

    def effect(self, base: list[np.ndarray], layer: str, error: np.ndarray) -> float:
        """The outputs' squared change, relative to each output's energy, when ``error`` (graph
        layout) is added to ``layer``'s result (on the sample ``baseline`` bound)."""
        name = f"{layer}__error"
        self.binding.bind_cpu_input(name, error)
        try:
            ys = self._run()
        finally:
            self.binding.bind_ortvalue_input(name, self.zeros[name])
        return sum(_sq(y - b) / max(_sq(b), np.finfo(np.float64).tiny) for y, b in zip(ys, base, strict=True))


def measure(near: lower.Plan, min_error: lower.Plan | None, samples: list[dict[str, np.ndarray]],
            graph=None) -> dict[str, LayerNoise]:
    """Each conv's noise per choice on ``samples`` (segment inputs, IR layout), from one golden run
    of ``near``, the segment lowered with every layer's weights and activations split and weights
    rounded to nearest; ``min_error`` (optional) is the same with error-aware rounding, whose
    second weights measure its error: then also each layer's rounding (see the module docstring).

    With ``graph`` (the segment's IR subgraph), a choice's noise is its error's effect at the
    segment's outputs: the error is added to that layer's result in the FP32 graph on onnxruntime
    (``_Injector``) and the outputs' squared change, relative to their energy, is the noise.
    Without it, the noise is relative to the layer's own output (the local measure)."""
    cfg = near.cfg
    convs = [op for op in near.ops if isinstance(op, ConvOp)]
    if any(op.wq_lo is None for op in convs):
        raise ValueError("measure needs a plan lowered with split weights")
    me = {op.name: op.wq_lo for op in (min_error.ops if min_error is not None else near.ops)
          if isinstance(op, ConvOp)}
    me = {op.name: me[op.name] for op in convs
          if not np.array_equal(me[op.name].mant, op.wq_lo.mant) or not np.array_equal(me[op.name].exp, op.wq_lo.exp)}
    inj = _Injector(graph, [op.name for op in convs]) if graph is not None else None
    if inj is not None and set(inj.shapes) != {op.name for op in convs}:
        inj = None  # a layer the graph does not show as one node: the local measure
    sums: dict[str, dict[str, float]] = {op.name: {} for op in convs}
    for feeds in samples:
        mem = lower._loaded_memory(near, feeds)
        base = inj.baseline(feeds) if inj is not None else None
        for op in near.ops:
            if not isinstance(op, ConvOp):
                lower._execute(near, op, mem)
                continue
            acc = sums[op.name]
            hi = mem.read(op.src)
            a = golden.conv2d(hi, op.wq, op.geom, cfg).astype(np.float64)
            b = (golden.conv2d(mem.read(op.src, lo=True), op.wq, op.geom, cfg).astype(np.float64)
                 if op.src.base in mem.split else np.zeros_like(a))
            cs = {Rounding.NEAREST: golden.conv2d(hi, op.wq_lo, op.geom, cfg).astype(np.float64)}
            if op.name in me:
                cs[Rounding.MIN_ERROR] = golden.conv2d(hi, me[op.name], op.geom, cfg).astype(np.float64)
            if inj is None:
                signal = max(_sq(a + b + cs[Rounding.NEAREST]), np.finfo(np.float64).tiny)

                def noise(e, signal=signal):
                    return _sq(e) / signal
            else:
                def noise(e, name=op.name, base=base):
                    return inj.effect(base, name, inj.ir_error(name, e)) if e.any() else 0.0
            for r, c in cs.items():
                for key, v in ((f"w:{r.value}", _sq(c)), (f"single:{r.value}", noise(b + c)),
                               (f"split_a:{r.value}", noise(c))):
                    acc[key] = acc.get(key, 0.0) + v
            acc["split_w"] = acc.get("split_w", 0.0) + noise(b)
            # the reference trajectory continues from the (nearly exact) three-pass sum
            lower._execute(near, op, mem, acc=bfp.to_internal(a + b + cs[Rounding.NEAREST], f"{op.name} sum"))
    out, k = {}, max(len(samples), 1)
    for op in convs:
        acc = sums[op.name]
        rounding = Rounding.NEAREST
        if op.name in me and acc["w:min-error"] <= acc["w:nearest"]:
            rounding = Rounding.MIN_ERROR
        r = rounding.value
        out[op.name] = LayerNoise(op.name, acc[f"single:{r}"] / k, acc["split_w"] / k, acc[f"split_a:{r}"] / k,
                                  rounding, {key[2:]: v for key, v in acc.items() if key.startswith("w:")})
    return out


def timing_variant(plan: lower.Plan, *, split_weights=False, split_activations=False) -> lower.Plan:
    """A copy of ``plan`` for the cycle model only (its numerics are not meaningful): the convs
    named in ``split_weights`` (a set of layer names, or True: all) with a second weight tensor (a
    copy of the first: timing reads no values), the inputs of those in ``split_activations`` split."""
    def named(choice, name: str) -> bool:
        return choice is True or (not isinstance(choice, bool) and name in choice)

    bases = {k: replace(b) for k, b in plan.bases.items()}
    ops = [replace(op, wq_lo=op.wq) if isinstance(op, ConvOp) and named(split_weights, op.name) else op
           for op in plan.ops]
    for op in ops:
        if isinstance(op, ConvOp) and named(split_activations, op.name) and not bases[op.src.base].fp32:
            bases[op.src.base].split = True
    return replace(plan, ops=ops, bases=bases)


# -- costs and the greedy choice -----------------------------------------------------------------

@dataclass(frozen=True)
class Upgrade:
    """Split weights of one layer, or split activations of one buffer (all the convs reading it)."""

    kind: str  # "weights" | "activations"
    key: str  # layer name (weights) or base buffer name (activations)
    layers: tuple[str, ...]  # the convs it changes
    cost: float  # modelled cycles


def _touched(op) -> list[str]:
    """Base buffers an op reads or writes."""
    bufs = [op.dst] + ([op.src] if isinstance(op, ConvOp | PoolOp) else list(op.srcs) if isinstance(op, EltOp)
                       else [])
    if isinstance(op, ConvOp) and op.residual is not None:
        bufs.append(op.residual)
    return list(dict.fromkeys(b.base for b in bufs))


def upgrade_costs(fast: lower.Plan, cycles: Callable[[lower.Plan], dict[str, int]]) -> list[Upgrade]:
    """Every upgrade of one segment with its modelled cost: a layer's split weights cost its cycles
    with every weight split less its fast cycles; an op's extra cycles with every conv input split
    are shared equally by the split buffers it touches. Where the engine cannot hold every conv
    input split (``CapacityError``), no activation upgrade is offered."""
    split_act = timing_variant(fast, split_activations=True)
    fast_cycles = cycles(fast)
    sw = cycles(timing_variant(fast, split_weights=True))
    ups = []
    for op in fast.ops:
        if isinstance(op, ConvOp):
            ups.append(Upgrade("weights", op.name, (op.name,), max(0.0, float(sw[op.name] - fast_cycles[op.name]))))
    try:
        sa = cycles(split_act)
    except CapacityError:
        return ups
    share: dict[str, float] = {}
    for op in split_act.ops:
        split = [b for b in _touched(op) if split_act.bases[b].split]
        for b in split:
            share[b] = share.get(b, 0.0) + max(0.0, float(sa[op.name] - fast_cycles[op.name])) / len(split)
    readers: dict[str, list[str]] = {}
    for op in split_act.ops:
        if isinstance(op, ConvOp) and split_act.bases[op.src.base].split:
            readers.setdefault(op.src.base, []).append(op.name)
    for base, names in readers.items():
        ups.append(Upgrade("activations", base, tuple(names), share.get(base, 0.0)))
    return ups


def choose(noise: dict[str, LayerNoise], upgrades: list[Upgrade], extra_cycles: float) -> list[Upgrade]:
    """Greedy: repeatedly the upgrade with the largest noise reduction per modelled cycle among
    those that still fit in ``extra_cycles`` (free ones first), until none reduces the noise.
    Returns the upgrades in the order taken; ties go to the earlier layer (deterministic)."""
    sw: set[str] = set()
    sa: set[str] = set()
    taken: list[Upgrade] = []
    left = list(upgrades)
    spent = 0.0

    def gain(u: Upgrade) -> float:
        g = 0.0
        for name in u.layers:
            n = noise[name]
            before = n.noise(name in sw, name in sa)
            after = n.noise(True, name in sa) if u.kind == "weights" else n.noise(name in sw, True)
            g += before - after
        return g

    while left:
        best, best_key = None, None
        for i, u in enumerate(left):
            if spent + u.cost > extra_cycles:
                continue
            g = gain(u)
            if g <= 0:
                continue
            key = (u.cost <= 0, g / max(u.cost, 1e-9), -i)
            if best_key is None or key > best_key:
                best, best_key = u, key
        if best is None:
            break
        left.remove(best)
        taken.append(best)
        spent += best.cost
        (sw if best.kind == "weights" else sa).update(best.layers)
    return taken


def layer_precisions(noise: dict[str, LayerNoise], taken: list[Upgrade], bias_correction: bool
                     ) -> dict[str, LayerPrecision]:
    """The per-layer choices that ``taken`` upgrades make (every measured layer named)."""
    sw = {n for u in taken if u.kind == "weights" for n in u.layers}
    sa = {n for u in taken if u.kind == "activations" for n in u.layers}
    return {name: LayerPrecision(name in sw, name in sa, bias_correction, n.rounding) for name, n in noise.items()}


def total_noise(noise: dict[str, LayerNoise], prec: dict[str, LayerPrecision]) -> float:
    return sum(n.noise(prec[name].split_weights, prec[name].split_activations) for name, n in noise.items())
