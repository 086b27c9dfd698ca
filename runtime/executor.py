"""One segment executor: a model as an ordered list of segments, each reading named tensors and
adding its outputs to the environment. The compiler's checks (``Partition.run``: engine segments on
the golden model or the float32 reference) and the runtime (``Model.run``: engine segments on a
device) run through this one function, with host segments on onnxruntime.

    env = run_segments(segments, env)          # env: {tensor name: array} in the graph's layout

A segment has ``inputs``, ``outputs`` and ``run(feeds) -> {name: array}``; ``HostSegment`` runs an
ONNX subgraph on onnxruntime's CPU provider.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

__all__ = ["Segment", "HostSegment", "FunctionSegment", "run_segments", "permuted"]


class Segment(Protocol):
    inputs: list[str]
    outputs: list[str]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


@dataclass
class HostSegment:
    """An ONNX subgraph (serialised model bytes) on onnxruntime; its session is made here, once
    (onnxruntime sessions are safe to run from several threads)."""

    inputs: list[str]
    outputs: list[str]
    onnx: bytes
    _session: object = field(init=False, repr=False)

    def __post_init__(self):
        import onnxruntime as ort

        self._session = ort.InferenceSession(self.onnx, providers=["CPUExecutionProvider"])

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        res = self._session.run(list(self.outputs), {n: feeds[n] for n in self.inputs})
        return dict(zip(self.outputs, res, strict=True))


@dataclass
class FunctionSegment:
    """A segment computed by ``fn(feeds) -> {name: array}`` (an engine segment on some backend)."""

    inputs: list[str]
    outputs: list[str]
    fn: object

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.fn(feeds)


def permuted(x: np.ndarray, perm) -> np.ndarray:
    """``x`` transposed by ``perm`` (None: as it is), C-contiguous."""
    return np.require(x.transpose(perm) if perm else x, requirements="C")


def run_segments(segments: Iterable[Segment], env: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``segments`` in order; each sees only its inputs and adds its outputs to ``env``."""
    for seg in segments:
        env.update(seg.run({name: env[name] for name in seg.inputs}))
    return env
