"""accelml.accel: conversion to accelerator packages, container images and the scoring client.

    from accelml.accel import AccelOnnxConverter, AccelContainerImage, PredictionClient

``PredictionClient`` is ``accelml.runtime.client.PredictionClient`` (TF Serving Predict over gRPC),
imported when first used.
"""

from .accel_container_image import AccelContainerImage
from .accel_onnx_converter import AccelOnnxConverter

__all__ = ["AccelOnnxConverter", "AccelContainerImage", "PredictionClient"]


def __getattr__(name: str):
    if name == "PredictionClient":
        from accelml.runtime.client import PredictionClient

        return PredictionClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
