"""Image preprocessing for the featurizers, as TensorFlow 1 graph ops.

    in_images = tf.placeholder(tf.string)
    image_tensors = utils.preprocess_array(in_images)        # (1, 224, 224, 3) float32

``preprocess_array`` decodes one JPEG image (the request's single element, whatever the rank of
the string tensor; TensorFlow refuses a request with more than one), resizes it bilinearly to
``output_height`` x ``output_width``, reverses the channels to BGR and subtracts the per-channel
ImageNet mean (the Caffe-style normalisation the ResNet / VGG featurizers take). Every op is one
that the TensorFlow importer (``accelml.compiler.tf_import``) recognises as host preprocessing, so
a converted package takes JPEG bytes and does this on the host with numpy.
"""

from __future__ import annotations

import numpy as np

MEAN_BGR = (103.939, 116.779, 123.68)

__all__ = ["preprocess_array", "MEAN_BGR"]


def preprocess_array(input_array, output_width: int = 224, output_height: int = 224, name: str = "preprocess", *,
                     mean=MEAN_BGR, std: float | None = None, bgr: bool = True):
    """JPEG string tensor (one image) -> (1, output_height, output_width, 3) float32: BGR (or RGB with
    ``bgr=False``), ``mean`` subtracted, divided by ``std`` when given. The defaults are the ResNet /
    VGG featurizers' normalisation; ``EfficientNetLite0`` takes ``mean=127.0, std=128.0, bgr=False``."""
    import tensorflow.compat.v1 as tf

    with tf.name_scope(name):
        data = tf.reshape(input_array, [], name="one_image")  # exactly one image per request
        img = tf.image.decode_jpeg(data, channels=3)
        img = tf.expand_dims(tf.cast(img, tf.float32), 0)
        img = tf.image.resize_bilinear(img, [output_height, output_width], align_corners=False)
        if bgr:
            img = tf.reverse(img, axis=[-1])
        mean = np.broadcast_to(np.asarray(mean, np.float32), (3,))
        if std is None:
            return tf.subtract(img, tf.constant(mean), name="normalized")
        img = tf.subtract(img, tf.constant(mean))
        return tf.multiply(img, tf.constant(np.float32(1.0 / std)), name="normalized")
