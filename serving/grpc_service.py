"""TF Serving's gRPC PredictionService and ModelService on the official generated stubs."""

from __future__ import annotations

import functools
import logging
import time
from concurrent import futures

import grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from tensorflow_serving.apis import model_management_pb2 as management_pb2

from serving import inference
from serving.config_files import ConfigError, validate_model_server_config
from serving.errors import InvalidArgument, ServingError
from serving.metrics import Metrics
from serving.model_manager import ModelManager
from serving.servable import DEFAULT_SIGNATURE
from serving.tensor_codec import to_ndarray, to_tensor_proto

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 2**31 - 1  # TF Serving: builder.SetMaxMessageSize(INT32_MAX)
SERVICE_NAMES = (
    "tensorflow.serving.ModelService",
    "tensorflow.serving.PredictionService",
    "ModelService",
    "PredictionService",
)


def _rpc(api: str, counted: bool = False):
    """Turn ServingErrors into status codes, count the request, and never leak a traceback.

    As TF Serving's prediction_service_impl.cc, only Predict, Classify and Regress (`counted`) go into
    request_count and request_latency, under the API names "Predict", "Classify" and "Regress".
    """

    def wrap(method):
        @functools.wraps(method)
        def handler(self, request, context):
            started = time.perf_counter()
            status = "UNKNOWN"
            try:
                with self._metrics.in_flight():
                    response = method(self, request, context)
                status = "OK"
                return response
            except ServingError as error:
                status = error.code.name
                context.abort(error.code, error.grpc_message)
            except Exception as error:  # noqa: BLE001 -- a bug costs one INTERNAL, not the server
                status = "INTERNAL"
                log.exception("gRPC %s failed", api)
                context.abort(grpc.StatusCode.INTERNAL, f"Internal error: {type(error).__name__}: {error}")
            finally:
                if counted:
                    elapsed = time.perf_counter() - started
                    self._metrics.record_request(_model_name(request), api, "GRPC", status, elapsed)

        return handler

    return wrap


def _deadline_seconds(context) -> float | None:
    """Seconds left before the client's deadline; None without one (gRPC then reports ~forever)."""
    remaining = context.time_remaining()
    return None if remaining is None or remaining > 1e6 else max(remaining, 0.0)


def _model_name(request) -> str:
    if hasattr(request, "tasks"):
        return request.tasks[0].model_spec.name if request.tasks else ""
    spec = getattr(request, "model_spec", None)
    return spec.name if spec is not None else ""


def _resolve(manager: ModelManager, model_spec):
    if not model_spec.name:
        raise InvalidArgument("Missing ModelSpec name")
    choice = model_spec.WhichOneof("version_choice")
    version = model_spec.version.value if choice == "version" else None
    label = model_spec.version_label if choice == "version_label" else None
    return manager.resolve(model_spec.name, version, label)


def _fill_spec(target, servable, signature_name: str) -> None:
    target.name = servable.model_name
    target.version.value = servable.version
    target.signature_name = signature_name or DEFAULT_SIGNATURE


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict, Classify, Regress, MultiInference and GetModelMetadata."""

    def __init__(self, manager: ModelManager, metrics: Metrics):
        self._manager, self._metrics = manager, metrics

    @_rpc("Predict", counted=True)
    def Predict(self, request, context):  # noqa: N802 -- generated stub's naming
        servable = _resolve(self._manager, request.model_spec)
        signature = servable.signature(request.model_spec.signature_name)
        inputs = {alias: to_ndarray(proto, alias) for alias, proto in request.inputs.items()}
        outputs = servable.predict(
            signature, inputs, list(request.output_filter), timeout=_deadline_seconds(context)
        )
        response = predict_pb2.PredictResponse()
        for alias, value in outputs.items():
            response.outputs[alias].CopyFrom(to_tensor_proto(value, signature.outputs[alias].dtype))
        _fill_spec(response.model_spec, servable, signature.name)
        return response

    @_rpc("Classify", counted=True)
    def Classify(self, request, context):  # noqa: N802
        servable = _resolve(self._manager, request.model_spec)
        result = inference.classify(
            servable, request.model_spec.signature_name, inference.examples_from_input(request.input)
        )
        response = classification_pb2.ClassificationResponse(result=result)
        _fill_spec(response.model_spec, servable, request.model_spec.signature_name)
        return response

    @_rpc("Regress", counted=True)
    def Regress(self, request, context):  # noqa: N802
        servable = _resolve(self._manager, request.model_spec)
        result = inference.regress(
            servable, request.model_spec.signature_name, inference.examples_from_input(request.input)
        )
        response = regression_pb2.RegressionResponse(result=result)
        _fill_spec(response.model_spec, servable, request.model_spec.signature_name)
        return response

    @_rpc("MultiInference")
    def MultiInference(self, request, context):  # noqa: N802
        if not request.tasks:
            raise InvalidArgument("Found no tasks in the MultiInferenceRequest")
        servable = _resolve(self._manager, request.tasks[0].model_spec)
        return inference.multi_inference(servable, request)

    @_rpc("GetModelMetadata")
    def GetModelMetadata(self, request, context):  # noqa: N802
        if not request.metadata_field:
            raise InvalidArgument("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise InvalidArgument(f"Metadata field {field} is not supported")
        servable = _resolve(self._manager, request.model_spec)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for key, sig_def in servable.meta_graph.signature_def.items():
            sig_map.signature_def[key].CopyFrom(sig_def)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.model_name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(sig_map)
        return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus and HandleReloadConfigRequest."""

    def __init__(self, manager: ModelManager, metrics: Metrics):
        self._manager, self._metrics = manager, metrics

    @_rpc("GetModelStatus")
    def GetModelStatus(self, request, context):  # noqa: N802
        spec = request.model_spec
        if not spec.name:
            raise InvalidArgument("Missing ModelSpec name")
        version = spec.version.value if spec.HasField("version") else None
        return self._manager.status(spec.name, version)

    @_rpc("HandleReloadConfigRequest")
    def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        try:
            validate_model_server_config(request.config, "ReloadConfigRequest")
        except ConfigError as error:
            raise InvalidArgument(str(error)) from None
        self._manager.reload_config(request.config)
        response = management_pb2.ReloadConfigResponse()
        response.status.error_code = 0
        return response


def create_grpc_server(
    manager: ModelManager,
    metrics: Metrics,
    host: str,
    port: int | None,
    max_threads: int,
    enable_health: bool,
    socket_path: str | None = None,
) -> tuple[grpc.Server, int | None, object | None]:
    """A started gRPC server on a TCP port and/or UNIX socket: (server, bound port, health servicer)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(manager, metrics), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(manager, metrics), server)
    health = None
    if enable_health:
        from grpc_health.v1 import health as health_lib
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        health = health_lib.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        for name in ("", *SERVICE_NAMES):
            health.set(name, health_pb2.HealthCheckResponse.SERVING)
    bound = _bind(server, f"{host}:{port}") if port is not None else None
    if socket_path:
        _bind(server, f"unix:{socket_path}")
    server.start()
    return server, bound, health


def _bind(server: grpc.Server, address: str) -> int:
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as error:  # newer grpcio raises instead of returning 0
        raise OSError(f"cannot bind gRPC address {address}: {error}") from None
    if bound == 0:
        raise OSError(f"cannot bind gRPC address {address}")
    return bound
