"""The host side of a package's contract: what runs on the CPU before the engine.

A package compiled from a graph that takes encoded images (JPEG/PNG strings) records, under
``host_preprocess`` in its manifest, how one encoded image becomes the featurizer's input: decode,
resize, channel order, scale and offset, batch dimension (``HostPreprocess``). The TensorFlow
importer (compiler/tf_import.py) finds that description in the graph and stores it; the runtime
(``Model.run``) applies it here, so ``load(PKG).run({"images": np.array([jpeg], dtype=object)})``
takes image bytes. Bad bytes raise ``PackageError`` naming the input.

    pre = HostPreprocess.from_dict(manifest["host_preprocess"])
    pixels = pre(jpeg_bytes)           # float32 (1, height, width, channels), NHWC

The arithmetic is numpy float32 and matches TensorFlow's ResizeBilinear / ResizeNearestNeighbor;
decoding uses Pillow (libjpeg's accurate IDCT).
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field

import numpy as np

from accelml.hdl.errors import PackageError, ShapeError

__all__ = ["HostPreprocess", "host_preprocess", "PREPROCESS_KEY", "encoded_images"]

PREPROCESS_KEY = "accelml.host_preprocess"  # the ONNX metadata key the TensorFlow importer writes


@dataclass(frozen=True)
class HostPreprocess:
    """How the host turns one encoded image into the featurizer's input.

    ``pixels = decode(data)`` (uint8, (H, W, channels)); then, in float32: resize to ``size``
    (TensorFlow's ResizeBilinear / ResizeNearestNeighbor arithmetic with the recorded
    ``align_corners`` / ``half_pixel_centers``; no resize: the image must already be ``size``),
    ``y[..., c] = x[..., channel_order[c]] * scale[c] + offset[c]``, and a leading batch
    dimension: ``(1, height, width, channels)`` NHWC float32, fed to the graph input ``output``.

    ``mean`` / ``std`` give the same affine map as ``(x - mean) / std``.
    """

    input: str  # the graph input that held the encoded image (a string tensor)
    output: str  # the featurizer input the result is fed to
    decoder: str  # "jpeg" | "png" | "image" (any format) | "bmp"
    channels: int  # 1 or 3
    size: tuple[int, int]  # (height, width) of the featurizer input
    resize: str | None = None  # "bilinear" | "nearest" | None
    align_corners: bool = False
    half_pixel_centers: bool = False
    channel_order: tuple[int, ...] = (0, 1, 2)
    scale: tuple[float, ...] = (1.0, 1.0, 1.0)
    offset: tuple[float, ...] = (0.0, 0.0, 0.0)
    dct_method: str = ""  # DecodeJpeg's IDCT ("" is TensorFlow's INTEGER_FAST)
    tf_ops: tuple[str, ...] = field(default=())  # the TensorFlow op types the description replaces
    tf_tensor: str = ""  # the TensorFlow tensor the featurizer starts from

    @property
    def channel_names(self) -> str:
        """"RGB", "BGR" or "L" (grayscale), the order of the channels the featurizer sees."""
        if self.channels == 1:
            return "L"
        return "".join("RGB"[c] for c in self.channel_order)

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(-o / s if s else 0.0 for s, o in zip(self.scale, self.offset, strict=True))

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(1.0 / s if s else float("inf") for s in self.scale)

    def decode(self, data: bytes) -> np.ndarray:
        """Encoded image bytes -> uint8 (H, W, channels), with Pillow (libjpeg's accurate IDCT:
        identical to TensorFlow's for ``dct_method="INTEGER_ACCURATE"``, a few levels apart for
        its default INTEGER_FAST)."""
        try:
            from PIL import Image
        except ImportError:
            raise PackageError(f"input {self.input!r}: decoding images on the host needs Pillow "
                               "(pip install pillow)") from None
        try:
            img = Image.open(io.BytesIO(bytes(data)))
            img = img.convert("RGB" if self.channels == 3 else "L")
        except Exception as e:  # Pillow raises several unrelated types for bad data
            raise PackageError(f"input {self.input!r}: not a decodable {self.decoder} image ({e})") from None
        arr = np.asarray(img, dtype=np.uint8)
        return arr[:, :, None] if arr.ndim == 2 else arr

    def apply_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Decoded pixels (H, W, channels) -> the featurizer input (1, height, width, channels)."""
        x = np.asarray(pixels)
        if x.ndim == 2:
            x = x[:, :, None]
        if x.ndim != 3 or x.shape[2] != self.channels:
            raise ShapeError(f"expected decoded pixels of shape (H, W, {self.channels}), got {x.shape}",
                             tensor=self.input)
        x = x.astype(np.float32)
        if self.resize is not None:
            x = _resize(x, self.size, self.resize, self.align_corners, self.half_pixel_centers)
        elif x.shape[:2] != tuple(self.size):
            raise ShapeError(f"the graph does not resize: the image must be {self.size[0]}x{self.size[1]}, "
                             f"got {x.shape[0]}x{x.shape[1]}", tensor=self.input)
        x = x[:, :, list(self.channel_order)]
        x = x * np.asarray(self.scale, np.float32) + np.asarray(self.offset, np.float32)
        return np.ascontiguousarray(x[None].astype(np.float32))

    def __call__(self, data: bytes) -> np.ndarray:
        return self.apply_pixels(self.decode(data))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> HostPreprocess:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, d: dict) -> HostPreprocess:
        """The description from its JSON object (as in a package manifest); PackageError if malformed."""
        try:
            d = dict(d)
            for k in ("size", "channel_order", "scale", "offset", "tf_ops"):
                d[k] = tuple(d[k])
            return cls(**d)
        except (KeyError, TypeError, ValueError) as e:
            raise PackageError(f"malformed host preprocessing description: {e!r}") from None

    @classmethod
    def from_onnx(cls, model) -> HostPreprocess | None:
        """The description stored in a converted model, or None if it has no host preprocessing."""
        for p in model.metadata_props:
            if p.key == PREPROCESS_KEY:
                return cls.from_json(p.value)
        return None


