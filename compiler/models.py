"""Seed model builders: ONNX ModelProtos of the catalogue featurizers with synthetic weights.

Every builder returns an NCHW, opset-17, IR-version-8 model (onnxruntime reads at most IR 13,
onnx writes 14 by default) named after its network, with one float32 input ``"input"``
(1, 3, S, S) and the head outputs (``"logits"`` (1, num_classes), or ``"features"`` (1, C) with
``include_top=False``; SSD: ``"loc0".."loc5"`` and ``"conf0".."conf5"``, NCHW head maps).

Weights are deterministic for a seed and of realistic scale: He-normal conv weights, and
BatchNormalization statistics that match the (tracked, approximate) second moment of the values
they normalise, so activations stay O(1) through a deep network as they do in a trained one.

``build(name, size="reduced")`` gives a model small enough to run in well under a second on
onnxruntime and the reference interpreter (a fraction of the channels, fewer blocks, and a
smaller input where the network allows it); ``size="full"`` gives the real architecture.

``to_tf_style(model)`` rewrites a model the way tf2onnx exports a Keras model: NHWC input with a
Transpose after it, batch norm as Mul + Add, Dense as MatMul + Add with a Shape/Gather/Concat-built
Reshape in front, NHWC outputs; with ``transposes="all"`` every layout-free op (activations,
adds, concats, the BN Mul/Add) runs in NHWC with Transposes around each conv and pool, as tf2onnx
emits before its optimiser. It computes the same function as the model it was made from.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from accelml.runtime.postprocess import SsdPostprocess, ssd_priors  # noqa: F401  (ssd_priors: re-exported)

__all__ = [
    "MODELS", "SIZES", "build", "resnet50", "resnet152", "vgg16", "densenet121", "ssd_vgg",
    "mobilenet_v2", "to_tf_style", "ssd_priors", "ssd_postprocess", "IR_VERSION", "OPSET",
]

IR_VERSION = 8
OPSET = 17


def _make_divisible(v: float, divisor: int = 8) -> int:
    return max(divisor, int(v + divisor / 2) // divisor * divisor)


class _Net:
    """Accumulates nodes and initializers; tracks each tensor's channels and approximate second
    moment E[x^2] so batch-norm statistics can be made realistic."""

    def __init__(self, name: str, seed: int, in_ch: int, size: int):
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []
        self.count: dict[str, int] = {}
        self.used: set[str] = {"input", "logits", "features"}
        self.ch: dict[str, int] = {"input": in_ch}
        self.m2: dict[str, float] = {"input": 1.0}
        self.hw: dict[str, tuple[int, int]] = {"input": (size, size)}
        self.input_shape = (1, in_ch, size, size)

    def uid(self, prefix: str) -> str:
        """A fresh name: ``prefix`` itself the first time (unless it ends in "_"), then
        ``prefix`` + a counter."""
        k = self.count.get(prefix, 0)
        name = prefix if k == 0 and not prefix.endswith("_") else f"{prefix}{k}"
        while name in self.used:
            k += 1
            name = f"{prefix}{k}"
        self.count[prefix] = k + 1
        self.used.add(name)
        return name

    def param(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, np.float32), name))
        return name

    def add(self, op: str, inputs: list[str], prefix: str, **attrs) -> str:
        name = self.uid(prefix)
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def _like(self, y: str, x: str, m2: float | None = None) -> str:
        self.ch[y], self.hw[y] = self.ch[x], self.hw[x]
        self.m2[y] = self.m2[x] if m2 is None else m2
        return y

    # -- layers ------------------------------------------------------------------------------
    def conv(self, x: str, cout: int, k: int, stride: int = 1, pad: int | None = None,
             dilation: int = 1, groups: int = 1, bias: bool = False, name: str = "conv") -> str:
        cin = self.ch[x]
        pad = dilation * (k // 2) if pad is None else pad
        fan_in = cin // groups * k * k
        w = self.rng.standard_normal((cout, cin // groups, k, k), dtype=np.float32)
        w *= np.float32(math.sqrt(2.0 / fan_in))
        y = self.uid(name)
        inputs = [x, self.param(y + ".weight", w)]
        if bias:
            inputs.append(self.param(y + ".bias", self.rng.normal(0, 0.05, cout)))
        self.nodes.append(helper.make_node(
            "Conv", inputs, [y], name=y, kernel_shape=[k, k], strides=[stride, stride],
            pads=[pad] * 4, dilations=[dilation, dilation], group=groups))
        h, w_ = self.hw[x]
        span = dilation * (k - 1) + 1
        self.hw[y] = ((h + 2 * pad - span) // stride + 1, (w_ + 2 * pad - span) // stride + 1)
        self.ch[y], self.m2[y] = cout, 2.0 * self.m2[x]
        return y

    def bn(self, x: str, gamma_scale: float = 1.0, name: str = "bn") -> str:
        c = self.ch[x]
        std = math.sqrt(self.m2[x])
        gamma = self.rng.uniform(0.6, 1.2, c) * gamma_scale
        beta = self.rng.normal(0.0, 0.1, c)
        mean = self.rng.normal(0.0, 0.1 * std, c)
        var = self.m2[x] * self.rng.uniform(0.7, 1.3, c)
        y = self.uid(name)
        ins = [x] + [self.param(f"{y}.{p}", v) for p, v in
                     (("scale", gamma), ("bias", beta), ("mean", mean), ("var", var))]
        self.nodes.append(helper.make_node("BatchNormalization", ins, [y], name=y, epsilon=1e-5))
        return self._like(y, x, float(np.mean(gamma**2 + beta**2)))

    def relu(self, x: str) -> str:
        return self._like(self.add("Relu", [x], "relu"), x, self.m2[x] / 2)

    def relu6(self, x: str) -> str:
        lo = self.param(self.uid("clip_min_"), np.array(0.0))
        hi = self.param(self.uid("clip_max_"), np.array(6.0))
        return self._like(self.add("Clip", [x, lo, hi], "relu6_"), x, min(self.m2[x] / 2, 36.0))

    def add_(self, a: str, b: str) -> str:
        return self._like(self.add("Add", [a, b], "add"), a, self.m2[a] + self.m2[b])

    def maxpool(self, x: str, k: int, s: int, p: int = 0, ceil: bool = False) -> str:
        y = self.add("MaxPool", [x], "maxpool", kernel_shape=[k, k], strides=[s, s], pads=[p] * 4,
                     ceil_mode=int(ceil))
        h, w = self.hw[x]
        f = (lambda n: -(-(n + 2 * p - k) // s) + 1) if ceil else (lambda n: (n + 2 * p - k) // s + 1)
        self._like(y, x, self.m2[x] * 1.5)
        self.hw[y] = (f(h), f(w))
        return y

    def avgpool(self, x: str, k: int, s: int) -> str:
        y = self.add("AveragePool", [x], "avgpool", kernel_shape=[k, k], strides=[s, s])
        self._like(y, x)
        h, w = self.hw[x]
        self.hw[y] = ((h - k) // s + 1, (w - k) // s + 1)
        return y

    def concat(self, xs: list[str]) -> str:
        y = self.add("Concat", xs, "concat", axis=1)
        tot = sum(self.ch[x] for x in xs)
        self.ch[y], self.hw[y] = tot, self.hw[xs[0]]
        self.m2[y] = sum(self.m2[x] * self.ch[x] for x in xs) / tot
        return y

    def head(self, x: str, num_classes: int, include_top: bool) -> None:
        """GlobalAveragePool -> Flatten [-> Gemm]: sets the graph output."""
        g = self.add("GlobalAveragePool", [x], "gap")
        self._like(g, x)
        self.hw[g] = (1, 1)
        self.flatten_dense(g, [] if not include_top else [num_classes], include_top)

    def flatten_dense(self, x: str, widths: list[int], include_top: bool, relu_between: bool = False):
        h, w = self.hw[x]
        feats = self.ch[x] * h * w
        if not include_top:
            self.nodes.append(helper.make_node("Flatten", [x], ["features"], name="features", axis=1))
            self.outputs = [("features", (1, feats))]
            return
        y = self.add("Flatten", [x], "flatten", axis=1)
        for i, width in enumerate(widths):
            wt = self.rng.standard_normal((width, feats), dtype=np.float32) * np.float32(
                math.sqrt((2.0 if relu_between else 1.0) / feats))
            last = i == len(widths) - 1
            name = "logits" if last else self.uid("fc")
            ins = [y, self.param(name + ".weight", wt), self.param(name + ".bias", self.rng.normal(0, 0.01, width))]
            self.nodes.append(helper.make_node("Gemm", ins, [name], name=name, transB=1))
            y, feats = name, width
            if not last and relu_between:
                y = self.add("Relu", [y], "relu")
        self.outputs = [("logits", (1, feats))]

    def model(self) -> onnx.ModelProto:
        inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, list(self.input_shape))
        outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in self.outputs]
        g = helper.make_graph(self.nodes, self.name, [inp], outs, self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="accelml.compiler.models")
        m.ir_version = IR_VERSION
        return m


def _stem(net: _Net, width: float) -> str:
    x = net.relu(net.bn(net.conv("input", _make_divisible(64 * width), 7, 2, 3)))
    return net.maxpool(x, 3, 2, 1)


def _resnet(name: str, blocks: list[int], input_size: int, width: float, seed: int,
            num_classes: int, include_top: bool) -> onnx.ModelProto:
    """Bottleneck ResNet (v1.5: the stride sits on the 3x3 conv, as in torchvision)."""
    net = _Net(name, seed, 3, input_size)
    x = _stem(net, width)
    for stage, n in enumerate(blocks):
        planes = _make_divisible(64 * 2**stage * width)
        for b in range(n):
            stride = 2 if (b == 0 and stage > 0) else 1
            y = net.relu(net.bn(net.conv(x, planes, 1)))
            y = net.relu(net.bn(net.conv(y, planes, 3, stride)))
            y = net.bn(net.conv(y, planes * 4, 1), gamma_scale=0.3)
            short = x
            if b == 0:
                short = net.bn(net.conv(x, planes * 4, 1, stride, 0, name="downsample"))
            x = net.relu(net.add_(y, short))
    net.head(x, num_classes, include_top)
    return net.model()


SIZES = {
    "full": {"width": 1.0, "depth": "full"},
    "reduced": {"width": 0.25, "depth": "reduced"},
}


def _check(input_size: int, minimum: int, name: str) -> None:
    if not isinstance(input_size, int) or input_size < minimum:
        raise ValueError(f"{name}: input_size={input_size!r} must be an integer >= {minimum}")


def resnet50(input_size: int = 224, width: float = 1.0, depth: str = "full", seed: int = 0,
             num_classes: int = 1000, include_top: bool = True) -> onnx.ModelProto:
    _check(input_size, 32, "resnet50")
    blocks = [3, 4, 6, 3] if depth == "full" else [2, 2, 2, 2]
    return _resnet("resnet50", blocks, input_size, width, seed, num_classes, include_top)


def resnet152(input_size: int = 224, width: float = 1.0, depth: str = "full", seed: int = 0,
              num_classes: int = 1000, include_top: bool = True) -> onnx.ModelProto:
    _check(input_size, 32, "resnet152")
    blocks = [3, 8, 36, 3] if depth == "full" else [2, 3, 4, 2]
    return _resnet("resnet152", blocks, input_size, width, seed, num_classes, include_top)


_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def _vgg_base(net: _Net, width: float, ssd: bool) -> tuple[str, str]:
    """VGG-16 convolutions; returns (conv4_3 output, last output). SSD variant: pool3 with
    ceil_mode (75 -> 38 at 300), no pool5 (SSD adds its own)."""
    x, conv4_3, pools = "input", "", 0
    for v in _VGG16:
        if v == "M":
            pools += 1
            if ssd and pools == 4:
                conv4_3 = x
            if ssd and pools == 5:
                break
            x = net.maxpool(x, 2, 2, 0, ceil=ssd and pools == 3)
        else:
            x = net.relu(net.conv(x, _make_divisible(v * width), 3, bias=True))
    return conv4_3, x


def vgg16(input_size: int = 224, width: float = 1.0, depth: str = "full", seed: int = 0,
          num_classes: int = 1000, include_top: bool = True) -> onnx.ModelProto:
    """VGG-16: 13 conv3x3+ReLU, 5 max-pools, FC-4096, FC-4096, FC-classes (dropout omitted:
    inference). ``depth`` has no effect (kept for a uniform signature); the FC width scales with
    ``width``."""
    _check(input_size, 32, "vgg16")
    net = _Net("vgg16", seed, 3, input_size)
    _, x = _vgg_base(net, width, ssd=False)
    fc = _make_divisible(4096 * width)
    net.flatten_dense(x, [fc, fc, num_classes], include_top, relu_between=True)
    return net.model()


def densenet121(input_size: int = 224, width: float = 1.0, depth: str = "full", seed: int = 0,
                num_classes: int = 1000, include_top: bool = True) -> onnx.ModelProto:
    """DenseNet-121: dense blocks of BN-ReLU-Conv1x1-BN-ReLU-Conv3x3 whose outputs are
    concatenated onto the block's features; transitions BN-ReLU-Conv1x1-AvgPool2x2."""
    _check(input_size, 32, "densenet121")
    blocks = [6, 12, 24, 16] if depth == "full" else [2, 3, 4, 3]
    growth = _make_divisible(32 * width)
    net = _Net("densenet121", seed, 3, input_size)
    x = _stem(net, width)
    for i, n in enumerate(blocks):
        for _ in range(n):
            y = net.conv(net.relu(net.bn(x)), 4 * growth, 1)
            y = net.conv(net.relu(net.bn(y)), growth, 3)
            x = net.concat([x, y])
        if i != len(blocks) - 1:
            x = net.conv(net.relu(net.bn(x)), net.ch[x] // 2, 1)
            x = net.avgpool(x, 2, 2)
    x = net.relu(net.bn(x))
    net.head(x, num_classes, include_top)
    return net.model()


def mobilenet_v2(input_size: int = 224, width: float = 1.0, depth: str = "full", seed: int = 0,
                 num_classes: int = 1000, include_top: bool = True) -> onnx.ModelProto:
    """MobileNet-v2: inverted residuals with depthwise (group = channels) 3x3 convs, ReLU6 as
    Clip(0, 6), linear bottlenecks."""
    _check(input_size, 32, "mobilenet_v2")
    cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
           (6, 160, 3, 2), (6, 320, 1, 1)]
    if depth != "full":
        cfg = [(t, c, min(n, 2), s) for t, c, n, s in cfg]
    net = _Net("mobilenet_v2", seed, 3, input_size)
    x = net.relu6(net.bn(net.conv("input", _make_divisible(32 * width), 3, 2)))
    for t, c, n, s in cfg:
        cout = _make_divisible(c * width)
        for i in range(n):
            stride = s if i == 0 else 1
            cin = net.ch[x]
            y = x
            if t != 1:
                y = net.relu6(net.bn(net.conv(y, cin * t, 1)))
            y = net.relu6(net.bn(net.conv(y, net.ch[y], 3, stride, groups=net.ch[y], name="dwconv")))
            y = net.bn(net.conv(y, cout, 1), gamma_scale=0.5)
            x = net.add_(y, x) if (stride == 1 and cin == cout) else y
    x = net.relu6(net.bn(net.conv(x, _make_divisible(1280 * max(1.0, width)), 1)))
    net.head(x, num_classes, include_top)
    return net.model()


