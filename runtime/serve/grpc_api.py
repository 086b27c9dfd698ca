"""The gRPC services on one port: TF Serving's PredictionService (Predict, GetModelMetadata) and
ModelService (GetModelStatus) on the real ``tensorflow_serving.apis`` protos, KServe v2's
``inference.GRPCInferenceService`` (``tritonclient.grpc`` protos: ServerLive, ServerReady,
ServerMetadata, ModelReady, ModelMetadata, ModelInfer), and ``grpc.health.v1.Health``.

Auth (when keys are configured) is an interceptor: every method except the health checks
(``grpc.health.v1.Health/*``, KServe ServerLive/ServerReady) needs ``authorization: Bearer <key>``
metadata. Each Predict / ModelInfer answer carries the time spent in ``Model.run`` as trailing
metadata ``accelml-backend-seconds``, so a client can tell the server's overhead from the engine's;
a Predict answer also carries ``accelml-handler-seconds``, the time from the decoded request to the
built response (the server's own work: checks, tensor conversion, backend).
"""

from __future__ import annotations

import time

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tritonclient.grpc import service_pb2 as v2
from tritonclient.grpc import service_pb2_grpc as v2_grpc

from .service import Service
from .status import RequestError, Status
from .tensors import from_infer_tensor, from_tensor_proto, raw_contents, tf_dtype, to_tensor_proto, v2_datatype

__all__ = ["add_services", "BACKEND_KEY", "HANDLER_KEY", "PUBLIC_METHODS"]

BACKEND_KEY = "accelml-backend-seconds"
HANDLER_KEY = "accelml-handler-seconds"
SIGNATURE = "serving_default"
PUBLIC_METHODS = ("/grpc.health.v1.Health/", "/inference.GRPCInferenceService/ServerLive",
                  "/inference.GRPCInferenceService/ServerReady")


def _abort(context, e: RequestError):
    context.abort(e.status.grpc_code, str(e))


def _shape(spec: dict) -> list[int]:
    """A tensor's shape as served: a leading batch of one is any batch (-1)."""
    if spec["dtype"] == "string":
        return [-1]
    shape = list(spec["shape"])
    return [-1] + shape[1:] if shape and shape[0] == 1 else shape


def _dtype(spec: dict):
    return "string" if spec["dtype"] == "string" else np.dtype(spec["dtype"])


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    PROTOCOL = "tfs-grpc"

    def __init__(self, service: Service):
        self.service = service

    def _resolve(self, spec) -> int:
        version = spec.version.value if spec.HasField("version") else None
        if spec.signature_name not in ("", SIGNATURE):
            raise RequestError(Status.INVALID_ARGUMENT, f"unknown signature {spec.signature_name!r} "
                               f"(signatures: {SIGNATURE})")
        return self.service.served.resolve(spec.name, version, spec.version_label or None)

    def Predict(self, request, context):
        def run():
            t0 = time.perf_counter()
            version = self._resolve(request.model_spec)
            feeds = {name: from_tensor_proto(t, name) for name, t in request.inputs.items()}
            pred = self.service.predict(feeds, list(request.output_filter))
            resp = predict_pb2.PredictResponse()
            resp.model_spec.name = self.service.served.name
            resp.model_spec.version.value = version
            resp.model_spec.signature_name = SIGNATURE
            for name, value in pred.outputs.items():
                resp.outputs[name].CopyFrom(to_tensor_proto(value))
            context.set_trailing_metadata(((BACKEND_KEY, repr(pred.backend_seconds)),
                                           (HANDLER_KEY, repr(time.perf_counter() - t0))))
            return resp

        try:
            return self.service.call(self.PROTOCOL, run)
        except RequestError as e:
            _abort(context, e)

    def GetModelMetadata(self, request, context):
        def run():
            version = self._resolve(request.model_spec)
            fields = list(request.metadata_field)
            if fields != ["signature_def"]:
                raise RequestError(Status.INVALID_ARGUMENT, f"metadata_field must be ['signature_def'], got {fields}")
            from tensorflow.core.protobuf import meta_graph_pb2

            sig = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
            for specs, target in ((self.service.served.inputs, sig.inputs), (self.service.served.outputs, sig.outputs)):
                for spec in specs:
                    info = target[spec["name"]]
                    info.name, info.dtype = f"{spec['name']}:0", tf_dtype(_dtype(spec))
                    for d in _shape(spec):
                        info.tensor_shape.dim.add(size=d)
            sigmap = get_model_metadata_pb2.SignatureDefMap()
            sigmap.signature_def[SIGNATURE].CopyFrom(sig)
            resp = get_model_metadata_pb2.GetModelMetadataResponse()
            resp.model_spec.name = self.service.served.name
            resp.model_spec.version.value = version
            resp.metadata["signature_def"].Pack(sigmap)
            return resp

        try:
            return self.service.call(self.PROTOCOL, run)
        except RequestError as e:
            _abort(context, e)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, service: Service):
        self.service = service

    def GetModelStatus(self, request, context):
        def run():
            spec = request.model_spec
            version = self.service.served.resolve(spec.name, spec.version.value if spec.HasField("version") else None,
                                                  spec.version_label or None)
            resp = get_model_status_pb2.GetModelStatusResponse()
            st = resp.model_version_status.add()
            st.version = version
            st.state = (get_model_status_pb2.ModelVersionStatus.AVAILABLE if self.service.ready
                        else get_model_status_pb2.ModelVersionStatus.LOADING)
            return resp

        try:
            return self.service.call("tfs-grpc", run)
        except RequestError as e:
            _abort(context, e)


