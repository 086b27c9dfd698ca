"""accelml.compiler: ONNX / TensorFlow CNNs -> engine packages.

    cm = accelml.compiler.compile_model("model.onnx", config="a10")
    accelml.runtime.save_package(cm, "model.accel")
"""

from .driver import CompiledModel, compile_model

__all__ = ["compile_model", "CompiledModel"]
