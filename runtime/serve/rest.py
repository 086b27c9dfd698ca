"""The REST endpoints: TF Serving's and KServe v2's, and ``/metrics``, on one HTTP port.

    GET  /v1/models/NAME[/versions/V|/labels/L]              model status
    GET  /v1/models/NAME[/versions/V|/labels/L]/metadata     signature_def
    POST /v1/models/NAME[/versions/V|/labels/L]:predict      {"instances": [...]} (rows) or
                                                             {"inputs": ...} (columns); bytes as {"b64": ...}
    GET  /v2/health/live, /v2/health/ready, /v2               server liveness, readiness, metadata
    GET  /v2/models/NAME[/versions/V][/ready]                 model metadata, readiness
    POST /v2/models/NAME[/versions/V]/infer                  JSON, or JSON + binary tensor data
                                                             (Inference-Header-Content-Length)
    GET  /metrics                                            Prometheus text format

Every refusal is a 4xx with a JSON ``{"error": "..."}`` body (413 for a body over the size limit,
411 without a Content-Length); with auth keys every path but the health checks needs
``Authorization: Bearer <key>``. The server is a ``ThreadingHTTPServer`` whose request threads
are joined on shutdown, so in-flight requests finish.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from .grpc_api import BACKEND_KEY, _shape, _version_string
from .metrics import CONTENT_TYPE_LATEST
from .service import Service
from .status import RequestError, Status
from .tensors import from_json_value, from_v2_json, raw_contents, tf_dtype, to_json_value, v2_datatype

__all__ = ["RestServer"]

_V1 = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
                 r"(?P<tail>/metadata|:predict)?$")
_V2 = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<tail>/ready|/infer)?$")
_PUBLIC = ("/v2/health/live", "/v2/health/ready")
_HEADER_LENGTH = "Inference-Header-Content-Length"
_DRAIN_MAX = 64 << 20
_TF_NAMES = {1: "DT_FLOAT", 2: "DT_DOUBLE", 3: "DT_INT32", 4: "DT_UINT8", 7: "DT_STRING", 9: "DT_INT64"}


class RestServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the request threads: in-flight requests finish
    block_on_close = True

    def __init__(self, address: tuple[str, int], service: Service, max_request_bytes: int, ssl_context=None):
        self.service = service
        self.max_request_bytes = max_request_bytes
        self._conn_lock = threading.Lock()
        self._idle: set = set()  # handlers of kept-alive connections waiting for their next request
        self._closing = False
        super().__init__(address, _Handler)
        if ssl_context is not None:
            self.socket = ssl_context.wrap_socket(self.socket, server_side=True)

    def _set_idle(self, handler, idle: bool) -> bool:
        """Track a connection's state; False when the server is closing (the connection must end)."""
        with self._conn_lock:
            (self._idle.add if idle else self._idle.discard)(handler)
            return not self._closing

    def close_idle(self) -> None:
        """Hang up on kept-alive connections waiting for a request; busy ones close after answering."""
        with self._conn_lock:
            self._closing = True
            idle = list(self._idle)
        for handler in idle:
            try:
                handler.connection.shutdown(socket.SHUT_RD)
            except OSError:
                pass


