"""``PredictionClient``: score images and arrays on a served model over TF Serving's Predict gRPC API.

    client = PredictionClient(address="127.0.0.1", port=8500, use_ssl=False, service_name="resnet50",
                              access_token=key)
    results = client.score_file(path="snowleopard.jpg", input_name="images", outputs="output_alias")
    top5 = sorted(enumerate(results), key=lambda x: x[1], reverse=True)[:5]

``score_file`` / ``score_image`` send encoded image bytes (a string tensor of one element);
``score_numpy_array`` sends an array as is. With ``outputs`` a single name (or None and the model
has one output), the result is that output's values as a flat list; with a list of names, a dict
name -> numpy array. ``model_name`` (default ``service_name``; empty: the server's one model)
names the model in the request.

A request is retried, with exponential backoff, only when the server is UNAVAILABLE (starting,
restarting, unreachable), at most ``retries`` times; any other failure raises ``ServeError``
naming the address and the server's message at once. ``access_token`` is sent as
``authorization: Bearer <token>``; ``service_name`` also as the ``x-ms-aml-grpc-service-route``
header a routing front end reads.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import numpy as np

from accelml.hdl.errors import ServeError

__all__ = ["PredictionClient"]


class PredictionClient:
    def __init__(self, address: str, port: int = 80, use_ssl: bool = False, service_name: str | None = None,
                 access_token: str | None = None, *, model_name: str | None = None,
                 root_certificates: bytes | None = None, timeout: float = 30.0, retries: int = 5,
                 backoff: float = 0.2, channel_shutdown_timeout: timedelta | None = None):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        address = address.split("://", 1)[-1].strip("/")
        self.target = f"{address}:{port}" if ":" not in address else address
        self.model_name = model_name or service_name or ""
        self.timeout, self.retries, self.backoff = float(timeout), int(retries), float(backoff)
        if self.retries < 0 or self.backoff < 0 or self.timeout <= 0:
            raise ServeError("PredictionClient: retries and backoff must be >= 0, timeout > 0")
        options = [("grpc.max_receive_message_length", 1 << 30), ("grpc.max_send_message_length", 1 << 30)]
        if use_ssl:
            creds = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(self.target, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(self.target, options=options)
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        metadata = []
        if access_token:
            metadata.append(("authorization", f"Bearer {access_token}"))
        if service_name:
            metadata.append(("x-ms-aml-grpc-service-route", f"/api/v1/service/{service_name}"))
        self._metadata = tuple(metadata)

    # -- scoring ---------------------------------------------------------------------------------
    def score_file(self, path: str | Path, input_name: str = "images", outputs=None, timeout: float | None = None):
        """Score an image file (its encoded bytes, as the model's string input)."""
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise ServeError(f"cannot read {path}: {e.strerror or e}") from None
        return self.score_image(data, input_name=input_name, outputs=outputs, timeout=timeout)

    def score_image(self, data: bytes, input_name: str = "images", outputs=None, timeout: float | None = None):
        """Score encoded image bytes (JPEG, PNG, ...)."""
        arr = np.empty(1, dtype=object)
        arr[0] = bytes(data)
        return self._predict({input_name: arr}, outputs, timeout)

    def score_numpy_array(self, npdata: np.ndarray, input_name: str = "images", outputs=None,
                          timeout: float | None = None):
        """Score an array (float32 pixels, or a batch of them along axis 0)."""
        return self._predict({input_name: np.asarray(npdata)}, outputs, timeout)

    def score_numpy_arrays(self, feeds: dict[str, np.ndarray], outputs=None, timeout: float | None = None):
        """Score several named inputs at once."""
        return self._predict({k: np.asarray(v) for k, v in feeds.items()}, outputs, timeout)

    # -- plumbing --------------------------------------------------------------------------------
    def _predict(self, feeds: dict[str, np.ndarray], outputs, timeout: float | None):
        import grpc
        from tensorflow_serving.apis import predict_pb2

        from .serve.tensors import from_tensor_proto, to_tensor_proto

        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model_name
        for name, value in feeds.items():
            request.inputs[name].CopyFrom(to_tensor_proto(value))
        names = [outputs] if isinstance(outputs, str) else list(outputs or [])
        request.output_filter.extend(names)
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                response = self._stub.Predict(request, timeout=timeout or self.timeout, metadata=self._metadata)
                break
            except grpc.RpcError as e:
                code = e.code() if hasattr(e, "code") else None
                if code == grpc.StatusCode.UNAVAILABLE and attempt < self.retries:
                    time.sleep(delay)
                    delay *= 2
                    continue
                detail = e.details() if hasattr(e, "details") else str(e)
                name = code.name if code is not None else "error"
                raise ServeError(f"{self.target}: {name}: {detail}") from None
        results = {k: from_tensor_proto(v, k) for k, v in response.outputs.items()}
        if isinstance(outputs, str) or (outputs is None and len(results) == 1):
            (value,) = results.values() if outputs is None else (self._pick(results, outputs),)
            return value.reshape(-1).tolist()
        return results

    @staticmethod
    def _pick(results: dict, name: str):
        if name in results:
            return results[name]
        if len(results) == 1:  # the server resolved a TensorFlow tensor name to its one output
            return next(iter(results.values()))
        raise ServeError(f"the response has no output {name!r} (outputs: {', '.join(results)})")

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> PredictionClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