_SSD_ANCHORS = [4, 6, 6, 6, 4, 4]


def ssd_vgg(input_size: int = 300, width: float = 1.0, depth: str = "full", seed: int = 0,
            num_classes: int = 21, l2norm: bool = True) -> onnx.ModelProto:
    """SSD300 on VGG-16: conv4_3 (L2-normalised, learned per-channel scale), pool5 3x3/1,
    conv6 3x3 dilation 6, conv7 1x1, extra layers conv8..conv11, and multibox heads (3x3 conv
    loc: anchors*4, conf: anchors*classes) on six feature maps. Outputs the raw NCHW head maps;
    prior boxes, box decoding and NMS stay on the host (``ssd_postprocess``). ``depth`` has no
    effect."""
    _check(input_size, 268, "ssd_vgg")
    net = _Net("ssd_vgg", seed, 3, input_size)
    conv4_3, x = _vgg_base(net, width, ssd=True)
    ch = lambda c: _make_divisible(c * width)  # noqa: E731
    feats = []
    if l2norm:
        norm = net.add("ReduceL2", [conv4_3], "l2norm_reduce", axes=[1], keepdims=1)
        eps = net.param("l2norm_eps", np.array(1e-10))
        norm = net.add("Add", [norm, eps], "l2norm_eps_add")
        y = net.add("Div", [conv4_3, norm], "l2norm_div")
        gamma = net.param("l2norm.weight", np.full((1, net.ch[conv4_3], 1, 1), 20.0))
        y = net.add("Mul", [y, gamma], "l2norm_scale")
        net._like(y, conv4_3, 400.0 / net.ch[conv4_3])
        feats.append(y)
    else:
        feats.append(conv4_3)
    x = net.maxpool(x, 3, 1, 1)
    x = net.relu(net.conv(x, ch(1024), 3, pad=6, dilation=6, bias=True, name="conv6"))
    x = net.relu(net.conv(x, ch(1024), 1, bias=True, name="conv7"))
    feats.append(x)
    for mid, out, stride, pad in ((256, 512, 2, 1), (128, 256, 2, 1), (128, 256, 1, 0), (128, 256, 1, 0)):
        x = net.relu(net.conv(x, ch(mid), 1, bias=True, name="extra"))
        x = net.relu(net.conv(x, ch(out), 3, stride, pad, bias=True, name="extra"))
        feats.append(x)
    if min(net.hw[feats[-1]]) < 1:
        raise ValueError(f"ssd_vgg: input_size={input_size} leaves no room for the last feature map")
    outputs = []
    for i, (f, a) in enumerate(zip(feats, _SSD_ANCHORS, strict=True)):
        for kind, per in (("loc", 4), ("conf", num_classes)):
            y = f"{kind}{i}"
            wt = net.rng.standard_normal((a * per, net.ch[f], 3, 3), dtype=np.float32)
            wt *= np.float32(math.sqrt(1.0 / (net.ch[f] * 9)))
            ins = [f, net.param(y + ".weight", wt), net.param(y + ".bias", net.rng.normal(0, 0.01, a * per))]
            net.nodes.append(helper.make_node("Conv", ins, [y], name=y, kernel_shape=[3, 3], pads=[1] * 4))
            outputs.append((y, (1, a * per) + net.hw[f]))
    net.outputs = sorted(outputs, key=lambda o: (o[0].startswith("conf"), o[0]))
    return net.model()


