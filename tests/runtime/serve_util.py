"""Helpers of the serving tests: a small CNN built with ``onnx.helper`` and JPEG test pictures."""

from __future__ import annotations

import io

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def small_cnn_onnx(seed: int = 0):
    """conv3x3(3->8)+relu -> maxpool 2 -> conv3x3(8->16)+relu -> global average pool -> dense(10)."""
    rng = np.random.default_rng(seed)

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    inits = [w("w1", 8, 3, 3, 3), w("b1", 8), w("w2", 16, 8, 3, 3), w("b2", 16), w("w3", 16, 10), w("b3", 10)]
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "w3", "b3"], ["logits"])]
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])
    graph = helper.make_graph(nodes, "small", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def picture(h: int = 45, w: int = 61, seed: int = 0) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([128 + 100 * np.sin(x / 7 + y / 11 + seed), 40 + 3 * x, 220 - 4 * y], -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def jpeg_bytes(seed: int = 0, size: tuple[int, int] = (45, 61)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(picture(*size, seed=seed)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()