def host_preprocess(model) -> HostPreprocess | None:
    """``HostPreprocess.from_onnx``."""
    return HostPreprocess.from_onnx(model)


def _resize(x: np.ndarray, size: tuple[int, int], method: str, align_corners: bool,
            half_pixel: bool) -> np.ndarray:
    """TensorFlow's ResizeBilinear / ResizeNearestNeighbor on (H, W, C) float32, in float32."""
    (ih, iw), (oh, ow) = x.shape[:2], size

    def scale(i, o):
        return np.float32((i - 1) / (o - 1)) if align_corners and o > 1 else np.float32(i / o)

    if method == "nearest":
        def index(o, i):
            s = scale(i, o)
            pos = (np.arange(o, dtype=np.float32) + np.float32(0.5 if half_pixel else 0.0)) * s
            idx = np.round(pos) if align_corners else np.floor(pos)
            return np.clip(idx.astype(np.int64), 0, i - 1)

        return x[index(oh, ih)][:, index(ow, iw)]

    def weights(o, i):
        s = scale(i, o)
        pos = np.arange(o, dtype=np.float32)
        pos = (pos + np.float32(0.5)) * s - np.float32(0.5) if half_pixel else pos * s
        fl = np.floor(pos)
        lo = np.maximum(fl.astype(np.int64), 0)
        hi = np.minimum(np.ceil(pos).astype(np.int64), i - 1)
        return lo, hi, (pos - fl).astype(np.float32)

    ylo, yhi, yl = weights(oh, ih)
    xlo, xhi, xl = weights(ow, iw)
    xl = xl[None, :, None]
    top = x[ylo][:, xlo] + (x[ylo][:, xhi] - x[ylo][:, xlo]) * xl
    bottom = x[yhi][:, xlo] + (x[yhi][:, xhi] - x[yhi][:, xlo]) * xl
    return (top + (bottom - top) * yl[:, None, None]).astype(np.float32)


def encoded_images(value, name: str) -> list[bytes]:
    """A feed of encoded images (bytes, or an array of bytes objects of any shape) -> the images in
    order; PackageError naming the input for anything else."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return [bytes(value)]
    arr = np.asarray(value, dtype=object) if not isinstance(value, np.ndarray) else value
    if arr.dtype.kind not in ("O", "S"):
        raise PackageError(f"input {name!r}: expected encoded image bytes (dtype string), got {arr.dtype}")
    items = list(arr.reshape(-1))
    for item in items:
        if not isinstance(item, (bytes, bytearray, memoryview, np.bytes_)):
            raise PackageError(f"input {name!r}: expected encoded image bytes, got an element of type "
                               f"{type(item).__name__}")
    return [bytes(i) for i in items]
