"""What every protocol shares: the served model, the auth keys, the metrics, and one way to run
a request (timed, counted, and turned into a ``RequestError`` whatever goes wrong).

An unexpected exception is logged with its traceback and answered as INTERNAL; everything a
client can cause is a ``RequestError`` with a 4xx-class status before it gets there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from .auth import KeyFile
from .metrics import Metrics
from .model import ServedModel
from .status import RequestError, Status

__all__ = ["Service"]

log = logging.getLogger("accelml.serve")
T = TypeVar("T")


class Service:
    def __init__(self, served: ServedModel, keys: KeyFile | None = None, metrics: Metrics | None = None):
        self.served = served
        self.keys = keys
        self.metrics = metrics or Metrics()
        self.ready = False  # set once the server listens; health and readiness report it

    def authorize(self, authorization: str | None) -> None:
        if self.keys is not None:
            self.keys.check(authorization)

    def call(self, protocol: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` as one request of ``protocol``: metrics by outcome; RequestError on failure."""
        t0 = time.perf_counter()
        status = Status.OK
        try:
            return fn()
        except RequestError as e:
            status = e.status
            raise
        except Exception as e:
            status = Status.INTERNAL
            log.exception("internal error in a %s request", protocol)
            raise RequestError(Status.INTERNAL, f"internal error: {type(e).__name__}: {e}") from None
        finally:
            self.metrics.observe(self.served.name, str(self.served.version), protocol, status.name,
                                 time.perf_counter() - t0)

    def predict(self, feeds, outputs=None):
        """``ServedModel.predict`` with the backend time recorded."""
        pred = self.served.predict(feeds, outputs)
        self.metrics.observe_backend(self.served.name, str(self.served.version), pred.backend_seconds)
        return pred