def _version_string() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("accelml")
    except PackageNotFoundError:
        return "unknown"


def _v2_version(text: str) -> int | None:
    if not text:
        return None
    if not text.isdigit():
        raise RequestError(Status.NOT_FOUND, f"no model version {text!r}")
    return int(text)


class InferenceServicer(v2_grpc.GRPCInferenceServiceServicer):
    PROTOCOL = "v2-grpc"

    def __init__(self, service: Service):
        self.service = service

    def _call(self, context, fn):
        try:
            return self.service.call(self.PROTOCOL, fn)
        except RequestError as e:
            _abort(context, e)

    def ServerLive(self, request, context):
        return v2.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):
        return v2.ServerReadyResponse(ready=self.service.ready)

    def ServerMetadata(self, request, context):
        return v2.ServerMetadataResponse(name="accelml", version=_version_string(),
                                         extensions=["binary_tensor_data"])

    def ModelReady(self, request, context):
        def run():
            self.service.served.resolve(request.name, _v2_version(request.version))
            return v2.ModelReadyResponse(ready=self.service.ready)

        return self._call(context, run)

    def ModelMetadata(self, request, context):
        def run():
            served = self.service.served
            served.resolve(request.name, _v2_version(request.version))
            resp = v2.ModelMetadataResponse(name=served.name, versions=[str(served.version)], platform="accelml")
            for specs, target in ((served.inputs, resp.inputs), (served.outputs, resp.outputs)):
                for spec in specs:
                    target.add(name=spec["name"], datatype=v2_datatype(_dtype(spec)), shape=_shape(spec))
            return resp

        return self._call(context, run)

    def ModelInfer(self, request, context):
        def run():
            served = self.service.served
            version = served.resolve(request.model_name, _v2_version(request.model_version))
            raws = list(request.raw_input_contents)
            if raws and len(raws) != len(request.inputs):
                raise RequestError(Status.INVALID_ARGUMENT, f"{len(raws)} raw_input_contents for "
                                   f"{len(request.inputs)} inputs")
            feeds = {}
            for i, t in enumerate(request.inputs):
                feeds[t.name] = from_infer_tensor(t, raws[i] if raws else None)
            pred = self.service.predict(feeds, [o.name for o in request.outputs])
            resp = v2.ModelInferResponse(model_name=served.name, model_version=str(version), id=request.id)
            for name, value in pred.outputs.items():
                resp.outputs.add(name=name, datatype=v2_datatype(value.dtype), shape=list(value.shape))
                resp.raw_output_contents.append(raw_contents(value))
            context.set_trailing_metadata(((BACKEND_KEY, repr(pred.backend_seconds)),))
            return resp

        return self._call(context, run)


class AuthInterceptor(grpc.ServerInterceptor):
    """Refuses every method but the health checks without a valid ``authorization`` key."""

    def __init__(self, service: Service):
        self.service = service

    def intercept_service(self, continuation, handler_call_details):
        if self.service.keys is None or handler_call_details.method.startswith(PUBLIC_METHODS):
            return continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        try:
            self.service.authorize(metadata.get("authorization"))
        except RequestError as e:
            protocol = "v2-grpc" if handler_call_details.method.startswith("/inference.") else "tfs-grpc"
            self.service.metrics.observe(self.service.served.name, str(self.service.served.version), protocol,
                                         e.status.name, 0.0)

            def refuse(request, context, e=e):
                context.abort(e.status.grpc_code, str(e))

            return grpc.unary_unary_rpc_method_handler(refuse)
        return continuation(handler_call_details)


def add_services(server: grpc.Server, service: Service) -> health.HealthServicer:
    """Register every service on ``server``; returns the health servicer (NOT_SERVING until the
    caller marks it SERVING)."""
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(service), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(service), server)
    v2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(service), server)
    h = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(h, server)
    for name in ("", "tensorflow.serving.PredictionService", "inference.GRPCInferenceService"):
        h.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    return h
