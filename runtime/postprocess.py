"""Host post-processing a package declares, applied by ``Model.run`` after the engine: SSD box
decoding and non-maximum suppression.

A package compiled with ``compile_model(..., postprocess="ssd")`` (``accelml compile --postprocess
ssd``) records in its manifest::

    "host_postprocess": {"kind": "ssd", "loc": [6 names], "conf": [6 names], "layout": "nchw"|"nhwc",
                         "num_classes": 21, "input_size": 300, "score_threshold": 0.01,
                         "iou_threshold": 0.45, "top_k": 200}

``loc`` / ``conf`` name the multibox head outputs, largest feature map first: NCHW maps
(``(1, anchors*4, H, W)``, the seed ONNX model) or NHWC ones (``(1, H, W, anchors, 4)`` or
``(1, H, W, anchors*4)``, the TensorFlow graph's ``blockN_box/Reshape`` tensors). ``Model.run`` then
returns the heads and three more outputs: ``detection_boxes`` (K, 4) as (x0, y0, x1, y1) relative to
the image, ``detection_scores`` (K,) and ``detection_classes`` (K,) (class ids >= 1), best first.

SSD300 priors (``ssd_priors``) and the decoding (variances 0.1 / 0.2, softmax scores, per-class
NMS) are those of the original SSD300 on VGG-16.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from accelml.hdl.errors import PackageError

__all__ = ["ssd_priors", "ssd_decode", "SsdPostprocess", "DETECTION_OUTPUTS"]

DETECTION_OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes")


def ssd_priors(feature_sizes: list[int], input_size: int = 300) -> np.ndarray:
    """SSD300 prior boxes (cx, cy, w, h), relative to the image, in head-output order: for each
    feature map, for each cell row-major, for each anchor. 8732 of them at 300 x 300."""
    scale = input_size / 300.0
    min_sizes = [30, 60, 111, 162, 213, 264]
    max_sizes = [60, 111, 162, 213, 264, 315]
    ratios = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
    out = []
    for k, f in enumerate(feature_sizes):
        s = min_sizes[k] * scale / input_size
        s2 = math.sqrt(s * max_sizes[k] * scale / input_size)
        shapes = [(s, s), (s2, s2)]
        for r in ratios[k]:
            shapes += [(s * math.sqrt(r), s / math.sqrt(r)), (s / math.sqrt(r), s * math.sqrt(r))]
        c = (np.arange(f) + 0.5) / f
        cy, cx = np.meshgrid(c, c, indexing="ij")
        cells = np.stack([cx.ravel(), cy.ravel()], axis=1)
        for_cell = np.array(shapes)
        boxes = np.concatenate([np.repeat(cells, len(shapes), axis=0), np.tile(for_cell, (f * f, 1))], axis=1)
        out.append(boxes)
    return np.clip(np.concatenate(out), 0.0, 1.0)


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float, top_k: int) -> list[int]:
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order.size and len(keep) < top_k:
        i = order[0]
        keep.append(int(i))
        lt = np.maximum(boxes[i, :2], boxes[order[1:], :2])
        rb = np.minimum(boxes[i, 2:], boxes[order[1:], 2:])
        inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
        order = order[1:][inter / (area[i] + area[order[1:]] - inter + 1e-12) <= iou]
    return keep


def ssd_decode(locs: list[np.ndarray], confs: list[np.ndarray], sizes: list[int], num_classes: int,
               input_size: int = 300, score_threshold: float = 0.01, iou_threshold: float = 0.45,
               top_k: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per feature map, box offsets (cells * anchors, 4) and class logits (cells * anchors,
    classes) in head-output order -> (boxes, scores, class ids), best first."""
    loc, conf = np.concatenate(locs).astype(np.float64), np.concatenate(confs).astype(np.float64)
    pri = ssd_priors(sizes, input_size)
    if len(pri) != len(loc):
        raise PackageError(f"SSD post-processing: {len(loc)} boxes from the heads, {len(pri)} priors for feature "
                           f"maps {sizes} at {input_size} x {input_size}")
    cxcy = pri[:, :2] + loc[:, :2] * 0.1 * pri[:, 2:]
    wh = pri[:, 2:] * np.exp(loc[:, 2:] * 0.2)
    boxes = np.concatenate([cxcy - wh / 2, cxcy + wh / 2], axis=1)
    prob = np.exp(conf - conf.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    out_b, out_s, out_c = [], [], []
    for c in range(1, num_classes):
        sel = np.flatnonzero(prob[:, c] > score_threshold)
        for i in _nms(boxes[sel], prob[sel, c], iou_threshold, top_k):
            out_b.append(boxes[sel[i]])
            out_s.append(prob[sel[i], c])
            out_c.append(c)
    order = np.argsort(-np.array(out_s), kind="stable")[:top_k]
    return (np.array(out_b).reshape(-1, 4)[order].astype(np.float32), np.array(out_s)[order].astype(np.float32),
            np.array(out_c, np.int64)[order])


class SsdPostprocess:
    """The manifest's ``host_postprocess`` of kind "ssd" (see the module doc)."""

    KEYS = ("loc", "conf", "layout", "num_classes", "input_size")

    def __init__(self, spec: Mapping):
        missing = [k for k in self.KEYS if k not in spec]
        if missing:
            raise PackageError(f"host_postprocess: missing {', '.join(missing)}")
        self.loc, self.conf = list(spec["loc"]), list(spec["conf"])
        if len(self.loc) != len(self.conf) or not self.loc or spec["layout"] not in ("nchw", "nhwc"):
            raise PackageError("host_postprocess: loc and conf must name the same number of heads; layout is "
                               "'nchw' or 'nhwc'")
        self.layout = spec["layout"]
        self.num_classes, self.input_size = int(spec["num_classes"]), int(spec["input_size"])
        self.score_threshold = float(spec.get("score_threshold", 0.01))
        self.iou_threshold = float(spec.get("iou_threshold", 0.45))
        self.top_k = int(spec.get("top_k", 200))

    @property
    def heads(self) -> list[str]:
        return self.loc + self.conf

    def _rows(self, x: np.ndarray, per: int) -> tuple[np.ndarray, int]:
        x = np.asarray(x)[0]
        if self.layout == "nchw":  # (anchors * per, H, W)
            return x.transpose(1, 2, 0).reshape(-1, per), x.shape[1]
        return x.reshape(-1, per), x.shape[0]  # (H, W, anchors, per) or (H, W, anchors * per)

    def __call__(self, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        locs, confs, sizes = [], [], []
        for ln, cn in zip(self.loc, self.conf, strict=True):
            loc, size = self._rows(outputs[ln], 4)
            conf, _ = self._rows(outputs[cn], self.num_classes)
            locs.append(loc)
            confs.append(conf)
            sizes.append(size)
        boxes, scores, classes = ssd_decode(locs, confs, sizes, self.num_classes, self.input_size,
                                            self.score_threshold, self.iou_threshold, self.top_k)
        return dict(zip(DETECTION_OUTPUTS, (boxes, scores, classes), strict=True))

    @classmethod
    def for_outputs(cls, outputs: list[dict], input_shape: list[int], **options) -> dict:
        """The manifest entry for a model whose outputs are SSD heads named ``loc*`` / ``conf*`` (the
        seed model, NCHW) or ``.../blockN_box/Reshape`` / ``Reshape_1`` (the TensorFlow graph, NHWC)."""
        names = [o["name"] for o in outputs]
        loc = sorted((n for n in names if n.startswith("loc")), key=lambda n: int(n[3:] or 0))
        conf = sorted((n for n in names if n.startswith("conf")), key=lambda n: int(n[4:] or 0))
        layout = "nchw"
        if not loc:
            loc = [n for n in names if n.split(":")[0].endswith("_box/Reshape")]
            conf = [n for n in names if n.split(":")[0].endswith("_box/Reshape_1")]
            layout = "nhwc"
        if not loc or len(loc) != len(conf):
            raise PackageError(f"--postprocess ssd: the model's outputs are not SSD heads (loc*/conf* or "
                               f"*_box/Reshape[_1]): {', '.join(names)}")
        shapes = {o["name"]: o["shape"] for o in outputs}
        first_loc, first_conf = shapes[loc[0]], shapes[conf[0]]
        if layout == "nchw":
            anchors = first_loc[1] // 4
            num_classes = first_conf[1] // anchors
        else:
            per_cell_loc = int(np.prod(first_loc[3:]))
            num_classes = int(np.prod(first_conf[3:])) * 4 // per_cell_loc
        size = max(d for d in input_shape[1:] if d != 3) if len(input_shape) == 4 else 300
        return {"kind": "ssd", "loc": loc, "conf": conf, "layout": layout, "num_classes": int(num_classes),
                "input_size": int(size), **options}