def ssd_postprocess(heads: dict[str, np.ndarray], num_classes: int = 21, input_size: int = 300,
                    score_threshold: float = 0.01, iou_threshold: float = 0.45,
                    top_k: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Host-side SSD decoding for ``ssd_vgg``'s NCHW head maps (batch 1), as a package compiled with
    ``postprocess="ssd"`` applies it (``accelml.runtime.postprocess``): softmax scores, box decoding
    against ``ssd_priors`` (variances 0.1 / 0.2), per-class NMS. Returns (boxes as (x0, y0, x1, y1)
    relative to the image, scores, class ids >= 1), best first."""
    post = SsdPostprocess({"loc": [f"loc{i}" for i in range(len(_SSD_ANCHORS))],
                           "conf": [f"conf{i}" for i in range(len(_SSD_ANCHORS))], "layout": "nchw",
                           "num_classes": num_classes, "input_size": input_size, "score_threshold": score_threshold,
                           "iou_threshold": iou_threshold, "top_k": top_k})
    out = post(heads)
    return out["detection_boxes"], out["detection_scores"], out["detection_classes"]


MODELS: dict[str, Callable[..., onnx.ModelProto]] = {
    "resnet50": resnet50,
    "resnet152": resnet152,
    "vgg16": vgg16,
    "densenet121": densenet121,
    "ssd_vgg": ssd_vgg,
    "mobilenet_v2": mobilenet_v2,
}

# input sizes of the reduced builds (the architecture allows smaller inputs than 224 / 300)
_REDUCED_INPUT = {"ssd_vgg": 300}


def build(name: str, size: str = "reduced", seed: int = 0, **overrides) -> onnx.ModelProto:
    """Build a seed model by name: ``size`` is "full" or "reduced"; ``overrides`` go to the
    builder (e.g. ``input_size=``, ``width=``, ``include_top=``)."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    if size not in SIZES:
        raise ValueError(f"size={size!r} must be one of {sorted(SIZES)}")
    kwargs = dict(SIZES[size])
    if size == "reduced":
        kwargs["input_size"] = _REDUCED_INPUT.get(name, 64)
        if name == "ssd_vgg":
            kwargs["width"] = 0.125
    kwargs.update(overrides)
    return MODELS[name](seed=seed, **kwargs)


# -- tf2onnx-style variant ---------------------------------------------------------------------

class _TfStyle:
    def __init__(self, model: onnx.ModelProto, transposes: str):
        if transposes not in ("boundary", "all"):
            raise ValueError(f"transposes={transposes!r} must be 'boundary' or 'all'")
        self.all = transposes == "all"
        self.src = onnx.shape_inference.infer_shapes(model)
        g = self.src.graph
        self.inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        self.shape = {vi.name: tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
                      for vi in list(g.input) + list(g.value_info) + list(g.output)}
        self.nodes: list[onnx.NodeProto] = []
        self.new_inits: dict[str, np.ndarray] = {}
        self.ver: dict[tuple[str, str], str] = {}  # (tensor, layout) -> name in the new graph
        self.k = 0

    def fresh(self, base: str) -> str:
        self.k += 1
        return f"{base}__{self.k}"

    def const(self, base: str, arr: np.ndarray) -> str:
        name = self.fresh(base)
        self.new_inits[name] = arr
        return name

    def emit(self, op: str, ins: list[str], out: str | None = None, **attrs) -> str:
        out = out or self.fresh(op.lower())
        self.nodes.append(helper.make_node(op, ins, [out], name=self.fresh(op), **attrs))
        return out

    def get(self, t: str, layout: str) -> str:
        """The new-graph name holding tensor ``t`` in ``layout`` ("nchw" | "nhwc" | "any")."""
        if t in self.inits or len(self.shape.get(t, ())) != 4:
            return self.ver.get((t, "any"), t)
        if (t, layout) in self.ver:
            return self.ver[(t, layout)]
        other = "nhwc" if layout == "nchw" else "nchw"
        perm = [0, 3, 1, 2] if layout == "nchw" else [0, 2, 3, 1]
        name = self.emit("Transpose", [self.ver[(t, other)]], self.fresh(f"{t}_{layout}"), perm=perm)
        self.ver[(t, layout)] = name
        return name

    def put(self, t: str, layout: str, name: str) -> None:
        self.ver[(t, layout if len(self.shape.get(t, ())) == 4 else "any")] = name

    def convert(self) -> onnx.ModelProto:
        g = self.src.graph
        (inp,) = [i for i in g.input if i.name not in self.inits]
        n, c, h, w = self.shape[inp.name]
        self.put(inp.name, "nhwc", inp.name)
        ew = "nhwc" if self.all else "nchw"  # where layout-free ops run
        pending_perm: dict[str, np.ndarray] = {}  # Gemm input -> column order for NHWC flatten
        for node in g.node:
            op, x = node.op_type, node.input[0]
            y = node.output[0]
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if op == "BatchNormalization":
                gamma, beta, mean, var = (self.inits[i].astype(np.float64) for i in node.input[1:])
                scale = gamma / np.sqrt(var + attrs.get("epsilon", 1e-5))
                shift = beta - mean * scale
                cshape = (-1,) if ew == "nhwc" else (-1, 1, 1)
                m = self.emit("Mul", [self.get(x, ew), self.const("bn_scale", scale.reshape(cshape))])
                self.put(y, ew, self.emit("Add", [m, self.const("bn_shift", shift.reshape(cshape))]))
            elif op in ("Relu", "Clip", "LeakyRelu", "Add", "Mul", "Div") and len(self.shape.get(y, ())) == 4:
                ins = [self.get(i, ew) if i not in self.inits else i for i in node.input]
                if op in ("Mul", "Div") and any(i in self.inits for i in node.input) and ew == "nhwc":
                    ins = [self.const("c", self.inits[i].transpose(0, 2, 3, 1))
                           if i in self.inits and self.inits[i].ndim == 4 else v
                           for i, v in zip(node.input, ins, strict=True)]
                self.put(y, ew, self.emit(op, ins, **attrs))
            elif op == "Concat" and len(self.shape[y]) == 4:
                axis = 3 if ew == "nhwc" else 1
                self.put(y, ew, self.emit("Concat", [self.get(i, ew) for i in node.input], axis=axis))
            elif op == "Flatten":
                _, cc, hh, ww = self.shape[x]
                src = self.get(x, "nhwc")
                # Keras flattens NHWC: the next Dense sees features in (h, w, c) order
                order = np.arange(cc * hh * ww).reshape(cc, hh, ww).transpose(1, 2, 0).reshape(-1)
                pending_perm[y] = order
                shp = self.emit("Shape", [src])
                n0 = self.emit("Gather", [shp, self.const("zero", np.array(0, np.int64))], axis=0)
                n0 = self.emit("Unsqueeze", [n0, self.const("axes", np.array([0], np.int64))])
                tgt = self.emit("Concat", [n0, self.const("minus1", np.array([-1], np.int64))], axis=0)
                self.put(y, "any", self.emit("Reshape", [src, tgt]))
            elif op == "Gemm":
                wt = self.inits[node.input[1]]
                wt = wt if attrs.get("transB", 0) else wt.T
                if x in pending_perm:
                    wt = wt[:, pending_perm[x]]
                mm = self.emit("MatMul", [self.get(x, "any"), self.const("kernel", np.ascontiguousarray(wt.T))])
                self.put(y, "any", self.emit("Add", [mm, self.const("bias", self.inits[node.input[2]])]))
            elif op == "Relu" or len(self.shape.get(y, ())) != 4:
                ins = [self.get(i, "any") if i and i not in self.inits else i for i in node.input]
                self.put(y, "any", self.emit(op, ins, **attrs))
            else:  # Conv, pools, ReduceL2, ...: NCHW in, NCHW out
                ins = [self.get(i, "nchw") if i and i not in self.inits else i for i in node.input]
                self.put(y, "nchw", self.emit(op, ins, **attrs))
        outs = []
        for o in g.output:
            shp = self.shape[o.name]
            src = self.get(o.name, "nhwc" if len(shp) == 4 else "any")
            self.emit("Identity", [src], o.name)
            dims = [shp[0], shp[2], shp[3], shp[1]] if len(shp) == 4 else list(shp)
            outs.append(helper.make_tensor_value_info(o.name, TensorProto.FLOAT, dims))
        used = {i for nd in self.nodes for i in nd.input}
        inits = [numpy_helper.from_array(v if v.dtype != np.float64 else v.astype(np.float32), k)
                 for k, v in list(self.inits.items()) + list(self.new_inits.items()) if k in used]
        graph = helper.make_graph(
            self.nodes, g.name + "_tf", [helper.make_tensor_value_info(inp.name, TensorProto.FLOAT, [n, h, w, c])],
            outs, inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="accelml.compiler.models.tf_style")
        m.ir_version = IR_VERSION
        return m


def to_tf_style(model: onnx.ModelProto, transposes: str = "boundary") -> onnx.ModelProto:
    """Rewrite an NCHW seed model in tf2onnx's style (see the module docstring): NHWC input and
    outputs, batch norm as Mul + Add, Dense as MatMul + Add behind a shape-computed Reshape.
    ``transposes="all"`` also runs every layout-free op in NHWC between Transpose pairs."""
    return _TfStyle(model, transposes).convert()
