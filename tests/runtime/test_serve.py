"""``accelml serve``: the real TF Serving stubs and tritonclient (KServe v2, HTTP and gRPC) get
exactly the outputs ``Model.run`` gives; REST row / columnar / b64 forms; every bad input is a
4xx / INVALID_ARGUMENT-class answer and the server keeps serving; auth keys (re-read on change),
TLS, health, metrics, concurrent clients, graceful shutdown and the CLI's typed errors.
Servers run in-process on ports picked by the OS (127.0.0.1 only)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from serve_util import jpeg_bytes

grpc = pytest.importorskip("grpc")
pytest.importorskip("tensorflow_serving", reason="serving needs the 'serve' extra")
tritonclient_grpc = pytest.importorskip("tritonclient.grpc")
import tritonclient.http as tritonclient_http  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from accelml.runtime import load  # noqa: E402
from accelml.runtime.serve import ServeOptions, Server  # noqa: E402
from accelml.runtime.serve.tensors import from_tensor_proto, to_tensor_proto  # noqa: E402

C = grpc.StatusCode


def _x(seed: int, batch: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, 32, 32)).astype(np.float32)


def _want(model, x: np.ndarray) -> np.ndarray:
    return np.concatenate([model.run({"input": x[i:i + 1]})["logits"] for i in range(len(x))])


def _strings(*items: bytes) -> np.ndarray:
    arr = np.empty(len(items), dtype=object)
    arr[:] = list(items)
    return arr


@pytest.fixture(scope="module")
def small(small_pkg):
    with Server(ServeOptions(small_pkg, grpc_port=0, rest_port=0, max_request_bytes=256 << 10)) as srv:
        yield srv, load(small_pkg)


@pytest.fixture(scope="module")
def jpeg(jpeg_pkg):
    with Server(ServeOptions(jpeg_pkg, grpc_port=0, rest_port=0)) as srv:
        yield srv, load(jpeg_pkg)


def _stub(srv, kind=prediction_service_pb2_grpc.PredictionServiceStub, creds=None):
    target = f"127.0.0.1:{srv.grpc_port}"
    channel = grpc.secure_channel(target, creds) if creds else grpc.insecure_channel(target)
    return kind(channel)


def _predict_request(name: str, feeds: dict, version: int | None = None, label: str | None = None):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    if version is not None:
        req.model_spec.version.value = version
    if label is not None:
        req.model_spec.version_label = label
    for k, v in feeds.items():
        req.inputs[k].CopyFrom(to_tensor_proto(v))
    return req


def _url(srv, path: str, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{srv.rest_port}{path}"


# -- equality with Model.run -------------------------------------------------------------------------

def test_tf_serving_grpc_predict_equals_model_run(small):
    srv, model = small
    stub = _stub(srv)
    x = _x(1, batch=3)
    want = _want(model, x)
    for version, label in ((None, None), (1, None), (None, "stable")):
        resp, call = stub.Predict.with_call(_predict_request("small", {"input": x}, version, label), timeout=30)
        got = from_tensor_proto(resp.outputs["logits"], "logits")
        assert got.shape == (3, 10) and np.array_equal(got, want)
        assert resp.model_spec.name == "small" and resp.model_spec.version.value == 1
        backend = dict(call.trailing_metadata())["accelml-backend-seconds"]
        assert float(backend) > 0
    # TensorFlow's own reader of the response agrees
    import tensorflow as tf

    assert np.array_equal(tf.make_ndarray(resp.outputs["logits"]), want)


def test_tf_serving_metadata_and_status(small):
    srv, _ = small
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = "small"
    resp = _stub(srv).GetModelMetadata(req, timeout=30)
    sigmap = get_model_metadata_pb2.SignatureDefMap()
    resp.metadata["signature_def"].Unpack(sigmap)
    sig = sigmap.signature_def["serving_default"]
    assert [d.size for d in sig.inputs["input"].tensor_shape.dim] == [-1, 3, 32, 32]
    assert sig.inputs["input"].dtype == 1 and list(sig.outputs) == ["logits"]
    sreq = get_model_status_pb2.GetModelStatusRequest()
    sreq.model_spec.name = "small"
    status = _stub(srv, model_service_pb2_grpc.ModelServiceStub).GetModelStatus(sreq, timeout=30)
    assert [(s.version, s.state) for s in status.model_version_status] == [
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]
    r = requests.get(_url(srv, "/v1/models/small"), timeout=30)
    assert r.json()["model_version_status"][0]["state"] == "AVAILABLE"
    meta = requests.get(_url(srv, "/v1/models/small/labels/stable/metadata"), timeout=30).json()
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["inputs"]["input"]["dtype"] == "DT_FLOAT"


def test_kserve_v2_grpc_and_http_equal_model_run(small):
    srv, model = small
    x = _x(2, batch=2)
    want = _want(model, x)
    g = tritonclient_grpc.InferenceServerClient(f"127.0.0.1:{srv.grpc_port}")
    assert g.is_server_live() and g.is_server_ready() and g.is_model_ready("small")
    inp = tritonclient_grpc.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    assert np.array_equal(g.infer("small", [inp]).as_numpy("logits"), want)
    assert np.array_equal(g.infer("small", [inp], model_version="1").as_numpy("logits"), want)
    meta = g.get_model_metadata("small", as_json=True)
    assert meta["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": ["-1", "3", "32", "32"]}
    h = tritonclient_http.InferenceServerClient(f"127.0.0.1:{srv.rest_port}")
    assert h.is_server_live() and h.is_model_ready("small")
    for binary in (True, False):
        inp = tritonclient_http.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        out = [tritonclient_http.InferRequestedOutput("logits", binary_data=binary)]
        assert np.array_equal(h.infer("small", [inp], outputs=out).as_numpy("logits"), want)
    assert h.get_model_metadata("small")["outputs"][0]["shape"] == [-1, 10]


def test_rest_row_and_columnar_forms(small):
    srv, model = small
    x = _x(3, batch=2)
    want = _want(model, x)
    r = requests.post(_url(srv, "/v1/models/small:predict"), json={"instances": x.tolist()}, timeout=30)
    assert r.status_code == 200 and np.array_equal(np.asarray(r.json()["predictions"], np.float32), want)
    r = requests.post(_url(srv, "/v1/models/small/versions/1:predict"),
                      json={"instances": [{"input": row} for row in x.tolist()]}, timeout=30)
    assert np.array_equal(np.asarray(r.json()["predictions"], np.float32), want)
    r = requests.post(_url(srv, "/v1/models/small:predict"), json={"inputs": {"input": x.tolist()}}, timeout=30)
    assert np.array_equal(np.asarray(r.json()["outputs"], np.float32), want)


def test_jpeg_package_over_every_protocol(jpeg):
    srv, model = jpeg
    images = [jpeg_bytes(s) for s in (1, 2)]
    want = np.concatenate([model.run({"jpeg": _strings(b)})["scores"] for b in images])
    resp = _stub(srv).Predict(_predict_request("jpeg_model", {"jpeg": _strings(*images)}), timeout=30)
    assert np.array_equal(from_tensor_proto(resp.outputs["scores"], "scores"), want)
    # the seed clients name the graph's tensors ("Placeholder:0"): one input, so it is that one
    resp = _stub(srv).Predict(_predict_request("jpeg_model", {"Placeholder:0": _strings(images[0])}), timeout=30)
    assert np.array_equal(from_tensor_proto(resp.outputs["scores"], "scores"), want[:1])
    b64 = [{"b64": base64.b64encode(b).decode()} for b in images]
    r = requests.post(_url(srv, "/v1/models/jpeg_model:predict"), json={"instances": b64}, timeout=30)
    assert r.status_code == 200 and np.array_equal(np.asarray(r.json()["predictions"], np.float32), want)
    r = requests.post(_url(srv, "/v1/models/jpeg_model:predict"), json={"inputs": {"jpeg": b64[0]}}, timeout=30)
    assert np.array_equal(np.asarray(r.json()["outputs"], np.float32), want[:1])
    for client, port in ((tritonclient_grpc, srv.grpc_port), (tritonclient_http, srv.rest_port)):
        c = client.InferenceServerClient(f"127.0.0.1:{port}")
        inp = client.InferInput("jpeg", [2], "BYTES")
        inp.set_data_from_numpy(_strings(*images))
        assert np.array_equal(c.infer("jpeg_model", [inp]).as_numpy("scores"), want)


def test_accelml_run_and_the_server_agree(small, jpeg, tmp_path):
    from accelml.runtime import cli

    srv, _ = small
    x = _x(11)
    np.save(tmp_path / "x.npy", x)
    assert cli.main(["run", str(srv.options.package), "--input", f"input={tmp_path / 'x.npy'}",
                     "-o", str(tmp_path / "small.npz")]) == 0
    resp = _stub(srv).Predict(_predict_request("small", {"input": x}), timeout=30)
    want = np.load(tmp_path / "small.npz")["logits"]
    assert np.array_equal(from_tensor_proto(resp.outputs["logits"], "logits"), want)
    srv, _ = jpeg
    (tmp_path / "p.jpg").write_bytes(jpeg_bytes(12))
    assert cli.main(["run", str(srv.options.package), "--input", f"jpeg={tmp_path / 'p.jpg'}",
                     "-o", str(tmp_path / "jpeg.npz")]) == 0
    resp = _stub(srv).Predict(_predict_request("jpeg_model", {"jpeg": _strings(jpeg_bytes(12))}), timeout=30)
    want = np.load(tmp_path / "jpeg.npz")["scores"]
    assert np.array_equal(from_tensor_proto(resp.outputs["scores"], "scores"), want)


# -- bad input: a clear 4xx-class answer, and the server keeps serving --------------------------------

def _grpc_error(fn) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value


GRPC_BAD = [
    ("unknown model", "nope", {"input": _x(0)}, None, None, C.NOT_FOUND, "model 'nope' is not served"),
    ("unknown version", "small", {"input": _x(0)}, 7, None, C.NOT_FOUND, "no version 7"),
    ("unknown label", "small", {"input": _x(0)}, None, "canary", C.NOT_FOUND, "no version label 'canary'"),
    ("wrong shape", "small", {"input": np.zeros((1, 3, 16, 16), np.float32)}, None, None, C.INVALID_ARGUMENT,
     "expected shape"),
    ("wrong dtype", "small", {"input": _strings(b"x")}, None, None, C.INVALID_ARGUMENT, "expected float32, got string"),
    ("unknown input", "small", {"pixels": _x(0)}, None, None, C.INVALID_ARGUMENT, "unknown input 'pixels'"),
    ("oversize", "small", {"input": np.zeros((30, 3, 32, 32), np.float32)}, None, None, C.RESOURCE_EXHAUSTED, ""),
]


@pytest.mark.parametrize("what, name, feeds, version, label, code, message", GRPC_BAD, ids=[b[0] for b in GRPC_BAD])
def test_bad_grpc_requests(small, what, name, feeds, version, label, code, message):
    srv, model = small
    stub = _stub(srv)
    err = _grpc_error(lambda: stub.Predict(_predict_request(name, feeds, version, label), timeout=30))
    assert err.code() == code and message in err.details()
    x = _x(9)
    ok = stub.Predict(_predict_request("small", {"input": x}), timeout=30)  # still serving
    assert np.array_equal(from_tensor_proto(ok.outputs["logits"], "logits"), _want(model, x))


def test_bad_images_and_rest_errors(jpeg, small):
    srv, _ = jpeg
    err = _grpc_error(lambda: _stub(srv).Predict(_predict_request("jpeg_model", {"jpeg": _strings(b"GIF89a...")}),
                                                 timeout=30))
    assert err.code() == C.INVALID_ARGUMENT and "input 'jpeg': not a decodable jpeg image" in err.details()
    url = _url(srv, "/v1/models/jpeg_model:predict")
    cases = [
        (url, {"instances": [{"b64": base64.b64encode(b"\xff\xd8 broken").decode()}]}, 400, "not a decodable"),
        (url, {"instances": [{"b64": "***"}]}, 400, "bad base64"),
        (url, {"instances": [1.5]}, 400, "expected a string or {\"b64\""),
        (url, {"instances": [], "inputs": {}}, 400, "exactly one of"),
        (_url(srv, "/v1/models/other:predict"), {"instances": [1]}, 404, "model 'other' is not served"),
        (_url(srv, "/v1/models/jpeg_model/labels/beta:predict"), {"instances": [1]}, 404, "no version label 'beta'"),
        (_url(srv, "/v2/models/jpeg_model/versions/3/infer"), {"inputs": []}, 404, "no version 3"),
        (_url(srv, "/v2/models/jpeg_model/infer"), {"inputs": [{"name": "jpeg", "shape": [1], "datatype": "FP8",
                                                                "data": [1]}]}, 400, "unsupported datatype"),
    ]
    for target, body, code, message in cases:
        r = requests.post(target, json=body, timeout=30)
        assert r.status_code == code and message in r.json()["error"], (target, body, r.text)
    r = requests.post(url, data=b"{not json", timeout=30)
    assert r.status_code == 400 and "not JSON" in r.json()["error"]
    big = _url(small[0], "/v1/models/small:predict")
    r = requests.post(big, data=b"[" + b"0," * (200 << 10) + b"0]", timeout=30)
    assert r.status_code == 413 and "over the limit" in r.json()["error"]
    assert requests.get(_url(srv, "/v1/models/jpeg_model"), timeout=30).status_code == 200  # still serving


def test_concurrent_clients_get_exact_answers(small):
    srv, model = small
    xs = [_x(100 + i) for i in range(24)]
    wants = [_want(model, x) for x in xs]
    stub = _stub(srv)

    def one(i):
        resp = stub.Predict(_predict_request("small", {"input": xs[i]}), timeout=60)
        return np.array_equal(from_tensor_proto(resp.outputs["logits"], "logits"), wants[i])

    with ThreadPoolExecutor(max_workers=12) as pool:
        assert all(pool.map(one, list(range(24)) * 2))


def test_health_and_metrics(small):
    srv, _ = small
    health = _stub(srv, health_pb2_grpc.HealthStub)
    assert health.Check(health_pb2.HealthCheckRequest(service=""), timeout=30).status == \
        health_pb2.HealthCheckResponse.SERVING
    assert requests.get(_url(srv, "/v2/health/ready"), timeout=30).json() == {"ready": True}
    text = requests.get(_url(srv, "/metrics"), timeout=30).text
    assert 'accelml_requests_total{model="small",protocol="tfs-grpc",status="OK",version="1"}' in text
    assert 'status="NOT_FOUND"' in text and "accelml_backend_seconds_count" in text


# -- auth and TLS ------------------------------------------------------------------------------------

def test_auth_keys_primary_secondary_and_regenerated(small_pkg, tmp_path):
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"primary": "k1", "secondary": "k2"}))
    with Server(ServeOptions(small_pkg, grpc_port=0, rest_port=0, auth_keys=keys)) as srv:
        stub = _stub(srv)
        req = _predict_request("small", {"input": _x(0)})
        for metadata, code in (((), C.UNAUTHENTICATED), ((("authorization", "Bearer nope"),), C.UNAUTHENTICATED),
                               ((("authorization", "k1"),), C.UNAUTHENTICATED)):
            assert _grpc_error(lambda m=metadata: stub.Predict(req, metadata=m, timeout=30)).code() == code
        for key in ("k1", "k2"):
            assert stub.Predict(req, metadata=(("authorization", f"Bearer {key}"),), timeout=30).outputs["logits"]
        url = _url(srv, "/v1/models/small:predict")
        body = {"instances": _x(0).tolist()}
        assert requests.post(url, json=body, timeout=30).status_code == 401
        assert requests.post(url, json=body, headers={"Authorization": "Bearer k2"}, timeout=30).status_code == 200
        # health needs no key
        assert requests.get(_url(srv, "/v2/health/live"), timeout=30).status_code == 200
        assert _stub(srv, health_pb2_grpc.HealthStub).Check(health_pb2.HealthCheckRequest(), timeout=30).status == \
            health_pb2.HealthCheckResponse.SERVING
        # a regenerated key takes effect without a restart
        keys.write_text(json.dumps({"primary": "k3-new", "secondary": "k2"}))
        os.utime(keys, ns=(time.time_ns(), time.time_ns() + 10**9))
        assert _grpc_error(lambda: stub.Predict(req, metadata=(("authorization", "Bearer k1"),),
                                                timeout=30)).code() == C.UNAUTHENTICATED
        assert stub.Predict(req, metadata=(("authorization", "Bearer k3-new"),), timeout=30).outputs["logits"]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="making a test certificate needs openssl")
def test_tls_on_both_ports(small, small_pkg, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    _, model = small
    x = _x(4)
    with Server(ServeOptions(small_pkg, grpc_port=0, rest_port=0, tls_cert=cert, tls_key=key)) as srv:
        creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        resp = _stub(srv, creds=creds).Predict(_predict_request("small", {"input": x}), timeout=30)
        assert np.array_equal(from_tensor_proto(resp.outputs["logits"], "logits"), _want(model, x))
        r = requests.post(_url(srv, "/v1/models/small:predict", "https"), json={"instances": x.tolist()},
                          verify=str(cert), timeout=30)
        assert np.array_equal(np.asarray(r.json()["predictions"], np.float32), _want(model, x))


# -- the CLI: ready line, graceful shutdown, typed errors -----------------------------------------------

def _accelml(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "accelml.runtime.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _ready(proc, deadline: float = 120.0) -> tuple[int, int]:
    line = []
    t = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    t.start()
    t.join(deadline)
    assert line and "ready on" in line[0], (line, proc.poll())
    words = line[0].split()
    grpc_port = int(words[words.index("grpc") + 1].rsplit(":", 1)[1])
    rest_port = int(words[words.index("rest") + 1].rsplit(":", 1)[1])
    return grpc_port, rest_port


def test_cli_serves_and_exits_0_on_sigterm(small_pkg):
    proc = _accelml("serve", str(small_pkg), "--grpc-port", "0", "--rest-port", "0", "--name", "m")
    try:
        grpc_port, rest_port = _ready(proc)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{grpc_port}"))
        x = _x(5, batch=2)
        resp = stub.Predict(_predict_request("m", {"input": x}), timeout=60)
        assert np.array_equal(from_tensor_proto(resp.outputs["logits"], "logits"), _want(load(small_pkg), x))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        with pytest.raises(requests.ConnectionError):  # the port is released
            requests.get(f"http://127.0.0.1:{rest_port}/v2/health/live", timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_stop_finishes_in_flight_requests_then_refuses(small_pkg):
    srv = Server(ServeOptions(small_pkg, grpc_port=0, rest_port=0)).start()
    model = srv.service.served.model
    run, started = model.run, threading.Semaphore(0)

    def slow_run(feeds):  # hold each request in the backend long enough to stop the server meanwhile
        started.release()
        time.sleep(1.0)
        return run(feeds)

    model.run = slow_run
    x = _x(6)
    want = _want(load(small_pkg), x)
    future = _stub(srv).Predict.future(_predict_request("small", {"input": x}), timeout=60)
    with ThreadPoolExecutor(1) as pool:
        rest = pool.submit(requests.post, _url(srv, "/v1/models/small:predict"), json={"instances": x.tolist()},
                           timeout=60)
        assert started.acquire(timeout=30) and started.acquire(timeout=30)  # both requests are in Model.run
        stopper = threading.Thread(target=srv.stop)
        stopper.start()
        assert np.array_equal(from_tensor_proto(future.result().outputs["logits"], "logits"), want)
        r = rest.result()
        assert r.status_code == 200 and np.array_equal(np.asarray(r.json()["predictions"], np.float32), want)
    stopper.join(60)
    assert not stopper.is_alive()
    with pytest.raises(requests.ConnectionError):
        requests.get(_url(srv, "/v2/health/live"), timeout=5)
    err = _grpc_error(lambda: _stub(srv).Predict(_predict_request("small", {"input": x}), timeout=5))
    assert err.code() == C.UNAVAILABLE


def test_cli_errors_are_typed_one_liners(small, tmp_path):
    srv, _ = small
    missing = tmp_path / "nothing.accel"
    proc = _accelml("serve", str(missing))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 12 and err.count("\n") == 1 and "not an accelml package" in err
    proc = _accelml("serve", str(srv.options.package), "--grpc-port", str(srv.grpc_port), "--rest-port", "0")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 15, err
    assert err.strip().count("\n") == 0 and f"127.0.0.1:{srv.grpc_port}" in err and "in use" in err


def test_server_options_are_checked():
    from accelml.hdl.errors import ServeError

    with pytest.raises(ServeError, match="TLS needs both"):
        ServeOptions(Path("x"), tls_cert=Path("c"))
    with pytest.raises(ServeError, match="at least 1024"):
        ServeOptions(Path("x"), max_request_bytes=10)
    with pytest.raises(ServeError, match="--rest-port 70000"):
        ServeOptions(Path("x"), rest_port=70000)
