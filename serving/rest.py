"""TF Serving's REST API (port 8501) on a keep-alive HTTP/1.1 server, plus health, model list and OpenAPI."""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
import zlib
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2

from serving import inference, json_tensors
from serving.errors import DeadlineExceeded, InvalidArgument, ServingError
from serving.metrics import Metrics
from serving.model_manager import ModelManager
from serving.openapi import openapi_document
from serving.settings import RestOptions

log = logging.getLogger(__name__)

# The exact grammar of TF Serving's http_rest_api_util.cc.
_DISPATCH = re.compile(r"(?i)/v1/.*")
_POST = re.compile(
    r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)"
)
_GET = re.compile(
    r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:\/(metadata))?"
)
_CORS_ORIGIN = re.compile(r"https?://.*")
_CHUNK_SIZE = re.compile(rb"[0-9a-fA-F]+")  # RFC 9112's 1*HEXDIG; int(x, 16) would also take -1, 0x1, 1_0
_CORS_HEADERS = (
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "POST, GET"),
    ("Access-Control-Allow-Headers", "Content-Type"),
)
_JSON = "application/json"
_DRAIN_LIMIT = 16 * 1024 * 1024  # oversized bodies up to this much over the limit are read and dropped


@dataclass(frozen=True)
class Response:
    """One HTTP answer."""

    status: int
    body: bytes
    content_type: str = _JSON


def error_response(status: int, message: str) -> Response:
    """TF Serving's error body: {"error": "<message>"}."""
    return Response(status, json.dumps({"error": message}, ensure_ascii=False).encode("utf-8"))


class RestApi:
    """Maps (method, path, body) to a Response; knows nothing about sockets."""

    def __init__(self, manager: ModelManager, metrics: Metrics, options: RestOptions):
        self._manager, self._metrics, self._options = manager, metrics, options
        self._slots = threading.BoundedSemaphore(max(1, options.num_threads))
        # --rest_api_timeout_in_ms=0: no timeout, as TF Serving (RunOptions.timeout_in_ms 0 = none).
        self._timeout_s = options.timeout_ms / 1000 if options.timeout_ms > 0 else None

    def handle(self, method: str, path: str, body: bytes) -> Response:
        """Route one request; every failure becomes a JSON error with TF Serving's status code."""
        path = path.split("?", 1)[0]
        if method == "GET" and self._options.metrics_path and path == self._options.metrics_path:
            return Response(200, self._metrics.render().encode(), "text/plain; version=0.0.4")
        if method == "GET" and path.lower() == "/v2/health/live":
            return Response(200, b'{"live":true}')
        if method == "GET" and path.lower() == "/v2/health/ready":
            ready = self._manager.is_ready()
            return Response(200 if ready else 503, json.dumps({"ready": ready}).encode())
        if method == "GET" and path.lower() == "/v1/openapi.json":
            return Response(200, json.dumps(openapi_document(), indent=1).encode())
        if not _DISPATCH.fullmatch(path):
            return error_response(404, f"Not found: {path} (the API lives under /v1/)")
        if method == "POST" and (match := _POST.fullmatch(path)):
            return self._timed(match.group(4).lower(), match, body)
        if method == "GET" and (match := _GET.fullmatch(path)):
            return self._timed("metadata" if match.group(4) else "status", match, body)
        return error_response(400, f"Malformed request: {method} {path}")

    def _timed(self, api: str, match: re.Match, body: bytes) -> Response:
        started = time.perf_counter()
        name = unquote(match.group(1)) if match.group(1) else ""
        status = "UNKNOWN"
        try:
            if not self._slots.acquire(timeout=self._timeout_s):
                raise DeadlineExceeded(
                    f"Request timed out after {self._options.timeout_ms} ms waiting for a REST worker"
                )
            try:
                with self._metrics.in_flight():
                    response = self._dispatch(api, name, match, body, started)
            finally:
                self._slots.release()
            status = "OK"
            return response
        except ServingError as error:
            status = error.code.name
            return error_response(error.http_status, error.message)
        finally:
            if name:
                elapsed = time.perf_counter() - started
                self._metrics.record_request(name, _API_NAMES[api], "REST", status, elapsed)

    def _dispatch(self, api: str, name: str, match: re.Match, body: bytes, started: float) -> Response:
        version = _version(match.group(2))
        label = unquote(match.group(3)) if match.group(3) else None
        if api == "status":
            if not name:
                return self._list_models()
            status = self._manager.status(name, version)
            return Response(200, _proto_json(status))
        servable = self._manager.resolve(name, version, label)
        if api == "metadata":
            return Response(200, self._metadata(servable))
        doc = json_tensors.parse_json_body(body)
        signature_name = json_tensors.signature_name_of(doc)
        if api == "predict":
            signature = servable.signature(signature_name, rest=True)
            inputs, row = json_tensors.predict_inputs(
                doc, signature, may_hold_bool=json_tensors.may_hold_bool(body)
            )
            remaining = None
            if self._timeout_s is not None:
                remaining = max(self._timeout_s - (time.perf_counter() - started), 0.001)
            outputs = servable.predict(signature, inputs, timeout=remaining)
            result = json_tensors.predict_response(outputs, row)
        else:
            examples = json_tensors.examples_from_json(doc)
            if api == "classify":
                classified = inference.classify(servable, signature_name, examples)
                result = {
                    "results": [
                        [[c.label, c.score] for c in row.classes] for row in classified.classifications
                    ]
                }
            else:
                regressed = inference.regress(servable, signature_name, examples)
                result = {"results": [r.value for r in regressed.regressions]}
        if self._timeout_s is not None and time.perf_counter() - started > self._timeout_s:
            raise DeadlineExceeded(
                f"Request took longer than --rest_api_timeout_in_ms={self._options.timeout_ms}"
            )
        return Response(200, json_tensors.dumps(result))

    def _metadata(self, servable) -> bytes:
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for key, sig_def in servable.meta_graph.signature_def.items():
            sig_map.signature_def[key].CopyFrom(sig_def)
        doc = {
            "model_spec": {
                "name": servable.model_name,
                "signature_name": "",
                "version": str(servable.version),
            },
            "metadata": {
                "signature_def": json_format.MessageToDict(
                    sig_map, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
                )
            },
        }
        return json.dumps(doc, indent=1).encode()

    def _list_models(self) -> Response:
        versions = self._manager.available_versions()
        doc = {
            "models": sorted(versions),
            "versions": {name: [str(v) for v in found] for name, found in sorted(versions.items())},
            "ready": {name: bool(found) for name, found in sorted(versions.items())},
        }
        return Response(200, json.dumps(doc).encode())


