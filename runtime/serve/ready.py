"""The one line ``accelml serve`` prints when it is ready, and how a supervisor reads it back.

    accelml serve: model 'NAME' version 1 ready on grpc HOST:P rest HOST:Q (plain|tls)

The deployment layer (runtime/workspace/local.py) starts servers with port 0 and learns the ports
from this line; both sides use these two functions, so the format is defined once. Import-light:
no gRPC, no protos.
"""

from __future__ import annotations

import re

__all__ = ["ready_line", "parse_ready_line"]

_PATTERN = re.compile(r"accelml serve: model '(?P<name>[^']*)' version (?P<version>\S+) ready on "
                      r"grpc (?P<ghost>\S+):(?P<grpc>\d+) rest (?P<rhost>\S+):(?P<rest>\d+) \((?P<scheme>plain|tls)\)")


def ready_line(name: str, version, host: str, grpc_port: int, rest_port: int, tls: bool) -> str:
    return (f"accelml serve: model {name!r} version {version} ready on grpc {host}:{grpc_port} "
            f"rest {host}:{rest_port} ({'tls' if tls else 'plain'})")


def parse_ready_line(text: str, name: str | None = None) -> tuple[int, int] | None:
    """(gRPC port, REST port) from the last ready line in ``text`` (for model ``name`` if given)."""
    found = [m for m in _PATTERN.finditer(text) if name is None or m["name"] == name]
    return (int(found[-1]["grpc"]), int(found[-1]["rest"])) if found else None
