"""TF Serving's gRPC API through the official `tensorflow-serving-api` stubs, over one channel."""

from __future__ import annotations

import grpc
import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from client import contract
from client.errors import (
    ClientError,
    DeadlineExceeded,
    InvalidInput,
    ModelNotFound,
    ServerError,
    ServerUnavailable,
)
from client.model_client import (
    ClientConfig,
    ModelClient,
    ModelMetadata,
    Prediction,
    TensorSpec,
    VersionStatus,
)

MAX_MESSAGE_BYTES = 2**31 - 1  # as TF Serving's own server; gRPC's 4 MB default is too small for big batches

_NUMPY_DTYPES = {
    types_pb2.DT_FLOAT: np.float32,
    types_pb2.DT_DOUBLE: np.float64,
    types_pb2.DT_INT64: np.int64,
    types_pb2.DT_INT32: np.int32,
    types_pb2.DT_UINT8: np.uint8,
}
_STATE_NAMES = get_model_status_pb2.ModelVersionStatus.State
# tensorflow.error.Code, reached through the descriptor so no extra proto module is needed
_ERROR_CODES = (
    get_model_status_pb2.ModelVersionStatus.DESCRIPTOR.fields_by_name["status"]
    .message_type.fields_by_name["error_code"]
    .enum_type
)


class GrpcModelClient(ModelClient):
    """PredictionService and ModelService stubs sharing one channel."""

    def __init__(self, config: ClientConfig) -> None:
        super().__init__(config)
        self.channel = grpc.insecure_channel(
            config.target,
            options=[
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def _spec(self, version: int | None, label: str | None, signature: bool = True) -> model_pb2.ModelSpec:
        spec = model_pb2.ModelSpec(name=self.config.model_name)
        if signature:
            spec.signature_name = self.config.signature_name
        if version is not None:
            spec.version.value = int(version)
        elif label is not None:
            spec.version_label = label
        return spec

    def _predict(self, images: np.ndarray, version: int | None, label: str | None) -> Prediction:
        request = predict_pb2.PredictRequest(model_spec=self._spec(version, label))
        request.inputs[contract.INPUT_NAME].CopyFrom(ndarray_to_proto(images))
        response = self._call(self.prediction.Predict, request)
        try:
            probabilities = proto_to_ndarray(response.outputs[contract.OUTPUT_PROBABILITIES])
            classes = proto_to_ndarray(response.outputs[contract.OUTPUT_CLASSES])
        except KeyError as err:
            raise ServerError(f"predict answer lacks output {err}") from None
        served = response.model_spec
        return Prediction(
            probabilities.astype(np.float32, copy=False),
            classes.astype(np.int64, copy=False),
            served.name or self.config.model_name,
            served.version.value if served.HasField("version") else version,
        )

    def _status(self, version: int | None) -> list[VersionStatus]:
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=self._spec(version, None, False))
        response = self._call(self.models.GetModelStatus, request)
        return [
            VersionStatus(
                version=entry.version,
                state=_STATE_NAMES.Name(entry.state),
                error_code=_error_code_name(entry.status.error_code),
                error_message=entry.status.error_message,
            )
            for entry in response.model_version_status
        ]

    def _metadata(self, version: int | None, label: str | None) -> ModelMetadata:
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=self._spec(version, label, False), metadata_field=["signature_def"]
        )
        response = self._call(self.prediction.GetModelMetadata, request)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        name = self.config.signature_name
        if name not in signatures.signature_def:
            raise ModelNotFound(f"model {self.config.model_name!r} has no signature {name!r}")
        signature = signatures.signature_def[name]
        served = response.model_spec
        return ModelMetadata(
            model_name=served.name or self.config.model_name,
            model_version=served.version.value if served.HasField("version") else version,
            signature_name=name,
            inputs={k: _tensor_spec(v) for k, v in signature.inputs.items()},
            outputs={k: _tensor_spec(v) for k, v in signature.outputs.items()},
        )

    def _call(self, method, request):
        """One unary RPC with the configured deadline; gRPC errors become typed exceptions."""
        try:
            return method(request, timeout=self.config.timeout_s)
        except grpc.RpcError as err:
            raise _grpc_error(err, self.config.target) from None


def ndarray_to_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    """A TensorProto with raw `tensor_content` bytes (no per-element encoding, unlike make_tensor_proto)."""
    dtypes = {np.dtype(v): k for k, v in _NUMPY_DTYPES.items()}
    array = np.ascontiguousarray(array)
    return tensor_pb2.TensorProto(
        dtype=dtypes[array.dtype],
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in array.shape]
        ),
        tensor_content=array.tobytes(),
    )


def proto_to_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """The numpy array inside a TensorProto; raw `tensor_content` is read in one go, without copies."""
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    if proto.tensor_content and proto.dtype in _NUMPY_DTYPES:
        return np.frombuffer(proto.tensor_content, dtype=_NUMPY_DTYPES[proto.dtype]).reshape(shape)
    import tensorflow as tf  # already loaded by the stubs; handles every other encoding

    return tf.make_ndarray(proto)


def _error_code_name(code: int) -> str:
    value = _ERROR_CODES.values_by_number.get(code)
    return value.name if value is not None else str(code)


def _tensor_spec(info) -> TensorSpec:
    dtype = types_pb2.DataType.Name(info.dtype)
    if info.tensor_shape.unknown_rank:
        return TensorSpec(dtype, None)
    return TensorSpec(dtype, tuple(d.size for d in info.tensor_shape.dim))


_BAD_REQUEST_CODES = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,  # TF Serving's answer to an unknown signature
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,  # e.g. a message larger than the server accepts
)


def _grpc_error(err: grpc.RpcError, target: str) -> ClientError:
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    message = (err.details() if hasattr(err, "details") else "") or str(code)
    name = code.name if code is not None else "UNKNOWN"
    if code == grpc.StatusCode.NOT_FOUND:
        return ModelNotFound(message, code=name)
    if code == grpc.StatusCode.INVALID_ARGUMENT and "version label" in message:
        return ModelNotFound(message, code=name)  # TF Serving answers INVALID_ARGUMENT for an unknown label
    if code in _BAD_REQUEST_CODES:
        return InvalidInput(message, code=name)
    if code == grpc.StatusCode.UNAVAILABLE:
        return ServerUnavailable(f"model server at {target} unavailable: {message}", code=name)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"no answer from {target} in time: {message}", code=name)
    return ServerError(message, code=name)
