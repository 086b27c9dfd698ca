"""The model server: one package, gRPC and REST, started and stopped as one object.

    with Server(ServeOptions(Path("m.accel"), grpc_port=0, rest_port=0)) as srv:
        print(srv.grpc_port, srv.rest_port)        # the ports actually bound

``Server(options)`` loads and verifies the package (``PackageError`` if it cannot), ``start()``
binds both ports (``ServeError`` naming the port if one is taken; port 0 picks a free one), marks
the health services SERVING and returns. ``stop(grace)`` marks them NOT_SERVING, stops accepting,
lets in-flight requests finish (up to ``grace`` seconds on gRPC; every REST request thread is
joined) and returns. ``serve(options)`` runs a server until SIGTERM or SIGINT and exits 0.
"""

from __future__ import annotations

import logging
import signal
import ssl
import sys
import threading
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2

from accelml.hdl.errors import ServeError

from ..package import load
from .auth import KeyFile
from .grpc_api import AuthInterceptor, add_services
from .model import ServedModel
from .ready import ready_line
from .rest import RestServer
from .service import Service

__all__ = ["ServeOptions", "Server", "serve"]

log = logging.getLogger("accelml.serve")


@dataclass(frozen=True)
class ServeOptions:
    package: Path
    name: str | None = None  # model name; default the package's
    grpc_port: int = 8500
    rest_port: int = 8501
    host: str = "127.0.0.1"
    device: str = "funcsim"
    auth_keys: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_request_bytes: int = 64 << 20
    workers: int = 16
    labels: dict[str, int] = field(default_factory=lambda: {"stable": 1})

    def __post_init__(self):
        for port, flag in ((self.grpc_port, "--grpc-port"), (self.rest_port, "--rest-port")):
            if not 0 <= port <= 65535:
                raise ServeError(f"{flag} {port}: a port is 0..65535 (0 picks a free one)")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ServeError("TLS needs both --tls-cert and --tls-key")
        if self.max_request_bytes < 1024:
            raise ServeError(f"--max-request-bytes {self.max_request_bytes}: at least 1024")
        if self.workers < 1:
            raise ServeError(f"--workers {self.workers}: at least 1")


class Server:
    def __init__(self, options: ServeOptions):
        self.options = options
        model = load(options.package, device=options.device)
        name = options.name or model.manifest.get("model") or Path(options.package).stem
        keys = KeyFile(options.auth_keys) if options.auth_keys is not None else None
        self.service = Service(ServedModel(name, model, labels=dict(options.labels)), keys)
        self.grpc_port: int | None = None
        self.rest_port: int | None = None
        self._grpc: grpc.Server | None = None
        self._rest: RestServer | None = None
        self._rest_thread: threading.Thread | None = None
        self._health = None
        self._stopped = threading.Event()

    @property
    def name(self) -> str:
        return self.service.served.name

    def _tls(self) -> tuple[bytes, bytes] | None:
        o = self.options
        if o.tls_cert is None:
            return None
        try:
            return o.tls_key.read_bytes(), o.tls_cert.read_bytes()
        except OSError as e:
            raise ServeError(f"cannot read the TLS certificate or key: {e}") from None

    def start(self) -> Server:
        o = self.options
        tls = self._tls()
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=o.workers, thread_name_prefix="accelml-grpc"),
            interceptors=[AuthInterceptor(self.service)],
            options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", o.max_request_bytes),
                     ("grpc.max_send_message_length", 1 << 30)])
        self._health = add_services(server, self.service)
        address = f"{o.host}:{o.grpc_port}"
        try:
            if tls is not None:
                port = server.add_secure_port(address, grpc.ssl_server_credentials([tls]))
            else:
                port = server.add_insecure_port(address)
        except RuntimeError:  # grpc: "Failed to bind to address ..."
            raise ServeError(f"gRPC: cannot listen on {address} (is the port in use?)") from None
        if not port:
            raise ServeError(f"gRPC: cannot listen on {address} (is the port in use?)")
        context = None
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            try:
                context.load_cert_chain(str(o.tls_cert), str(o.tls_key))
            except (OSError, ssl.SSLError) as e:
                raise ServeError(f"REST: cannot use the TLS certificate/key: {e}") from None
        try:
            self._rest = RestServer((o.host, o.rest_port), self.service, o.max_request_bytes, context)
        except OSError as e:
            server.stop(None)
            raise ServeError(f"REST: cannot listen on {o.host}:{o.rest_port} ({e.strerror or e})") from None
        server.start()
        self._grpc = server
        self.grpc_port, self.rest_port = port, self._rest.server_address[1]
        self._rest_thread = threading.Thread(target=self._rest.serve_forever, kwargs={"poll_interval": 0.2},
                                             name="accelml-rest", daemon=True)
        self._rest_thread.start()
        self.service.ready = True
        for svc in ("", "tensorflow.serving.PredictionService", "inference.GRPCInferenceService"):
            self._health.set(svc, health_pb2.HealthCheckResponse.SERVING)
        return self

    def ready_line(self) -> str:
        return ready_line(self.name, self.service.served.version, self.options.host, self.grpc_port, self.rest_port,
                          bool(self.options.tls_cert))

    def stop(self, grace: float = 30.0) -> None:
        """Stop accepting, let in-flight requests finish, release the ports."""
        if self._stopped.is_set():
            return
        self.service.ready = False
        if self._health is not None:
            self._health.enter_graceful_shutdown()
        if self._grpc is not None:
            self._grpc.stop(grace).wait()
        if self._rest is not None:
            self._rest.shutdown()
            self._rest.close_idle()
            self._rest.server_close()  # joins the request threads
        self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    def __enter__(self) -> Server:
        return self.start() if self._grpc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(options: ServeOptions) -> int:
    """Run a server until SIGTERM / SIGINT; print one line when ready; exit 0 after a clean stop."""
    server = Server(options).start()
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    print(server.ready_line(), flush=True)
    while not stop.wait(0.5):
        pass
    print("accelml serve: stopping (finishing in-flight requests)", file=sys.stderr, flush=True)
    server.stop()
    return 0
