"""Prometheus metrics of one server, in its own registry (nothing process-wide).

    accelml_requests_total{model, version, protocol, status}        counter
    accelml_request_seconds{model, version, protocol, status}       histogram, whole request
    accelml_backend_seconds{model, version}                         histogram, time in Model.run

``protocol`` is one of tfs-grpc, tfs-rest, v2-grpc, v2-rest; ``status`` the outcome's name (OK,
INVALID_ARGUMENT, ...). ``render()`` is the text exposition served at ``/metrics``.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["Metrics", "CONTENT_TYPE_LATEST"]

_BUCKETS = (.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1.0, 2.0, 5.0, 10.0)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        labels = ("model", "version", "protocol", "status")
        self.requests = Counter("accelml_requests", "Requests by outcome", labels, registry=self.registry)
        self.latency = Histogram("accelml_request_seconds", "Request latency inside the server", labels,
                                 buckets=_BUCKETS, registry=self.registry)
        self.backend = Histogram("accelml_backend_seconds", "Time in Model.run per request", ("model", "version"),
                                 buckets=_BUCKETS, registry=self.registry)

    def observe(self, model: str, version: str, protocol: str, status: str, seconds: float) -> None:
        self.requests.labels(model, version, protocol, status).inc()
        self.latency.labels(model, version, protocol, status).observe(seconds)

    def observe_backend(self, model: str, version: str, seconds: float) -> None:
        self.backend.labels(model, version).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
