"""One served package: name, version, labels, input checking, batching and timing.

``ServedModel.predict(feeds)`` is what every protocol calls. It checks the request against the
package's inputs (names, dtype kind, shape apart from the batch) and refuses a client's mistake
with ``RequestError(INVALID_ARGUMENT)`` naming the input. A leading dimension B > 1 (B encoded
images for a string input, or B rows where the package takes a batch of one) runs B single-image
runs and stacks their outputs along axis 0. ``Model.run`` is thread-safe, so requests run side by
side on the server's threads.

Names: a request may name an input or output by its package name, by a TensorFlow tensor name
(``name:0``), or, for a package with one input (output), by any TensorFlow tensor name
``op:index`` (the seed clients send the graph's tensor names, e.g. ``Placeholder:0``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from accelml.hdl.errors import ModelFormatError, NumericsError, PackageError, ShapeError

from ..package import Model
from .status import RequestError, Status

__all__ = ["ServedModel", "Prediction"]

_CLIENT_ERRORS = (PackageError, ModelFormatError, ShapeError, NumericsError)


@dataclass(frozen=True)
class Prediction:
    outputs: dict[str, np.ndarray]
    backend_seconds: float  # time inside Model.run, summed over the batch


@dataclass
class ServedModel:
    name: str
    model: Model
    version: int = 1
    labels: dict[str, int] = field(default_factory=lambda: {"stable": 1})
    max_batch: int = 64

    @property
    def inputs(self) -> list[dict]:
        return self.model.inputs

    @property
    def outputs(self) -> list[dict]:
        return self.model.outputs

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> int:
        """The version a request addresses; NOT_FOUND for another model, version or label. An
        empty name addresses the one model served."""
        if name and name != self.name:
            raise RequestError(Status.NOT_FOUND, f"model {name!r} is not served here (serving {self.name!r})")
        if version is not None and label:
            raise RequestError(Status.INVALID_ARGUMENT, "give a version or a version label, not both")
        if label:
            if label not in self.labels:
                raise RequestError(Status.NOT_FOUND, f"model {name!r} has no version label {label!r} "
                                   f"(labels: {', '.join(sorted(self.labels)) or 'none'})")
            return self.labels[label]
        if version is not None and version != self.version:
            raise RequestError(Status.NOT_FOUND, f"model {name!r} has no version {version} "
                               f"(versions: {self.version})")
        return self.version

    @staticmethod
    def _match(name: str, known: list[str], what: str, public: list[str] | None = None) -> str:
        if name in known:
            return name
        base, sep, index = name.rpartition(":")
        if sep and index.isdigit():
            if base in known:
                return base
            public = known if public is None else public
            if len(public) == 1:
                return public[0]
        raise RequestError(Status.INVALID_ARGUMENT, f"unknown {what} {name!r} ({what}s: {', '.join(known)})")

    def _accepted(self) -> dict[str, dict]:
        """Input name -> spec: the package's inputs and, with host preprocessing, the featurizer's
        pixel input in place of the encoded images."""
        specs = {i["name"]: i for i in self.inputs}
        host = self.model.host
        if host is not None:
            specs.update({i["name"]: i for i in self.model.manifest["inputs"] if i["name"] == host.output})
        return specs

    def input_name(self, name: str) -> str:
        return self._match(name, list(self._accepted()), "input", [i["name"] for i in self.inputs])

    def output_names(self, wanted: list[str] | None) -> list[str]:
        known = [o["name"] for o in self.outputs]
        if not wanted:
            return known
        return list(dict.fromkeys(self._match(n, known, "output") for n in wanted))

    def _rows(self, spec: dict, x: np.ndarray) -> list[np.ndarray]:
        """One request tensor -> the feeds of each single-image run."""
        name = spec["name"]
        if spec["dtype"] == "string":
            if x.dtype.kind not in ("O", "S"):
                raise RequestError(Status.INVALID_ARGUMENT, f"input {name!r}: expected encoded image bytes "
                                   f"(dtype string), got {x.dtype}")
            if x.ndim > 1:
                raise RequestError(Status.INVALID_ARGUMENT, f"input {name!r}: expected a vector of encoded "
                                   f"images, got shape {list(x.shape)}")
            return [np.asarray([v], dtype=object) for v in x.reshape(-1)]
        if x.dtype.kind not in ("f", "i", "u", "b"):
            raise RequestError(Status.INVALID_ARGUMENT, f"input {name!r}: expected {spec['dtype']}, got "
                               f"{'string' if x.dtype.kind in ('O', 'S') else x.dtype}")
        shape = list(spec["shape"])
        if list(x.shape) == shape:
            return [x]
        if shape and shape[0] == 1 and x.ndim == len(shape) and list(x.shape[1:]) == shape[1:]:
            return [x[i:i + 1] for i in range(x.shape[0])]
        raise RequestError(Status.INVALID_ARGUMENT, f"input {name!r}: expected shape {shape} (or a batch "
                           f"[B, {', '.join(map(str, shape[1:]))}]), got {list(x.shape)}")

    def predict(self, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> Prediction:
        specs = self._accepted()
        rows: dict[str, list[np.ndarray]] = {}
        for given, value in feeds.items():
            name = self.input_name(given)
            if name in rows:
                raise RequestError(Status.INVALID_ARGUMENT, f"input {name!r} given twice")
            rows[name] = self._rows(specs[name], np.asarray(value))
        host = self.model.host
        missing = [i["name"] for i in self.inputs if i["name"] not in rows
                   and not (host is not None and i["name"] == host.input and host.output in rows)]
        if missing:
            raise RequestError(Status.INVALID_ARGUMENT, f"missing input(s): {', '.join(missing)}")
        batch = {len(r) for r in rows.values()}
        if len(batch) != 1:
            raise RequestError(Status.INVALID_ARGUMENT, f"inputs disagree on the batch size: {sorted(batch)}")
        b = batch.pop()
        if not 1 <= b <= self.max_batch:
            raise RequestError(Status.INVALID_ARGUMENT, f"batch of {b}: between 1 and {self.max_batch} per request")
        if b > 1 and getattr(self.model, "post", None) is not None:
            raise RequestError(Status.INVALID_ARGUMENT, f"batch of {b}: this model's detections differ in number "
                               "from image to image; send one image per request")
        wanted = self.output_names(outputs)
        results: list[dict[str, np.ndarray]] = []
        backend = 0.0
        for k in range(b):
            t0 = time.perf_counter()
            try:
                out = self.model.run({n: r[k] for n, r in rows.items()})
            except _CLIENT_ERRORS as e:
                raise RequestError(Status.INVALID_ARGUMENT, str(e)) from None
            backend += time.perf_counter() - t0
            results.append(out)
        stacked = {n: results[0][n] if b == 1 else _stack([r[n] for r in results]) for n in wanted}
        return Prediction(stacked, backend)


def _stack(parts: list[np.ndarray]) -> np.ndarray:
    """Per-image outputs -> one batch: along their batch axis of one, or a new leading axis."""
    if parts[0].ndim and parts[0].shape[0] == 1:
        return np.concatenate(parts, axis=0)
    return np.stack(parts)
