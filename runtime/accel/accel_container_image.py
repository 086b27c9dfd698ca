"""``AccelContainerImage.image_configuration()``: how an image of a converted model is built and
run (base image, device, resources)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["AccelContainerImage", "AccelImageConfiguration"]


@dataclass
class AccelImageConfiguration:
    tags: dict = field(default_factory=dict)
    description: str | None = None
    base_image: str = "python:3.11-slim"
    repository: str = "accelml"
    device: str = "funcsim"  # the device the server runs the package on (funcsim or rtl)
    cpu_cores: float = 1.0
    memory_gb: float = 2.0


class AccelContainerImage:
    @staticmethod
    def image_configuration(tags: dict | None = None, description: str | None = None,
                            **kwargs) -> AccelImageConfiguration:
        return AccelImageConfiguration(tags=dict(tags or {}), description=description, **kwargs)
