"""accelml.runtime: packages, devices, host pre-processing, the CLI, the server (serve/) and its client.

    model = accelml.runtime.load("resnet50.accel")      # verifies hashes and the EngineConfig
    outputs = model.run({"input": image})
"""

from .package import Model, load, save_package

__all__ = ["load", "save_package", "Model"]
