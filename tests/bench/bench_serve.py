"""Serving benchmark: concurrent gRPC clients against ``accelml serve`` on loopback.

A small CNN (conv-relu-pool-conv-relu-GAP-dense, 1x3x32x32, ``tiny`` preset, about 1 ms per run
on the functional simulator) is compiled and served by ``accelml serve`` in a subprocess. Client
threads (each with its own channel) send TF Serving Predict requests for a fixed time, cycling
through 16 inputs whose answers ``Model.run`` computed beforehand, and report:

- errors and wrong answers (any bit different from ``Model.run``);
- throughput, client latency p50 / p99;
- the overhead over the backend: client latency minus the time the server spent in ``Model.run``
  for that request (trailing metadata ``accelml-backend-seconds``), p50 / p99: transport, gRPC
  queueing and the client's own work; and the handler's overhead, the server's own work around
  the backend (``accelml-handler-seconds`` minus backend), p50 / p99; with the mean from
  ``/metrics``.

Phases side by side in one run: 1 client (overhead without queueing) and N clients (default 32).
The goal is p99 overhead <= 1 ms over gRPC on loopback.

    python tests/bench/bench_serve.py [--clients 32] [--seconds 60] [--single-seconds 10]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))

from serve_util import small_cnn_onnx  # noqa: E402

from accelml.compiler import compile_model  # noqa: E402
from accelml.runtime import load, save_package  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("GRPC_VERBOSITY", "NONE")


def start_server(pkg: Path, workers: int) -> tuple[subprocess.Popen, int, int]:
    proc = subprocess.Popen([sys.executable, "-m", "accelml.runtime.cli", "serve", str(pkg), "--grpc-port", "0",
                             "--rest-port", "0", "--workers", str(workers)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.search(r"grpc 127\.0\.0\.1:(\d+) rest 127\.0\.0\.1:(\d+)", line)
    if not m:
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r} {proc.stderr.read()}")
    return proc, int(m[1]), int(m[2])


def server_overhead(rest_port: int) -> tuple[float, float, float]:
    """(requests, mean request seconds in the handler, mean backend seconds) from /metrics."""
    import requests

    text = requests.get(f"http://127.0.0.1:{rest_port}/metrics", timeout=30).text

    def total(metric: str, extra: str = "") -> float:
        return sum(float(v) for v in re.findall(rf'^{metric}\{{[^}}]*{extra}[^}}]*\}} (\S+)$', text, re.M))

    n = total("accelml_request_seconds_count", 'status="OK"')
    return n, total("accelml_request_seconds_sum", 'status="OK"') / n, total("accelml_backend_seconds_sum") / n


def run_phase(port: int, clients: int, seconds: float, inputs, answers) -> dict:
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from accelml.runtime.serve.tensors import from_tensor_proto, to_tensor_proto

    requests_ = []
    for x in inputs:
        r = predict_pb2.PredictRequest()
        r.model_spec.name = "small"
        r.inputs["input"].CopyFrom(to_tensor_proto(x))
        requests_.append(r)
    results: list[list] = [[] for _ in range(clients)]
    errors, wrong = [0] * clients, [0] * clients
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(k: int) -> None:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        stub.Predict(requests_[0], timeout=60)  # connect and warm up outside the measurement
        start.wait()
        i = k
        while time.perf_counter() < stop_at[0]:
            j = i % len(requests_)
            t0 = time.perf_counter()
            try:
                resp, call = stub.Predict.with_call(requests_[j], timeout=60)
            except grpc.RpcError:
                errors[k] += 1
                continue
            latency = time.perf_counter() - t0
            trailer = dict(call.trailing_metadata())
            backend = float(trailer["accelml-backend-seconds"])
            handler = float(trailer["accelml-handler-seconds"])
            if not np.array_equal(from_tensor_proto(resp.outputs["logits"], "logits"), answers[j]):
                wrong[k] += 1
            results[k].append((latency, backend, handler))
            i += 1
        channel.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + seconds + 5.0
    start.wait()
    t0 = time.perf_counter()
    stop_at[0] = t0 + seconds
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.array([r[0] for rs in results for r in rs])
    back = np.array([r[1] for rs in results for r in rs])
    over = lat - back
    inside = np.array([r[2] for rs in results for r in rs]) - back
    return {"clients": clients, "requests": len(lat), "errors": sum(errors), "wrong": sum(wrong),
            "throughput": len(lat) / wall, "p50": np.percentile(lat, 50), "p99": np.percentile(lat, 99),
            "backend_p50": np.percentile(back, 50), "over_p50": np.percentile(over, 50),
            "over_p99": np.percentile(over, 99), "inside_p50": np.percentile(inside, 50),
            "inside_p99": np.percentile(inside, 99)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--single-seconds", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=16, help="server request threads")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pkg = save_package(compile_model(small_cnn_onnx(), config="tiny", name="small"), Path(tmp) / "small.accel")
        model = load(pkg)
        rng = np.random.default_rng(0)
        inputs = [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(16)]
        answers = [model.run({"input": x})["logits"] for x in inputs]
        t0 = time.perf_counter()
        for x in inputs:
            model.run({"input": x})
        direct = (time.perf_counter() - t0) / len(inputs)
        proc, grpc_port, rest_port = start_server(pkg, args.workers)
        try:
            phases = [run_phase(grpc_port, 1, args.single_seconds, inputs, answers),
                      run_phase(grpc_port, args.clients, args.seconds, inputs, answers)]
            n, handler, backend = server_overhead(rest_port)
        finally:
            proc.terminate()
            code = proc.wait(120)
    print(f"serving benchmark: small CNN (1x3x32x32, tiny preset), {os.cpu_count()} CPUs, gRPC on 127.0.0.1; "
          f"Model.run in-process {direct * 1e3:.3f} ms")
    print(f"{'clients':>7} {'requests':>9} {'errors':>6} {'wrong':>5} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'backend p50':>11} {'overhead p50':>12} {'overhead p99':>12} {'handler p50':>11} {'handler p99':>11}")
    for p in phases:
        print(f"{p['clients']:>7} {p['requests']:>9} {p['errors']:>6} {p['wrong']:>5} {p['throughput']:>8.1f} "
              f"{p['p50'] * 1e3:>7.3f} {p['p99'] * 1e3:>7.3f} {p['backend_p50'] * 1e3:>11.3f} "
              f"{p['over_p50'] * 1e3:>12.3f} {p['over_p99'] * 1e3:>12.3f} {p['inside_p50'] * 1e3:>11.3f} "
              f"{p['inside_p99'] * 1e3:>11.3f}")
    print("(ms; overhead = client latency - backend time: transport, gRPC queueing, client; handler = the "
          "server's own work around the backend, from the decoded request to the built response)")
    print(f"server-internal mean over {n:.0f} requests: handler {handler * 1e3:.3f} ms, "
          f"backend {backend * 1e3:.3f} ms, overhead {(handler - backend) * 1e3:.3f} ms")
    last = phases[-1]
    print(f"goal p99 overhead <= 1 ms at {args.clients} clients: client-observed {last['over_p99'] * 1e3:.3f} ms "
          f"({'met' if last['over_p99'] <= 1e-3 else 'NOT met'}), in the handler {last['inside_p99'] * 1e3:.3f} ms "
          f"({'met' if last['inside_p99'] <= 1e-3 else 'NOT met'}); server exit code after SIGTERM: {code}")


if __name__ == "__main__":
    main()
