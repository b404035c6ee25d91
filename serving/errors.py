"""Typed serving errors, each mapped once to its gRPC code and HTTP status (as TF Serving maps them)."""

from __future__ import annotations

import re

import grpc

# TF Serving's http_server.cc ToHTTPStatusCode, keyed by the canonical code.
_HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

# gRPC messages longer than this are cut, as TF Serving's grpc_status_util.cc does.
MAX_GRPC_MESSAGE_CHARS = 1024


class ServingError(Exception):
    """A request failure with a canonical status code and a message for the caller."""

    code = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    @property
    def http_status(self) -> int:
        """The HTTP status TF Serving's REST API answers for this code."""
        return _HTTP_STATUS.get(self.code, 500)

    @property
    def grpc_message(self) -> str:
        """The message, truncated as TF Serving truncates gRPC status messages."""
        if len(self.message) <= MAX_GRPC_MESSAGE_CHARS:
            return self.message
        return self.message[:MAX_GRPC_MESSAGE_CHARS] + "...TRUNCATED"


class InvalidArgument(ServingError):
    """Bad input: wrong names, dtypes, shapes, malformed JSON."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ServingError):
    """Unknown model or version."""

    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(ServingError):
    """The request cannot run against this servable (e.g. unknown signature over gRPC)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(ServingError):
    """Temporarily unable to serve: batch queue full, shutting down."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ServingError):
    """The request ran past its deadline."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unimplemented(ServingError):
    """The server does not offer this operation."""

    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(ServingError):
    """An unexpected failure inside the server."""

    code = grpc.StatusCode.INTERNAL


class ModelRuntimeError(ServingError):
    """The model's ops failed while running, with a code of their own (RESOURCE_EXHAUSTED, ...)."""

    def __init__(self, message: str, code: grpc.StatusCode):
        super().__init__(message)
        self.code = code


_GRPC_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def _useful_line(text: str) -> str:
    """The line of a TF runtime error that says what went wrong (not the node or stack-trace noise)."""
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("[[")]
    if not lines:
        return ""
    return re.sub(r"\s*\[Op:[^\]]*\]$", "", lines[-1])


def from_tf_error(error: Exception) -> ServingError:
    """Map a TensorFlow runtime error to a ServingError with its own status code, as TF Serving does."""
    import tensorflow as tf  # imported lazily: errors.py is used by code that never needs TF

    message = _useful_line(getattr(error, "message", None) or str(error)) or type(error).__name__
    if isinstance(error, ValueError | TypeError):  # Keras' own checks of what it is given
        return InvalidArgument(message)
    if isinstance(error, tf.errors.OpError):
        # TF Serving passes the runtime's status through: an out-of-memory run is RESOURCE_EXHAUSTED (429).
        return ModelRuntimeError(message, _GRPC_CODE_BY_NUMBER.get(error.error_code, grpc.StatusCode.UNKNOWN))
    return Internal(message)