_API_NAMES = {
    "predict": "predict",
    "classify": "classify",
    "regress": "regress",
    "metadata": "GetModelMetadata",
    "status": "GetModelStatus",
}


def _version(text: str | None) -> int | None:
    if text is None:
        return None
    # Leading zeros are allowed; strip them before int(), which refuses over 4300 digits (an int64 has 19).
    digits = text.lstrip("0") or "0"
    if len(digits) > 19 or int(digits) >= 2**63:
        raise InvalidArgument(f"Failed to convert version: {text} to numeric.")
    return int(digits)


def _proto_json(message) -> bytes:
    return json_format.MessageToJson(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    ).encode()


# ---------------------------------------------------------------------------------------- transport
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 300  # seconds a connection may sit idle (or stall mid-request) before it is closed
    server: RestServer

    def setup(self) -> None:
        super().setup()
        # Responses go out in one write; without NODELAY a keep-alive client can stall 40 ms on acks.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.request, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.request, False)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 -- the base class's signature
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:  # noqa: N802 -- http.server's naming
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._serve("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._serve("DELETE")

    def do_OPTIONS(self) -> None:  # noqa: N802
        if not self.server.options.enable_cors:
            self._serve("OPTIONS")
            return
        self._discard_body()
        if _CORS_ORIGIN.fullmatch(self.headers.get("Origin", "")):
            self._send(Response(200, b""))
        else:
            self._send(error_response(400, "Origin header is missing in CORS preflight"))

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol-level errors (bad request line, oversized headers) as JSON too."""
        self.close_connection = True
        self._send(error_response(code, message or HTTPStatus(code).phrase))

    def _serve(self, method: str) -> None:
        with self.server.in_flight():
            try:
                body = self._read_body()
            except _BodyError as error:
                self.close_connection = True
                self._send(error_response(error.status, error.message))
                return
            try:
                response = self.server.api.handle(method, self.path, body)
            except Exception:  # noqa: BLE001 -- a bug must cost one 500, never the connection thread
                log.exception("REST request failed: %s %s", method, self.path)
                response = error_response(500, "Internal server error")
            self._send(response)

    def _discard_body(self) -> None:
        try:
            self._read_body()
        except _BodyError:
            self.close_connection = True

    def _read_body(self) -> bytes:
        limit = self.server.options.max_body_bytes
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self._read_chunked(limit)
        else:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                raise _BodyError(400, "Invalid Content-Length header") from None
            if length < 0:
                raise _BodyError(400, "Invalid Content-Length header")
            if length > limit:
                if length - limit <= _DRAIN_LIMIT:
                    self._drain(length)  # read it away so the client sees the 413 instead of a reset
                raise _BodyError(
                    413,
                    f"Request body of {length} bytes is over the limit of {limit} bytes "
                    "(--rest_api_max_body_bytes)",
                )
            body = self.rfile.read(length) if length else b""
            if len(body) < length:
                raise _BodyError(400, "Request body ended before Content-Length bytes arrived")
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            body = _gunzip(body, limit)
        return body

    def _drain(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                return
            length -= len(chunk)

    def _read_chunked(self, limit: int) -> bytes:
        parts, total = [], 0
        while True:
            line = self.rfile.readline(65537)
            digits = line.split(b";", 1)[0].strip()
            if not _CHUNK_SIZE.fullmatch(digits):  # a size of -1 would read to EOF, past the limit
                raise _BodyError(400, "Malformed chunked request body: invalid chunk size")
            size = int(digits, 16)
            if size == 0:
                while self.rfile.readline(65537).strip():
                    pass  # trailers
                return b"".join(parts)
            total += size
            if total > limit:
                raise _BodyError(
                    413, f"Request body is over the limit of {limit} bytes (--rest_api_max_body_bytes)"
                )
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def _send(self, response: Response) -> None:
        closing = self.close_connection or self.server.stopping
        head = [
            f"HTTP/1.1 {response.status} {_reason(response.status)}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
        ]
        if self.server.options.enable_cors:
            head.extend(f"{k}: {v}" for k, v in _CORS_HEADERS)
        if closing:
            head.append("Connection: close")
            self.close_connection = True
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body
        try:
            self.wfile.write(data)
        except OSError:
            self.close_connection = True  # the client went away; nothing to answer


class _BodyError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _gunzip(body: bytes, limit: int) -> bytes:
    """Decompress a gzip body, refusing more than `limit` bytes of output (decompression bombs)."""
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = decompressor.decompress(body, limit + 1)
    except zlib.error as error:
        raise _BodyError(400, f"Failed to decompress gzip request body: {error}") from None
    if len(data) > limit or decompressor.unconsumed_tail:
        raise _BodyError(
            413, f"Decompressed request body is over the limit of {limit} bytes (--rest_api_max_body_bytes)"
        )
    return data


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Client Closed Request" if status == 499 else "Unknown"


class _InFlight:
    def __init__(self, server: RestServer):
        self._server = server

    def __enter__(self):
        with self._server._idle:
            self._server._active += 1

    def __exit__(self, *exc):
        with self._server._idle:
            self._server._active -= 1
            self._server._idle.notify_all()


class RestServer(ThreadingHTTPServer):
    """Thread-per-connection HTTP/1.1 server; stop() lets in-flight requests finish first."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 1024  # listen backlog; the default 5 resets bursts of new connections

    def __init__(self, address: tuple[str, int], api: RestApi, options: RestOptions):
        super().__init__(address, _Handler)
        self.api, self.options = api, options
        self.stopping = False
        self._idle = threading.Condition()
        self._active = 0
        self._connections: set[socket.socket] = set()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server_address[1]

    def in_flight(self) -> _InFlight:
        return _InFlight(self)

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._idle:
            (self._connections.add if open_ else self._connections.discard)(connection)

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.2}, name="rest-accept", daemon=True
        )
        self._thread.start()

    def stop(self, grace_s: float = 30.0) -> None:
        """Stop accepting, wait for in-flight requests (up to grace_s), then close idle connections."""
        self.stopping = True
        self.shutdown()
        self.server_close()
        deadline = time.monotonic() + grace_s
        with self._idle:
            while self._active and time.monotonic() < deadline:
                self._idle.wait(deadline - time.monotonic())
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
