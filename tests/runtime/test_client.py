"""PredictionClient: the seed documents' scoring calls against ``accelml serve`` give Model.run's
values; retries only on UNAVAILABLE, bounded; failures are ServeErrors naming the address."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest
from serve_util import jpeg_bytes

pytest.importorskip("tensorflow_serving", reason="serving needs the 'serve' extra")

from accelml.hdl.errors import ServeError  # noqa: E402
from accelml.runtime import load  # noqa: E402
from accelml.runtime.client import PredictionClient  # noqa: E402
from accelml.runtime.serve import ServeOptions, Server  # noqa: E402


@pytest.fixture(scope="module")
def jpeg_server(jpeg_pkg):
    with Server(ServeOptions(jpeg_pkg, grpc_port=0, rest_port=0)) as srv:
        yield srv, load(jpeg_pkg)


def test_score_file_as_in_the_seed_documents(jpeg_server, tmp_path):
    srv, model = jpeg_server
    path = tmp_path / "picture.jpg"
    path.write_bytes(jpeg_bytes(7))
    client = PredictionClient(address="127.0.0.1", port=srv.grpc_port, use_ssl=False, service_name="jpeg_model")
    results = client.score_file(path=str(path), input_name="Placeholder:0", outputs="scores:0")
    want = model.run({"jpeg": np.array([path.read_bytes()], dtype=object)})["scores"].reshape(-1)
    assert isinstance(results, list) and results == want.tolist()
    top = sorted(enumerate(results), key=lambda x: x[1], reverse=True)[:3]
    assert [c for c, _ in top] == list(np.argsort(-want)[:3])
    assert client.score_image(path.read_bytes(), input_name="jpeg") == results
    both = client.score_image(path.read_bytes(), input_name="jpeg", outputs=["scores"])
    assert set(both) == {"scores"} and np.array_equal(both["scores"], want[None])
    pixels = model.host(path.read_bytes())
    assert client.score_numpy_array(pixels, input_name="image") == results


def test_errors_name_the_address_and_are_not_retried(jpeg_server):
    srv, _ = jpeg_server
    client = PredictionClient("127.0.0.1", port=srv.grpc_port, service_name="other", retries=3, backoff=5.0)
    t0 = time.perf_counter()
    with pytest.raises(ServeError, match=rf"127\.0\.0\.1:{srv.grpc_port}: NOT_FOUND: model 'other'"):
        client.score_image(jpeg_bytes(1))
    assert time.perf_counter() - t0 < 5.0  # no backoff: NOT_FOUND is not retried
    client = PredictionClient("127.0.0.1", port=srv.grpc_port, service_name="jpeg_model")
    with pytest.raises(ServeError, match="INVALID_ARGUMENT: input 'jpeg': not a decodable jpeg image"):
        client.score_image(b"plain text", input_name="jpeg")
    with pytest.raises(ServeError, match="cannot read"):
        client.score_file("/nonexistent/picture.jpg")


def test_unavailable_is_retried_a_bounded_number_of_times():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = PredictionClient("127.0.0.1", port=port, retries=2, backoff=0.05, timeout=5)
    t0 = time.perf_counter()
    with pytest.raises(ServeError, match=rf"127\.0\.0\.1:{port}: UNAVAILABLE"):
        client.score_image(jpeg_bytes(1))
    assert 0.15 <= time.perf_counter() - t0 < 30  # backoff 0.05 + 0.1 between three attempts
