"""Typed errors a model-server client raises, each carrying the server's own message."""

from __future__ import annotations


class ClientError(Exception):
    """Base class: something went wrong talking to the model server."""

    http_status = 500

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code  # the server's status name (gRPC code or HTTP status), when there is one

    def __str__(self) -> str:
        return self.message


class ModelNotFound(ClientError):
    """The model, version or version label is not served (NOT_FOUND / HTTP 404)."""

    http_status = 404


class InvalidInput(ClientError):
    """The server rejected the request's content (INVALID_ARGUMENT / HTTP 400)."""

    http_status = 400


class ServerUnavailable(ClientError):
    """The server cannot be reached or is not ready (UNAVAILABLE / HTTP 503); worth retrying."""

    http_status = 503


class BadTarget(ClientError):
    """The model server address (or the proxy setting) is not a valid URL: to fix, not to retry."""

    http_status = 503  # to the gateway's callers the model server is unusable, as when it is down


class DeadlineExceeded(ClientError):
    """The request did not finish within its timeout."""

    http_status = 504


class ServerError(ClientError):
    """Any other failure on the server side (INTERNAL, UNIMPLEMENTED, ...)."""

    http_status = 502