def _version(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit():
        raise RequestError(Status.NOT_FOUND, f"no model version {text!r}")
    return int(text)


def _dtype(spec: dict):
    return "string" if spec["dtype"] == "string" else np.dtype(spec["dtype"])


class _Handler(BaseHTTPRequestHandler):
    server: RestServer
    protocol_version = "HTTP/1.1"
    server_version = "accelml"

    timeout = 120  # seconds a kept-alive connection may idle or stall

    def log_message(self, format, *args):  # requests are counted in the metrics, not logged
        pass

    def handle_one_request(self):
        if not self.server._set_idle(self, True):
            self.close_connection = True
            return
        try:
            super().handle_one_request()
        finally:
            self.server._set_idle(self, False)

    def parse_request(self) -> bool:
        if not self.server._set_idle(self, False):
            self.close_connection = True
        return super().parse_request()

    # -- plumbing ------------------------------------------------------------------------------
    def _send(self, code: int, body: bytes, content_type: str = "application/json", headers=()) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, obj, headers=()) -> None:
        self._send(code, json.dumps(obj).encode(), headers=headers)

    def _error(self, e: RequestError) -> None:
        self._json(e.status.http, {"error": str(e)})

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            self.close_connection = True
            raise RequestError(Status.INVALID_ARGUMENT, "a request body needs a Content-Length")
        n = int(length)
        if n > self.server.max_request_bytes:
            self._discard(n)
            raise RequestError(Status.RESOURCE_EXHAUSTED, f"request body of {n} bytes is over the limit of "
                               f"{self.server.max_request_bytes}")
        return self.rfile.read(n)

    def _discard(self, n: int) -> None:
        """Read and drop a refused body, so the client reads the answer; past 64 MiB, hang up."""
        if n > _DRAIN_MAX:
            self.close_connection = True
            return
        while n > 0:
            chunk = self.rfile.read(min(n, 1 << 20))
            if not chunk:
                break
            n -= len(chunk)

    def _handle(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        service = self.server.service
        protocol = "v2-rest" if path.startswith("/v2") else "tfs-rest"
        try:
            if path in _PUBLIC:
                ok = path.endswith("live") or service.ready
                return self._json(200 if ok else 503, {"live": True} if path.endswith("live") else {"ready": ok})
            service.authorize(self.headers.get("Authorization"))
            if path == "/metrics" and method == "GET":
                return self._send(200, service.metrics.render(), CONTENT_TYPE_LATEST)
            code, obj, headers = service.call(protocol, lambda: self._route(method, path))
            if isinstance(obj, bytes):
                return self._send(code, obj, "application/octet-stream", headers)
            return self._json(code, obj, headers)
        except RequestError as e:
            if e.status is Status.UNAUTHENTICATED:
                service.metrics.observe(service.served.name, str(service.served.version), protocol, e.status.name,
                                        0.0)
            return self._error(e)

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    # -- routes ----------------------------------------------------------------------------------
    def _route(self, method: str, path: str):
        served = self.server.service.served
        m = _V1.match(path)
        if m:
            version = served.resolve(m["name"], _version(m["version"]), m["label"])
            tail = m["tail"]
            if tail == ":predict" and method == "POST":
                return self._tfs_predict(version)
            if tail is None and method == "GET":
                return 200, self._tfs_status(version), ()
            if tail == "/metadata" and method == "GET":
                return 200, self._tfs_metadata(version), ()
        elif path == "/v2" and method == "GET":
            return 200, {"name": "accelml", "version": _version_string(), "extensions": ["binary_tensor_data"]}, ()
        else:
            m = _V2.match(path)
            if m:
                version = served.resolve(m["name"], _version(m["version"]))
                if m["tail"] == "/infer" and method == "POST":
                    return self._v2_infer(version)
                if m["tail"] == "/ready" and method == "GET":
                    ready = self.server.service.ready
                    return (200 if ready else 503), {"name": served.name, "ready": ready}, ()
                if m["tail"] is None and method == "GET":
                    return 200, self._v2_metadata(), ()
        raise RequestError(Status.NOT_FOUND, f"no endpoint {method} {path}")

    def _read_json(self, data: bytes):
        try:
            return json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RequestError(Status.INVALID_ARGUMENT, f"the body is not JSON: {e}") from None

    # -- TF Serving ------------------------------------------------------------------------------
    def _tfs_status(self, version: int) -> dict:
        state = "AVAILABLE" if self.server.service.ready else "LOADING"
        return {"model_version_status": [{"version": str(version), "state": state,
                                          "status": {"error_code": "OK", "error_message": ""}}]}

    def _tfs_metadata(self, version: int) -> dict:
        served = self.server.service.served

        def infos(specs):
            return {s["name"]: {"dtype": _TF_NAMES.get(tf_dtype(_dtype(s)), str(tf_dtype(_dtype(s)))),
                                "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in _shape(s)],
                                                 "unknown_rank": False},
                                "name": f"{s['name']}:0"} for s in specs}

        sig = {"inputs": infos(served.inputs), "outputs": infos(served.outputs),
               "method_name": "tensorflow/serving/predict"}
        return {"model_spec": {"name": served.name, "signature_name": "", "version": str(version)},
                "metadata": {"signature_def": {"signature_def": {"serving_default": sig}}}}

    def _tfs_predict(self, version: int):
        service = self.server.service
        served = service.served
        body = self._read_json(self._body())
        if not isinstance(body, dict):
            raise RequestError(Status.INVALID_ARGUMENT, "the body must be a JSON object")
        if body.get("signature_name", "serving_default") not in ("", "serving_default"):
            raise RequestError(Status.INVALID_ARGUMENT, f"unknown signature {body['signature_name']!r}")
        specs = {s["name"]: s for s in served.inputs}
        rows = "instances" in body
        if rows == ("inputs" in body):
            raise RequestError(Status.INVALID_ARGUMENT,
                               "give exactly one of \"instances\" (rows) or \"inputs\" (columns)")
        if rows:
            instances = body["instances"]
            if not isinstance(instances, list) or not instances:
                raise RequestError(Status.INVALID_ARGUMENT, "\"instances\" must be a non-empty list")
            named = all(isinstance(i, dict) and "b64" not in i for i in instances)
            columns: dict[str, list] = {}
            for inst in instances:
                items = inst.items() if named else [(self._only_input(), inst)]
                for key, value in items:
                    columns.setdefault(key, []).append(value)
            if any(len(v) != len(instances) for v in columns.values()):
                raise RequestError(Status.INVALID_ARGUMENT, "every instance needs every input")
            feeds = {}
            for key, values in columns.items():
                spec = specs[served.input_name(key)]
                feeds[key] = self._stack_rows([from_json_value(v, key, spec["dtype"] == "string") for v in values], key)
        else:
            value = body["inputs"]
            pairs = value.items() if isinstance(value, dict) and "b64" not in value else [(self._only_input(), value)]
            feeds = {}
            for key, v in pairs:
                spec = specs[served.input_name(key)]
                arr = from_json_value(v, key, spec["dtype"] == "string")
                feeds[key] = arr.reshape(1) if arr.ndim == 0 else arr
        pred = service.predict(feeds)
        headers = ((BACKEND_KEY, repr(pred.backend_seconds)),)
        if rows:
            n = len(body["instances"])
            outs = {k: to_json_value(v) for k, v in pred.outputs.items()}
            if len(outs) == 1:
                (value,) = outs.values()
                return 200, {"predictions": value if isinstance(value, list) and len(value) == n else [value]}, headers
            return 200, {"predictions": [{k: v[i] for k, v in outs.items()} for i in range(n)]}, headers
        outs = {k: to_json_value(v) for k, v in pred.outputs.items()}
        return 200, {"outputs": next(iter(outs.values())) if len(outs) == 1 else outs}, headers

    def _only_input(self) -> str:
        specs = self.server.service.served.inputs
        if len(specs) != 1:
            raise RequestError(Status.INVALID_ARGUMENT, f"the model has {len(specs)} inputs: name them")
        return specs[0]["name"]

    @staticmethod
    def _stack_rows(rows: list[np.ndarray], name: str) -> np.ndarray:
        if len({r.shape for r in rows}) != 1:
            raise RequestError(Status.INVALID_ARGUMENT, f"input {name!r}: instances of different shapes")
        if rows[0].dtype == object:
            out = np.empty((len(rows),) + rows[0].shape, dtype=object)
            for i, r in enumerate(rows):
                out[i] = r[()] if r.ndim == 0 else r
            return out
        return np.stack(rows)

    # -- KServe v2 -------------------------------------------------------------------------------
    def _v2_metadata(self) -> dict:
        served = self.server.service.served

        def tensors(specs):
            return [{"name": s["name"], "datatype": v2_datatype(_dtype(s)), "shape": _shape(s)} for s in specs]

        return {"name": served.name, "versions": [str(served.version)], "platform": "accelml",
                "inputs": tensors(served.inputs), "outputs": tensors(served.outputs)}

    def _v2_infer(self, version: int):
        service = self.server.service
        data = self._body()
        header_len = self.headers.get(_HEADER_LENGTH)
        if header_len is not None:
            if not header_len.strip().isdigit() or int(header_len) > len(data):
                raise RequestError(Status.INVALID_ARGUMENT, f"bad {_HEADER_LENGTH}: {header_len!r}")
            head, binary = data[:int(header_len)], data[int(header_len):]
        else:
            head, binary = data, b""
        body = self._read_json(head)
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
            raise RequestError(Status.INVALID_ARGUMENT, "the body must be a JSON object with a list of \"inputs\"")
        feeds, pos = {}, 0
        for t in body["inputs"]:
            params = t.get("parameters") if isinstance(t, dict) else None
            raw = None
            if isinstance(params, dict) and "binary_data_size" in params:
                size = params["binary_data_size"]
                if not isinstance(size, int) or size < 0 or pos + size > len(binary):
                    raise RequestError(Status.INVALID_ARGUMENT, "binary_data_size runs past the binary data")
                raw, pos = binary[pos:pos + size], pos + size
            arr = from_v2_json(t, raw)
            feeds[t["name"]] = arr
        wanted = body.get("outputs") or []
        if not isinstance(wanted, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                   for o in wanted):
            raise RequestError(Status.INVALID_ARGUMENT, "\"outputs\" must be a list of {\"name\": ...}")
        default_binary = bool((body.get("parameters") or {}).get("binary_data_output", False))
        as_binary = {o["name"]: bool((o.get("parameters") or {}).get("binary_data", default_binary)) for o in wanted}
        pred = service.predict(feeds, [o["name"] for o in wanted])
        outputs, blobs = [], []
        for name, value in pred.outputs.items():
            entry = {"name": name, "datatype": v2_datatype(value.dtype), "shape": list(value.shape)}
            requested = next((as_binary[o] for o in as_binary if service.served.output_names([o]) == [name]),
                             default_binary)
            if requested:
                blob = raw_contents(value)
                entry["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            else:
                flat = value.reshape(-1)
                entry["data"] = [bytes(v).decode("utf-8", "replace") for v in flat] if value.dtype == object \
                    else flat.tolist()
            outputs.append(entry)
        resp = {"model_name": service.served.name, "model_version": str(version), "outputs": outputs}
        if isinstance(body.get("id"), str):
            resp["id"] = body["id"]
        headers = [(BACKEND_KEY, repr(pred.backend_seconds))]
        if not blobs:
            return 200, resp, headers
        head = json.dumps(resp).encode()
        headers.append((_HEADER_LENGTH, str(len(head))))
        return 200, head + b"".join(blobs), headers
