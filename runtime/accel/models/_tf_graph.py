"""The seed networks of ``accelml.compiler.models`` as TensorFlow 1 graph ops (NHWC).

There is one definition of each architecture: the ONNX builder in ``compiler/models.py``. This
module walks the ONNX graph it returns (NCHW, opset 17) and emits the same computation with
``tf.compat.v1`` ops in NHWC, so the TF graph and the ONNX model compute the same function from
the same deterministic weights (nothing is downloaded). ``translate`` returns the tensors named in
``outputs``; ``weights`` are constants (``frozen=True``) or ``tf.Variable`` objects whose initial
values are the weights.

Padding: convolutions use TensorFlow's explicit padding. Max pools pad with zeros in front of a
``VALID`` pool, which equals ONNX's -inf padding only because every padded max pool in these
networks reads a ReLU output (checked; anything else raises ``ConfigError``). Ceil-mode pooling is
the same zero padding on the bottom / right.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from accelml.hdl.errors import ConfigError


class GraphBuilder:
    """Emits one ONNX seed model's nodes as TF1 ops. ``values`` maps ONNX tensor names to TF
    tensors (4-D ones in NHWC); ``param`` makes a constant or a variable from a numpy array."""

    def __init__(self, tf, model: onnx.ModelProto, frozen: bool):
        self.tf, self.frozen = tf, frozen
        self.model = model
        self.inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        self.producer = {o: n for n in model.graph.node for o in n.output}
        self.values: dict[str, object] = {}
        self.variables: list[tuple[object, np.ndarray]] = []
        self.flat_perm: dict[str, tuple[int, int, int]] = {}  # Flatten output -> NCHW dims before it

    def param(self, name: str, arr: np.ndarray):
        arr = np.ascontiguousarray(arr, np.float32)
        if self.frozen:
            return self.tf.constant(arr, name=name)
        v = self.tf.Variable(arr, name=name)
        self.variables.append((v, arr))
        return v

    def run(self, nodes: list[onnx.NodeProto]) -> None:
        for node in nodes:
            self.values[node.output[0]] = self.emit(node)

    def _flattens(self, node: onnx.NodeProto) -> bool:
        """A Reshape to (batch, features): a flatten."""
        shape = self.inits.get(node.input[1])
        return shape is not None and _flatten_shape(shape)

    def _relu_input(self, name: str) -> bool:
        p = self.producer.get(name)
        return p is not None and p.op_type in ("Relu", "Clip")

    def emit(self, node: onnx.NodeProto):
        tf = self.tf
        op = node.op_type
        a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        x = self.values.get(node.input[0])
        base = node.name.replace(".", "_")
        if op == "Conv":
            w = self.inits[node.input[1]]  # (cout, cin/group, kh, kw)
            group = a.get("group", 1)
            t, lft, b, r = a.get("pads", [0, 0, 0, 0])
            pads = [[0, 0], [t, b], [lft, r], [0, 0]]
            strides = [1, *a.get("strides", [1, 1]), 1]
            dil = [1, *a.get("dilations", [1, 1]), 1]
            if group == 1:
                k = self.param(base + "/weights", w.transpose(2, 3, 1, 0))
                y = tf.nn.conv2d(x, k, strides=strides, padding=pads, dilations=dil, name=base)
            elif group == w.shape[0] and w.shape[1] == 1:
                k = self.param(base + "/depthwise_weights", w.transpose(2, 3, 0, 1))
                y = tf.nn.depthwise_conv2d(tf.pad(x, pads), k, strides=strides, padding="VALID",
                                           dilations=dil[1:3], name=base)
            else:
                raise ConfigError(f"{base}: grouped convolution with {group} groups has no TF translation")
            if len(node.input) > 2:
                y = tf.nn.bias_add(y, self.param(base + "/biases", self.inits[node.input[2]]))
            return y
        if op == "BatchNormalization":
            gamma, beta, mean, var = (self.inits[i].astype(np.float64) for i in node.input[1:])
            scale = gamma / np.sqrt(var + a.get("epsilon", 1e-5))
            shift = self.param(base + "/shift", beta - mean * scale)
            return tf.nn.bias_add(x * self.param(base + "/scale", scale), shift)
        if op == "Relu":
            return tf.nn.relu(x, name=base)
        if op == "Clip":
            lo, hi = (float(self.inits[i]) for i in node.input[1:3])
            if (lo, hi) != (0.0, 6.0):
                raise ConfigError(f"{base}: only Clip(0, 6) (ReLU6) is translated")
            return tf.nn.relu6(x, name=base)
        if op in ("Add", "Mul", "Div"):
            ys = []
            for name in node.input:
                if name in self.inits:
                    c = self.inits[name]
                    ys.append(self.param(base + "/const", c.transpose(0, 2, 3, 1) if c.ndim == 4 else c))
                else:
                    ys.append(self.values[name])
            fn = {"Add": tf.add, "Mul": tf.multiply, "Div": tf.divide}[op]
            return fn(ys[0], ys[1], name=base)
        if op == "ReduceL2":
            if list(a.get("axes", [])) != [1]:
                raise ConfigError(f"{base}: ReduceL2 over axes {a.get('axes')} has no translation")
            return tf.sqrt(tf.reduce_sum(tf.square(x), axis=3, keepdims=bool(a.get("keepdims", 1))), name=base)
        if op in ("MaxPool", "AveragePool"):
            k, s = a["kernel_shape"], a.get("strides", [1, 1])
            t, lft, b, r = a.get("pads", [0, 0, 0, 0])
            if a.get("ceil_mode", 0):
                h, w = (int(d) for d in x.shape[1:3])
                b += (-(h + t + b - k[0])) % s[0]
                r += (-(w + lft + r - k[1])) % s[1]
            if t or lft or b or r:
                if op != "MaxPool" or not self._relu_input(node.input[0]):
                    raise ConfigError(f"{base}: padded {op} is only translated after a ReLU")
                x = tf.pad(x, [[0, 0], [t, b], [lft, r], [0, 0]])
            pool = tf.nn.max_pool2d if op == "MaxPool" else tf.nn.avg_pool2d
            return pool(x, ksize=k, strides=s, padding="VALID", name=base)
        if op == "GlobalAveragePool":
            return tf.reduce_mean(x, axis=[1, 2], keepdims=True, name=base)
        if op == "Concat":
            if a.get("axis") != 1:
                raise ConfigError(f"{base}: Concat on axis {a.get('axis')} has no translation")
            return tf.concat([self.values[i] for i in node.input], axis=3, name=base)
        if op == "Flatten" or (op == "Reshape" and x.shape.rank == 4 and self._flattens(node)):
            h, w, c = (int(d) for d in x.shape[1:4])
            self.flat_perm[node.output[0]] = (c, h, w)
            return tf.reshape(x, [-1, h * w * c], name=base)
        if op == "Pad":
            mode = a.get("mode", b"constant")
            pads = [int(v) for v in self.inits[node.input[1]]] if len(node.input) > 1 else list(a.get("pads", []))
            value = float(self.inits[node.input[2]]) if len(node.input) > 2 and node.input[2] else 0.0
            if mode not in (b"constant", "constant") or value != 0.0 or len(pads) != 8 or pads[0] or pads[1] \
                    or pads[4] or pads[5]:
                raise ConfigError(f"{base}: only zero padding of the spatial axes is translated")
            return tf.pad(x, [[0, 0], [pads[2], pads[6]], [pads[3], pads[7]], [0, 0]], name=base)
        if op == "Gemm":
            wt = self.inits[node.input[1]]
            wt = wt if a.get("transB", 0) else wt.T  # (out, in)
            if node.input[0] in self.flat_perm:  # NHWC flatten order: features in (h, w, c) order
                c, h, w = self.flat_perm[node.input[0]]
                wt = wt[:, np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)]
            y = tf.matmul(x, self.param(base + "/weights", wt.T))
            return tf.nn.bias_add(y, self.param(base + "/biases", self.inits[node.input[2]]), name=base)
        raise ConfigError(f"{base}: ONNX op {op} has no TensorFlow translation")


def _flatten_shape(shape) -> bool:
    return len(shape) == 2 and int(shape[0]) in (1, -1)


def split_head(model: onnx.ModelProto) -> tuple[list[onnx.NodeProto], list[onnx.NodeProto]]:
    """The nodes up to and including the first Flatten (the featurizer) and the rest (the
    classifier: Gemm / Relu layers). A model without Flatten (SSD) is all featurizer."""
    nodes = list(model.graph.node)
    inits = {t.name: t for t in model.graph.initializer}
    for i, n in enumerate(nodes):
        if n.op_type == "Flatten" or (n.op_type == "Reshape" and n.input[1] in inits
                                      and _flatten_shape(numpy_helper.to_array(inits[n.input[1]]))):
            return nodes[:i + 1], nodes[i + 1:]
    return nodes, []
