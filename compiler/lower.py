"""Lowering: an engine segment of the canonical IR -> engine layer operations on memory buffers.

Each activation lives in external memory in the engine's layout: HWC, pixel-major, BFP blocks of N
channels minor (``sim.layout``). A ``Buf`` is a view of a base buffer (a concat writes its inputs
into channel-block slices of one buffer, so concatenation costs nothing). Logical channels map to
physical lanes through ``Buf.lanes`` (identity, padded to whole blocks, except inside concats whose
parts are not multiples of N).

Lowering decides everything numerical: weight quantisation (per output channel, per tap, per
block of physical lanes), bias rounding, which ops fuse (a residual add into the conv before it,
activations into their producer), and the first-layer packing (a convolution on a graph input with
few channels folds its kernel taps into the reduction dimension on the host). ``run_golden``
executes the plan with the golden layer ops, the reference the functional simulator must equal.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from accelml.hdl.config import EngineConfig
from accelml.hdl.errors import UnsupportedOperatorError
from accelml.sim import bfp, golden, layout
from accelml.sim.bfp import BfpTensor
from accelml.sim.layout import from_hwc, pack_first_layer, to_hwc

from .ir import Activation, ActKind, Graph, Node, OpKind

__all__ = ["Buf", "ConvOp", "PoolOp", "EltOp", "EngineOp", "Plan", "LayerPrecision", "lower_segment", "run_golden"]


class Rounding(enum.Enum):
    """How a layer's weights are rounded to BFP: ``bfp.quantize`` (nearest, exponent from the block
    maximum), ``bfp.quantize_min_error`` (the shared exponent that minimises the block's error) or
    ``bfp.quantize_compensated`` (rounding errors compensated across the row on calibration inputs)."""

    NEAREST = "nearest"
    MIN_ERROR = "min-error"
    # error-compensating rounding on calibration samples (``compensate_rounding``), applied after
    # lowering where it lowers the layer's error; lowered as nearest
    COMPENSATED = "compensated"


@dataclass(frozen=True)
class LayerPrecision:
    """The numerics of one conv / dense layer. ``split_weights``: a second weight tensor, the
    first's residual (one more pass of products); ``split_activations``: the layer's input buffer
    stored as two BFP planes (one more pass of products; every layer reading that buffer reads both
    planes); ``bias_correction``: the bias absorbs the mean weight error on calibration samples
    (``correct_biases``); ``rounding``: the weights' rounding."""

    split_weights: bool = False
    split_activations: bool = False
    bias_correction: bool = False
    rounding: Rounding = Rounding.NEAREST

    def to_json(self) -> dict:
        return {"split_weights": self.split_weights, "split_activations": self.split_activations,
                "bias_correction": self.bias_correction, "rounding": self.rounding.value}


@dataclass
class Buf:
    """An activation tensor in external memory (a view of base buffer ``base``)."""

    name: str
    h: int
    w: int
    channels: int
    cb: int  # channel blocks of this view
    lanes: np.ndarray  # logical channel -> physical lane within this view (cb * N lanes)
    base: str
    cb_off: int = 0  # first block of the view inside each pixel of the base buffer
    fp32: bool = False  # stored as internal-format vectors (outputs read by the host)

    @property
    def pixels(self) -> int:
        return self.h * self.w


@dataclass
class BaseBuf:
    name: str
    h: int
    w: int
    cb: int  # vectors per pixel
    fp32: bool = False
    # split activations: a second plane of h * w * cb vectors after the first holds what the
    # first's quantisation misses (``bfp.quantize_split``); convolutions read both
    split: bool = False

    @property
    def plane_vectors(self) -> int:
        return self.h * self.w * self.cb

    @property
    def vectors(self) -> int:
        return self.plane_vectors * (2 if self.split else 1)


class PoolKind(enum.Enum):
    MAX = "max"
    AVG = "avg"
    AVG_PAD = "avg_pad"


@dataclass(eq=False)
class ConvOp:
    """Convolution / dense: dst = act(conv(src) + bias [+ residual])."""

    name: str
    src: Buf
    dst: Buf
    geom: golden.ConvGeom
    wq: BfpTensor  # rows (Cout, taps * src.cb * N), reduction order (tap, block, lane)
    bias: np.ndarray  # internal format, (Cout,)
    act: Activation
    gi: int = 0  # input blocks per group (0: dense)
    go: int = 0  # output blocks per group
    residual: Buf | None = None
    macs: int = 0  # useful MACs of the source layer (logical channels, no padding, groups honoured)
    # the float weights wq was quantised from, same layout; kept only for bias correction
    w_float: np.ndarray | None = field(default=None, repr=False)
    # split weights: W ~ wq + wq_lo (the residual quantised again); a second pass of products
    # continues each sum after all of wq's blocks
    wq_lo: BfpTensor | None = field(default=None, repr=False)

    def weight_values(self) -> np.ndarray:
        """The exact values the engine multiplies by, summed over the passes (Cout, K) float64."""
        w = bfp.dequantize(self.wq)
        return w if self.wq_lo is None else w + bfp.dequantize(self.wq_lo)

    @property
    def taps(self) -> int:
        return self.geom.kh * self.geom.kw

    @property
    def cob(self) -> int:
        return self.dst.cb


@dataclass(eq=False)
class PoolOp:
    name: str
    src: Buf
    dst: Buf
    geom: golden.ConvGeom
    kind: PoolKind


class EltKind(enum.Enum):
    ADD = "add"  # a + b
    AFFINE = "affine"  # a * scale + shift
    ACT = "act"  # a


@dataclass(eq=False)
class EltOp:
    name: str
    kind: EltKind
    srcs: list[Buf]
    dst: Buf
    act: Activation = Activation.NONE
    scale: np.ndarray | None = None  # internal format, physical lanes (cb * N)
    shift: np.ndarray | None = None


EngineOp = ConvOp | PoolOp | EltOp


@dataclass
class Plan:
    """A lowered engine segment."""

    cfg: EngineConfig
    ops: list[EngineOp]
    bases: dict[str, BaseBuf]
    inputs: dict[str, Buf]  # segment input tensor -> buffer (written by the host)
    outputs: dict[str, Buf]  # segment output tensor -> buffer (read by the host)
    in_shapes: dict[str, tuple[int, ...]]  # IR (NCHW / NC) shapes
    out_shapes: dict[str, tuple[int, ...]]
    packed: dict[str, tuple[int, int, golden.ConvGeom]] = field(default_factory=dict)
    # packed input name -> (original channels, packed channels, geometry of the folded conv)


def _act_apply(x: np.ndarray, act: Activation) -> np.ndarray:
    if act.kind is ActKind.NONE:
        return x
    if act.kind is ActKind.RELU:
        return bfp.mfu_relu(x)
    if act.kind is ActKind.CLIP:
        return bfp.mfu_clip(x, np.float32(act.lo), np.float32(act.hi))
    return bfp.mfu_leaky_relu(x, np.float32(act.alpha))


def _expand_lanes(w: np.ndarray, lanes: np.ndarray, width: int) -> np.ndarray:
    """Scatter the input-channel axis (1) of dense weights (Cout, Cin, kh, kw) onto physical lanes."""
    out = np.zeros((w.shape[0], width, *w.shape[2:]), dtype=w.dtype)
    out[:, lanes] = w
    return out


class _Lowering:
    def __init__(self, graph: Graph, cfg: EngineConfig, pack_first: bool, keep_float: bool,
                 precision: dict[str, LayerPrecision], default: LayerPrecision, all_float: bool = False,
                 weight_cache: dict | None = None):
        self.g, self.cfg, self.n = graph, cfg, cfg.native_dim
        self.weight_cache = weight_cache
        self.pack_first, self.keep_float = pack_first, keep_float
        self.precision, self.default, self.all_float = precision, default, all_float
        self.bufs: dict[str, Buf] = {}
        self.bases: dict[str, BaseBuf] = {}
        self.ops: list[EngineOp] = []
        self.consumers = graph.consumers()
        self.producers = graph.producers()
        self.packed: dict[str, tuple[int, int, golden.ConvGeom]] = {}

    # -- buffers ----------------------------------------------------------------------------------
    def new_buf(self, name: str, h: int, w: int, channels: int, fp32: bool = False) -> Buf:
        cb = -(-channels // self.n)
        self.bases[name] = BaseBuf(name, h, w, cb, fp32)
        buf = Buf(name, h, w, channels, cb, np.arange(channels), name, 0, fp32)
        self.bufs[name] = buf
        return buf

    def hwc(self, tensor: str) -> tuple[int, int, int]:
        shape = self.g.shape(tensor)
        if len(shape) == 4:
            if shape[0] != 1:
                raise UnsupportedOperatorError(f"tensor {tensor!r} has batch {shape[0]}; the engine runs batch 1")
            return shape[2], shape[3], shape[1]
        if len(shape) == 2:
            if shape[0] != 1:
                raise UnsupportedOperatorError(f"tensor {tensor!r} has batch {shape[0]}; the engine runs batch 1")
            return 1, 1, shape[1]
        raise UnsupportedOperatorError(f"tensor {tensor!r} of rank {len(shape)} cannot live on the engine")

    def out_buf(self, tensor: str, like: Buf | None = None) -> Buf:
        """The buffer an op writes ``tensor`` into (a concat slice if a concat planned one).

        Channel-wise ops (pools, elementwise) pass ``like``: their result keeps the source's lanes.
        """
        h, w, c = self.hwc(tensor)
        if tensor in self.bufs:
            buf = self.bufs[tensor]
            if like is not None and (buf.cb != like.cb or not np.array_equal(buf.lanes, like.lanes)):
                raise UnsupportedOperatorError(f"tensor {tensor!r}: its concat slice and its source "
                                               "have different channel layouts")
            return buf
        host_only = tensor in self.g.outputs and not self.consumers.get(tensor)
        buf = self.new_buf(tensor, h, w, c, fp32=host_only)
        if like is not None and not np.array_equal(like.lanes, buf.lanes):
            self.bases[tensor].cb = buf.cb = like.cb
            buf.lanes = like.lanes
        return buf

    # -- planning ---------------------------------------------------------------------------------
    def channel_layouts(self) -> dict[str, tuple[int, np.ndarray]]:
        """(blocks, lanes) of every tensor: convs and inputs start dense; channel-wise ops keep
        their source's lanes; a concat lays its parts side by side, each on whole blocks."""
        n = self.n
        out: dict[str, tuple[int, np.ndarray]] = {}

        def dense(t):
            c = self.hwc(t)[2]
            return -(-c // n), np.arange(c)

        for t in self.g.inputs:
            out[t] = dense(t)
        for node in self.g.nodes:
            t = node.outputs[0]
            if node.op is OpKind.CONCAT:
                cb, lanes = 0, []
                for i in node.inputs:
                    pcb, plan = out[i]
                    lanes.append(cb * n + plan)
                    cb += pcb
                out[t] = cb, np.concatenate(lanes)
            elif node.op in (OpKind.MAXPOOL, OpKind.AVGPOOL, OpKind.GLOBAL_AVGPOOL, OpKind.GLOBAL_MAXPOOL,
                             OpKind.ACT, OpKind.AFFINE, OpKind.ADD, OpKind.RESHAPE) and node.inputs[0] in out:
                out[t] = out[node.inputs[0]]
            else:
                out[t] = dense(t)
        return out

    def plan_concats(self) -> None:
        """Give each concat a base buffer and its inputs views into it, where they can be."""
        layouts = self.channel_layouts()
        viewed: set[str] = set()
        for node in self.g.nodes:
            if node.op is not OpKind.CONCAT:
                continue
            h, w, c = self.hwc(node.outputs[0])
            cb, lanes = layouts[node.outputs[0]]
            base = BaseBuf(node.outputs[0], h, w, cb)
            self.bases[base.name] = base
            off = 0
            for tensor in node.inputs:
                pcb, plan = layouts[tensor]
                can_view = (tensor in self.producers and tensor not in viewed and tensor not in self.bufs
                            and self.producers[tensor].op not in (OpKind.RESHAPE, OpKind.CONCAT))
                if can_view:
                    self.bufs[tensor] = Buf(tensor, h, w, len(plan), pcb, plan, base.name, off)
                    viewed.add(tensor)
                off += pcb
            self.bufs[node.outputs[0]] = Buf(node.outputs[0], h, w, c, cb, lanes, base.name)

    def lower(self) -> None:
        self.plan_concats()
        fused: set[str] = set()
        for node in self.g.nodes:
            if node.name in fused:
                continue
            op = node.op
            if op is OpKind.CONV:
                self.lower_conv(node, fused)
            elif op is OpKind.DENSE:
                self.lower_dense(node, fused)
            elif op in (OpKind.MAXPOOL, OpKind.AVGPOOL, OpKind.GLOBAL_AVGPOOL, OpKind.GLOBAL_MAXPOOL):
                self.lower_pool(node)
            elif op is OpKind.ADD:
                a, b = (self.src(i) for i in node.inputs)
                if a.cb != b.cb or not np.array_equal(a.lanes, b.lanes):
                    raise UnsupportedOperatorError(f"add {node.name!r}: operands have different channel layouts")
                self.ops.append(EltOp(node.name, EltKind.ADD, [a, b], self.out_buf(node.outputs[0], a), node.act))
            elif op in (OpKind.ACT, OpKind.AFFINE):
                self.lower_elementwise(node)
            elif op is OpKind.CONCAT:
                self.lower_concat(node)
            elif op is OpKind.RESHAPE:
                self.lower_reshape(node)
            else:
                raise UnsupportedOperatorError(f"node {node.name!r} ({node.op_type}) cannot be lowered to the engine")

    def src(self, tensor: str) -> Buf:
        if tensor not in self.bufs:
            raise UnsupportedOperatorError(f"tensor {tensor!r} is read before the engine produced it")
        return self.bufs[tensor]

    def lower_reshape(self, node: Node) -> None:
        """A flatten or squeeze: the buffer is unchanged; a dense layer reads it as an H x W window."""
        src = self.src(node.inputs[0])
        self.bufs[node.outputs[0]] = src

    def lower_concat(self, node: Node) -> None:
        dst = self.bufs[node.outputs[0]]
        off = 0
        for tensor in node.inputs:
            buf = self.src(tensor)
            if buf.base != dst.base:  # could not be a view: copy it into its slice
                view = Buf(f"{tensor}@{dst.base}", buf.h, buf.w, buf.channels, buf.cb, buf.lanes, dst.base, off)
                self.ops.append(EltOp(f"{node.name}/copy:{tensor}", EltKind.ACT, [buf], view))
            off += buf.cb

    def _fusable_residual(self, node: Node, fused: set[str]) -> tuple[Buf | None, Activation, str]:
        """conv (no activation) -> add: fuse the add when the conv result feeds nothing else."""
        out = node.outputs[0]
        users = self.consumers.get(out, [])
        if node.act.kind is ActKind.NONE and len(users) == 1 and users[0].op is OpKind.ADD \
                and out not in self.g.outputs and users[0].inputs.count(out) == 1:
            add = users[0]
            other = add.inputs[1] if add.inputs[0] == out else add.inputs[0]
            if other in self.bufs:  # the shortcut is already computed
                fused.add(add.name)
                return self.bufs[other], add.act, add.outputs[0]
        return None, node.act, out

    def lower_conv(self, node: Node, fused: set[str]) -> None:
        a = node.attrs
        src = self.src(node.inputs[0])
        kh, kw = a.kernel
        geom = golden.ConvGeom(src.h, src.w, kh, kw, tuple(a.strides), tuple(a.dilations), tuple(a.pads))
        weight = np.asarray(a.weight, np.float32)  # quantised in binary32: exact (see bfp.quantize)
        name_in = node.inputs[0]
        if self.pack_first and name_in in self.g.inputs and a.groups == 1 and a.in_channels * 2 <= self.n \
                and all(u.op is OpKind.CONV for u in self.consumers.get(name_in, [])) \
                and len(self.consumers.get(name_in, [])) == 1 and kh * kw > 1:
            src, geom, weight = self.pack(node, src, geom, weight)
        residual, act, out = self._fusable_residual(node, fused)
        dst = self.out_buf(out)
        self.ops.append(self.conv_op(node.name, src, dst, geom, weight, a.bias, a.groups, act, residual,
                                     macs=self._conv_macs(node)))

    def _conv_macs(self, node: Node) -> int:
        from .ir import node_macs

        return node_macs(node, self.g)

    def pack(self, node: Node, src: Buf, geom: golden.ConvGeom, weight: np.ndarray):
        """First-layer packing: the host gathers each output pixel's kernel window (taps x Cin
        values, tap-major) as one vector, and the conv becomes a 1x1 over those vectors."""
        oh, ow = geom.out_size()
        cin = src.channels
        packed_c = geom.kh * geom.kw * cin
        name = src.name
        del self.bufs[name], self.bases[name]
        buf = self.new_buf(name, oh, ow, packed_c)
        self.packed[name] = (cin, packed_c, geom)
        cout = weight.shape[0]
        w2 = weight.transpose(0, 2, 3, 1).reshape(cout, packed_c, 1, 1)  # (ky, kx, c) order
        return buf, golden.ConvGeom(oh, ow, 1, 1), w2

    def conv_op(self, name, src: Buf, dst: Buf, geom, weight, bias, groups, act, residual, macs) -> ConvOp:
        n = self.n
        cout, cpg = weight.shape[:2]
        opg = cout // groups
        gi = go = 0
        identity = src.cb * n == src.channels or np.array_equal(src.lanes, np.arange(src.channels))
        if groups > 1 and identity:
            if cpg % n == 0 and opg % n == 0:
                gi, go = cpg // n, opg // n
            elif cpg == opg and n % cpg == 0:
                gi = go = 1
        dense = golden.expand_group_weights(weight, groups)
        phys = _expand_lanes(dense, src.lanes, src.cb * n)
        prec = self.precision.get(name, self.default)
        wq, wq_lo = self.quantized_weights(name, phys, prec)
        bias_i = bfp.internal_const(np.asarray(bias, np.float64), f"{name}.bias")
        keep = self.all_float or (self.keep_float and prec.bias_correction)
        w_float = phys.transpose(0, 2, 3, 1).reshape(cout, -1) if keep else None
        return ConvOp(name, src, dst, geom, wq, bias_i, act, gi, go, residual, macs, w_float, wq_lo)

    def quantized_weights(self, name: str, phys: np.ndarray, prec: LayerPrecision
                          ) -> tuple[BfpTensor, BfpTensor | None]:
        """A conv's BFP weights (and with split weights the second part: what the first misses,
        quantised again in the same layout), from ``weight_cache`` where an earlier lowering of
        the same weights (equal values, same rounding) made them: the precision policy lowers a
        model several times, and the depthwise layers' zero-expanded weights are slow to round."""
        min_error = prec.rounding is Rounding.MIN_ERROR
        cache = self.weight_cache if self.weight_cache is not None else {}
        entry = cache.get((name, min_error))
        if entry is None or not np.array_equal(entry["phys"], phys):
            entry = {"phys": phys, "wq": golden.quantize_conv_weights(phys, self.cfg, name=f"{name}.weight",
                                                                      min_error=min_error)}
            cache[(name, min_error)] = entry
        if prec.split_weights and "wq_lo" not in entry:
            cout, _, kh, kw = phys.shape
            hi = bfp.dequantize(entry["wq"]).reshape(cout, kh, kw, -1).transpose(0, 3, 1, 2)
            rest = phys.astype(np.float64) - hi
            rest32 = rest.astype(np.float32)  # the same values in binary32 quantise the same, faster
            entry["wq_lo"] = golden.quantize_conv_weights(rest32 if np.array_equal(rest32, rest) else rest,
                                                          self.cfg, name=f"{name}.weight_lo")
        return entry["wq"], entry["wq_lo"] if prec.split_weights else None

    def lower_dense(self, node: Node, fused: set[str]) -> None:
        """A dense layer is a convolution whose window is the whole (flattened) input image."""
        a = node.attrs
        src = self.src(node.inputs[0])
        j, k = a.weight.shape
        if k != src.channels * src.pixels:
            raise UnsupportedOperatorError(f"dense {node.name!r}: {k} inputs but its source has "
                                           f"{src.channels * src.pixels} values")
        # ONNX flatten of NCHW: feature = c*H*W + y*W + x
        weight = np.asarray(a.weight, np.float32).reshape(j, src.channels, src.h, src.w)
        geom = golden.ConvGeom(src.h, src.w, src.h, src.w)
        residual, act, out = self._fusable_residual(node, fused)
        dst = self.out_buf(out)
        self.ops.append(self.conv_op(node.name, src, dst, geom, weight, a.bias, 1, act, residual,
                                     macs=self._conv_macs(node)))

    def lower_pool(self, node: Node) -> None:
        src = self.src(node.inputs[0])
        dst = self.out_buf(node.outputs[0], src)
        if node.op in (OpKind.GLOBAL_AVGPOOL, OpKind.GLOBAL_MAXPOOL):
            geom = golden.ConvGeom(src.h, src.w, src.h, src.w)
            kind = PoolKind.MAX if node.op is OpKind.GLOBAL_MAXPOOL else PoolKind.AVG
        else:
            a = node.attrs
            geom = golden.ConvGeom(src.h, src.w, a.kernel[0], a.kernel[1], tuple(a.strides), tuple(a.dilations),
                                   tuple(a.pads), a.ceil_mode)
            if node.op is OpKind.MAXPOOL:
                kind = PoolKind.MAX
            else:
                kind = PoolKind.AVG_PAD if a.count_include_pad else PoolKind.AVG
        if geom.out_size() != (dst.h, dst.w):
            raise UnsupportedOperatorError(f"pool {node.name!r}: output {dst.h}x{dst.w} does not match the "
                                           f"window geometry {geom.out_size()}")
        if node.act.kind is not ActKind.NONE:
            raise UnsupportedOperatorError(f"pool {node.name!r} carries an activation")
        self.ops.append(PoolOp(node.name, src, dst, geom, kind))

    def lower_elementwise(self, node: Node) -> None:
        src = self.src(node.inputs[0])
        dst = self.out_buf(node.outputs[0], src)
        if node.op is OpKind.ACT:
            self.ops.append(EltOp(node.name, EltKind.ACT, [src], dst, node.act))
            return
        a = node.attrs
        width = src.cb * self.n
        scale = np.ones(width)
        shift = np.zeros(width)
        scale[src.lanes] = a.scale
        shift[src.lanes] = a.shift
        self.ops.append(EltOp(node.name, EltKind.AFFINE, [src], dst, node.act,
                              bfp.internal_const(scale, f"{node.name}.scale"),
                              bfp.internal_const(shift, f"{node.name}.shift")))


def lower_segment(graph: Graph, cfg: EngineConfig, *, pack_first: bool = True, keep_float: bool = False,
                  split_weights: bool = False, split_activations: bool = False,
                  precision: dict[str, LayerPrecision] | None = None, all_float: bool = False,
                  weight_cache: dict | None = None) -> Plan:
    """Lower a canonical engine subgraph (``Segment.subgraph``) for one EngineConfig.

    Each conv / dense layer's numerics are ``precision[layer name]`` (a ``LayerPrecision``); layers
    not named there get the default made of ``split_weights`` and ``split_activations``:
    ``split_weights`` gives a conv a second weight tensor, the first's residual (``ConvOp.wq_lo``),
    for about twice the weight precision at twice the products; ``split_activations`` stores the
    conv's input as two BFP planes (``BaseBuf.split``), read by one more pass of products with the
    first weights (a buffer read by several convs is split if any of them asks).
    ``keep_float`` keeps the float weights (``ConvOp.w_float``) of the layers whose precision asks
    for bias correction (``correct_biases``), or of every layer with ``all_float``. ``weight_cache``
    (a dict kept between lowerings of one graph) reuses the rounded weights of earlier lowerings
    where the weights and their rounding are the same: the same plan, made faster."""
    default = LayerPrecision(split_weights=split_weights, split_activations=split_activations,
                             bias_correction=keep_float)
    low = _Lowering(graph, cfg, pack_first, keep_float, dict(precision or {}), default, all_float, weight_cache)
    for name in graph.inputs:
        h, w, c = low.hwc(name)
        low.new_buf(name, h, w, c)
    low.lower()
    for op in low.ops:
        if isinstance(op, ConvOp) and low.precision.get(op.name, default).split_activations \
                and not low.bases[op.src.base].fp32:
            low.bases[op.src.base].split = True
    outputs = {}
    for name in graph.outputs:
        if name not in low.bufs:
            raise UnsupportedOperatorError(f"segment output {name!r} is not produced on the engine")
        outputs[name] = low.bufs[name]
    return Plan(cfg, low.ops, low.bases, {n: low.bufs[n] for n in graph.inputs}, outputs,
                {n: graph.shape(n) for n in graph.inputs}, {n: graph.shape(n) for n in graph.outputs},
                low.packed)


# ---------------------------------------------------------------------------------------------
# Host-side conversions at the engine boundary, and the golden execution of a plan
# ---------------------------------------------------------------------------------------------

def host_input(plan: Plan, name: str, x: np.ndarray) -> np.ndarray:
    """The float HWC values the host quantises into input buffer ``name`` (packing applied)."""
    hwc = to_hwc(x)
    if name in plan.packed:
        hwc = pack_first_layer(hwc, plan.packed[name][2])
    return hwc


class _Memory:
    """Golden execution state: base buffers as block arrays (mant (P, CB, N), exp (P, CB)), per
    plane (split buffers have two)."""

    def __init__(self, plan: Plan):
        n = plan.cfg.native_dim
        self.cfg, self.n = plan.cfg, n
        self.split = {b.name for b in plan.bases.values() if b.split}
        self.mant = {(b.name, lo): np.zeros((b.h * b.w, b.cb, n), np.int32)
                     for b in plan.bases.values() if not b.fp32 for lo in range(1 + b.split)}
        self.exp = {(b.name, lo): np.full((b.h * b.w, b.cb), plan.cfg.exp_min, np.int16)
                    for b in plan.bases.values() if not b.fp32 for lo in range(1 + b.split)}
        self.fp = {b.name: np.zeros((b.h * b.w, b.cb, n), np.float32) for b in plan.bases.values() if b.fp32}

    def read(self, buf: Buf, lo: bool = False) -> BfpTensor:
        s = slice(buf.cb_off, buf.cb_off + buf.cb)
        m = self.mant[buf.base, lo][:, s].reshape(buf.h, buf.w, buf.cb * self.n)
        e = self.exp[buf.base, lo][:, s].reshape(buf.h, buf.w, buf.cb)
        return BfpTensor(m, e, buf.cb * self.n, self.n, self.cfg.mantissa_bits)

    def values(self, buf: Buf) -> np.ndarray:
        """Internal-format values of all physical lanes (H, W, cb*N) of the first plane."""
        return bfp.dequantize_internal(self.read(buf))

    def planes(self, buf: Buf) -> range:
        """The planes of ``buf``'s base (0, and 1 for a split buffer's second)."""
        return range(1 + (buf.base in self.split))

    def parts(self, buf: Buf) -> list[np.ndarray]:
        """Internal-format values of each plane, in the order the engine adds them."""
        return [bfp.dequantize_internal(self.read(buf, lo)) for lo in self.planes(buf)]

    def summed(self, buf: Buf) -> np.ndarray:
        """The planes added in the MFU: a split tensor's value as an element-wise op sees it."""
        hi, *rest = self.parts(buf)
        for part in rest:
            hi = bfp.mfu_add(hi, part, f"{buf.name} planes")
        return hi

    def _store(self, buf: Buf, x: np.ndarray) -> None:
        s = slice(buf.cb_off, buf.cb_off + buf.cb)
        for lo, q in enumerate(bfp.quantize_planes(x, self.cfg, split=buf.base in self.split, name=buf.name)):
            self.mant[buf.base, lo][:, s] = q.mant.reshape(buf.pixels, buf.cb, self.n)
            self.exp[buf.base, lo][:, s] = q.exp

    def write(self, buf: Buf, values: np.ndarray) -> None:
        """Store internal values (H, W, cb*N physical lanes): re-quantised, or as fp32."""
        if buf.fp32:
            s = slice(buf.cb_off, buf.cb_off + buf.cb)
            self.fp[buf.base][:, s] = values.reshape(buf.pixels, buf.cb, self.n)
            return
        self._store(buf, values.reshape(buf.pixels, buf.cb * self.n))

    def write_input(self, buf: Buf, hwc: np.ndarray) -> None:
        self._store(buf, layout.on_lanes(hwc, buf.lanes, buf.cb, self.n))

    def output(self, buf: Buf) -> np.ndarray:
        """Logical-channel float values (H, W, C) of a buffer, as the host reads them."""
        if buf.fp32:
            s = slice(buf.cb_off, buf.cb_off + buf.cb)
            v = self.fp[buf.base][:, s].reshape(buf.h, buf.w, -1)
        else:  # a split buffer: the exact sum of its planes
            v = sum(bfp.dequantize(self.read(buf, lo)) for lo in self.planes(buf))
        return v[..., buf.lanes]


def epilogue(acc: np.ndarray, bias: np.ndarray, residual: list[np.ndarray], act: Activation) -> np.ndarray:
    """The MFU chain after a matrix-vector product: + bias, + each plane of the residual, activation."""
    y = bfp.mfu_add(acc, bias, "bias")
    for part in residual:
        y = bfp.mfu_add(y, part, "residual add")
    return _act_apply(y, act)


def _execute(plan: Plan, op: EngineOp, mem: _Memory, acc: np.ndarray | None = None) -> None:
    """One layer op with the golden ops (a conv's products already summed in ``acc``: the
    precision policy's measurement, which is not the engine's definition)."""
    cfg, n = plan.cfg, plan.cfg.native_dim
    if isinstance(op, ConvOp):
        x = mem.read(op.src)
        if acc is None:
            acc = golden.conv2d(x, op.wq, op.geom, cfg)
            if op.src.base in mem.split:  # passes continue every sum: the input's second plane ...
                acc = golden.conv2d(mem.read(op.src, lo=True), op.wq, op.geom, cfg, acc=acc)
            if op.wq_lo is not None:  # ... then the second weights
                acc = golden.conv2d(x, op.wq_lo, op.geom, cfg, acc=acc)
        bias = np.zeros(op.dst.cb * n, np.float32)
        bias[: len(op.bias)] = op.bias
        res = [] if op.residual is None else mem.parts(op.residual)
        phys = np.zeros((*acc.shape[:2], op.dst.cb * n), np.float32)
        phys[..., : acc.shape[-1]] = acc
        mem.write(op.dst, epilogue(phys, bias, res, op.act))
    elif isinstance(op, PoolOp):
        x = mem.values(op.src)  # pooling reads the first plane only
        if op.kind is PoolKind.MAX:
            y = golden.max_pool(x, op.geom)
        else:
            y = golden.avg_pool(x, op.geom, count_include_pad=op.kind is PoolKind.AVG_PAD)
        mem.write(op.dst, y)
    else:
        a = mem.summed(op.srcs[0])
        if op.kind is EltKind.ADD:
            y = a
            for part in mem.parts(op.srcs[1]):
                y = bfp.mfu_add(y, part, "add")
        elif op.kind is EltKind.AFFINE:
            y = bfp.mfu_add(bfp.mfu_mul(a, op.scale, "affine scale"), op.shift, "affine shift")
        else:
            y = a
        mem.write(op.dst, _act_apply(y, op.act))


def _loaded_memory(plan: Plan, feeds: dict[str, np.ndarray]) -> _Memory:
    mem = _Memory(plan)
    for name, buf in plan.inputs.items():
        mem.write_input(buf, host_input(plan, name, feeds[name]))
    return mem


def run_golden(plan: Plan, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Execute a plan layer by layer with the golden ops; IR-layout float32 outputs."""
    mem = _loaded_memory(plan, feeds)
    for op in plan.ops:
        _execute(plan, op, mem)
    return {name: from_hwc(mem.output(buf), plan.out_shapes[name]) for name, buf in plan.outputs.items()}


COMPENSATE_MAX_K = 4096  # longest weight row compensate_rounding takes on (its K x K second moment)
COMPENSATE_MIN_WINDOWS = 4  # it needs at least this many input windows per weight column (times K)


def _input_windows(op: ConvOp, mem: _Memory) -> np.ndarray:
    """The values a conv's products read, (pixels, K) float64 in the reduction order (tap, block,
    lane): the layer's input windows as the engine sees them (a split input's planes summed)."""
    hw = op.geom.in_h * op.geom.in_w
    idx = op.geom.window_index(*op.geom.grid(), hw)  # outside: the zero row appended below
    x = sum(p.astype(np.float64) for p in mem.parts(op.src)).reshape(hw, -1)
    x = np.concatenate([x, np.zeros((1, x.shape[1]))])
    return x[idx].reshape(idx.shape[0], -1)


def layer_error(weights: np.ndarray, w_float: np.ndarray, hess: np.ndarray) -> float:
    """``sum |(Wq - W) x|^2`` over the inputs whose second moment is ``hess``."""
    d = weights - w_float
    return float(np.einsum("ik,kl,il->", d, hess, d))


def compensate_rounding(plan: Plan, samples: list[dict[str, np.ndarray]]) -> list[str]:
    """Error-compensating weight rounding on calibration ``samples`` (segment inputs, IR layout):
    each conv with float weights (``keep_float``), one weight tensor, no groups and rows of at most
    ``COMPENSATE_MAX_K`` gets ``bfp.quantize_compensated`` weights from the second moment of its
    actual input windows (when the samples give at least ``COMPENSATE_MIN_WINDOWS`` windows per
    weight column: with fewer, the rounding fits those samples and not the inputs to come), where
    that lowers ``|(Wq - W) x|^2`` on the samples below its current rounding's (never where it
    would raise it). Layers go in order and the samples advance through each one as rounded, so
    later layers compensate for their actual inputs. The float weights stay (for
    ``correct_biases``). Returns the names of the layers whose weights changed."""
    return calibrate(plan, samples, compensate=True, correct=False)[0]


def correct_biases(plan: Plan, samples: list[dict[str, np.ndarray]]) -> int:
    """Empirical bias correction of weight quantisation: each conv's bias becomes
    ``bias - (Wq - W) . E[window]``, the expected error its quantised weights add to the output,
    with ``E[window]`` the mean of the layer's actual (quantised) input windows over the
    calibration ``samples`` (segment inputs, IR layout) and every output pixel. Layers are
    corrected in order and the samples advanced through each corrected layer, so later layers see
    their corrected inputs. Layers without float weights (``lower_segment(keep_float=...)``) keep
    their bias; the float weights are dropped. Returns the number of layers corrected."""
    return calibrate(plan, samples, compensate=False, correct=True)[1]


def calibrate(plan: Plan, samples: list[dict[str, np.ndarray]], *, compensate: bool, correct: bool
              ) -> tuple[list[str], int]:
    """``compensate_rounding`` and / or ``correct_biases`` in one pass over the layers (one golden
    run of the samples): each layer's weights are rounded, then its bias corrected, then the
    samples advance through it. Returns the compensated layers and the number corrected."""
    mems = [_loaded_memory(plan, feeds) for feeds in samples]
    changed, corrected = [], 0
    for op in plan.ops:
        if isinstance(op, ConvOp) and op.w_float is not None and mems:
            windows = [_input_windows(op, mem) for mem in mems]
            w = op.w_float.astype(np.float64)
            k = w.shape[1]
            if compensate and op.wq_lo is None and op.gi == 0 and k <= COMPENSATE_MAX_K \
                    and sum(x.shape[0] for x in windows) >= COMPENSATE_MIN_WINDOWS * k:
                hess = sum(x.T @ x for x in windows)
                q = bfp.quantize_compensated(w, hess, plan.cfg, name=f"{op.name}.weight")
                if layer_error(bfp.dequantize(q), w, hess) < layer_error(op.weight_values(), w, hess):
                    op.wq = q
                    changed.append(op.name)
            if correct:
                mean = sum(x.sum(axis=0) for x in windows) / sum(x.shape[0] for x in windows)
                error = op.weight_values() - w
                op.bias = bfp.internal_const(op.bias.astype(np.float64) - error @ mean, f"{op.name}.bias")
                corrected += 1
        if isinstance(op, ConvOp) and correct:
            op.w_float = None
        for mem in mems:
            _execute(plan, op, mem)
    return changed, corrected
