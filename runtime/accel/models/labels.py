"""The ImageNet (ILSVRC-2012) class names shipped with accelml, in class-index order.

``imagenet_classes()`` reads ``imagenet_classes.txt`` (package data, one name per line, 1000
lines; index 0 is "tench"); ``LABELS_FILE`` is its path.
"""

from __future__ import annotations

from pathlib import Path

LABELS_FILE = Path(__file__).with_name("imagenet_classes.txt")

__all__ = ["imagenet_classes", "LABELS_FILE"]


def imagenet_classes() -> list[str]:
    """The 1000 class names, index i = class i."""
    return LABELS_FILE.read_text(encoding="utf-8").splitlines()
