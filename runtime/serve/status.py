"""The outcome of one request, and how each protocol spells it.

``RequestError`` (a ``ServeError``) carries a ``Status``; the gRPC services abort with its code,
the REST handler answers its HTTP status with a JSON ``{"error": message}`` body. A client's
mistake is never INTERNAL / 500.
"""

from __future__ import annotations

import enum

import grpc

from accelml.hdl.errors import ServeError

__all__ = ["Status", "RequestError"]


class Status(enum.Enum):
    """(gRPC status code, HTTP status) of a request's outcome."""

    OK = (grpc.StatusCode.OK, 200)
    INVALID_ARGUMENT = (grpc.StatusCode.INVALID_ARGUMENT, 400)
    UNAUTHENTICATED = (grpc.StatusCode.UNAUTHENTICATED, 401)
    NOT_FOUND = (grpc.StatusCode.NOT_FOUND, 404)
    RESOURCE_EXHAUSTED = (grpc.StatusCode.RESOURCE_EXHAUSTED, 413)
    UNAVAILABLE = (grpc.StatusCode.UNAVAILABLE, 503)
    INTERNAL = (grpc.StatusCode.INTERNAL, 500)

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return self.value[0]

    @property
    def http(self) -> int:
        return self.value[1]


class RequestError(ServeError):
    """A request the server refuses; ``status`` says how."""

    def __init__(self, status: Status, message: str):
        self.status = status
        super().__init__(message)
