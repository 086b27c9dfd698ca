"""accelml.runtime.serve: one package served over gRPC and REST.

Protocols: TF Serving (gRPC PredictionService / ModelService on the ``tensorflow_serving.apis``
protos, REST ``/v1/models/...``), KServe v2 / Open Inference Protocol (gRPC
``inference.GRPCInferenceService``, REST ``/v2/...``), ``grpc.health.v1``, Prometheus ``/metrics``.

    server.py    Server / ServeOptions / serve(): ports, TLS, threads, graceful shutdown
    grpc_api.py  the gRPC servicers and the auth interceptor
    rest.py      the REST endpoints
    model.py     ServedModel: names, versions, labels, input checks, batching, backend timing
    service.py   what the protocols share: model, keys, metrics, one way to run a request
    tensors.py   wire tensors <-> numpy
    auth.py      access keys, re-read when the key file changes
    metrics.py   per-server Prometheus registry
    status.py    Status and RequestError (a request's outcome in gRPC and HTTP terms)
    command.py   the ``accelml serve`` subcommand

Importing this package is cheap; ``Server`` loads gRPC and the protos on first use.
"""

from __future__ import annotations

__all__ = ["Server", "ServeOptions", "serve"]


def __getattr__(name: str):
    if name in __all__:
        from . import server

        return getattr(server, name)
    raise AttributeError(name)
