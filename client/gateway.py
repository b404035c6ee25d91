"""digits-gateway: a Flask front for the model server, with a page to draw a digit on.

Routes: POST /v1/predict, POST /v1/predict/batch, GET / (drawing page), GET /healthz, GET /readyz,
GET /openapi.json. Settings come from DIGITS_* environment variables (see gateway_settings.py).
Production runs it under gunicorn: `gunicorn 'client.gateway:create_app()'`.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import threading
import time

import numpy as np
from flask import Blueprint, Flask, Response, current_app, jsonify, render_template, request
from PIL import Image
from werkzeug.exceptions import HTTPException

from client import contract
from client.errors import BadTarget, ClientError, ModelNotFound, ServerUnavailable
from client.gateway_settings import DEFAULTS, GatewaySettings, env_strings
from client.model_client import ModelClient, Prediction, available_versions, connect
from client.openapi_spec import openapi_document
from client.preprocess import BadImage
from client.uploads import read_images

log = logging.getLogger("digits.gateway")
api = Blueprint("api", __name__)
VERSION_CACHE_S = 2.0  # REST answers do not name the version that served them; look it up this often


class ModelService:
    """The one model-server client of this process, plus the served version for REST answers."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.client: ModelClient = connect(settings.client_config)
        self._lock = threading.Lock()
        self._version: tuple[float, int | None] = (0.0, None)

    def predict(self, images: np.ndarray) -> Prediction:
        """The model's answer for uint8 [N, 28, 28], with the version that served it."""
        prediction = self.client.predict(images)
        if prediction.model_version is None:
            prediction = Prediction(
                prediction.probabilities, prediction.classes, prediction.model_name, self._served_version()
            )
        return prediction

    def _served_version(self) -> int | None:
        with self._lock:
            checked_at, version = self._version
            if time.monotonic() - checked_at > VERSION_CACHE_S:
                try:  # metadata resolves the configured version or label, as predict does
                    version = self.client.metadata().model_version
                except ClientError:
                    version = None
                self._version = (time.monotonic(), version)
            return version


def create_app(test_config: dict | None = None) -> Flask:
    """The gateway app: defaults, then DIGITS_* env vars, then `test_config`; one model client per app."""
    app = Flask(__name__)
    app.config.from_mapping(DEFAULTS)
    app.config.from_prefixed_env("DIGITS")
    app.config.from_mapping(env_strings())  # strings verbatim, not JSON-parsed
    if test_config:
        app.config.from_mapping(test_config)
    app.config["DEBUG"] = False  # never: Werkzeug's debugger runs code sent by the browser
    settings = GatewaySettings.from_config(app.config)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_content_length
    # Pillow's own bomb guard stays as a backstop behind our header check (preprocess.decode_image);
    # raised only when our limit is above its default, so it never refuses what we allow.
    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, settings.max_image_pixels)
    app.extensions["digits"] = ModelService(settings)
    app.register_blueprint(api)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    return app


def _service() -> ModelService:
    return current_app.extensions["digits"]


@api.before_app_request
def _guard() -> Response | None:
    """Refuse oversized bodies early and, when a token is configured, unauthenticated /v1 calls."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is not None and request.content_length > limit:
        return _error(413, f"request body is {request.content_length} bytes; the limit is {limit}")
    token = _service().settings.auth_token
    if token and request.path.startswith("/v1/"):
        sent = request.headers.get("Authorization", "")
        scheme, _, value = sent.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            response = _error(401, "missing or wrong bearer token: send 'Authorization: Bearer <token>'")
            response.headers["WWW-Authenticate"] = 'Bearer realm="digits"'
            return response
    return None


@api.post("/v1/predict")
def predict_one():
    """One image in, the digit and its probabilities out."""
    return _predict(batch=False)


@api.post("/v1/predict/batch")
def predict_batch():
    """Many images in one request, one answer each, in order."""
    return _predict(batch=True)


@api.get("/healthz")
def healthz():
    """The process is alive (says nothing about the model server)."""
    return jsonify(status="ok")


@api.get("/readyz")
def readyz():
    """Ready only when the model server answers and the configured model version is AVAILABLE."""
    service = _service()
    settings = service.settings
    try:
        versions = available_versions(service.client.status(version=settings.model_version))
        if settings.version_label:
            labelled = service.client.metadata().model_version  # raises if the label is unknown
            if labelled is not None:  # a server may leave model_spec.version out; keep the numbers then
                versions = [labelled]
    except ClientError as err:
        return jsonify(ready=False, error=f"model server: {err}"), 503
    if not versions:
        return jsonify(ready=False, error=f"model {settings.model_name!r} has no AVAILABLE version"), 503
    return jsonify(ready=True, model=settings.model_name, available_versions=versions)


@api.get("/openapi.json")
def openapi():
    """The API description (OpenAPI 3)."""
    return jsonify(openapi_document(_service().settings))


@api.get("/")
def drawing_page():
    """A page to draw a digit on and see what the model makes of it."""
    return render_template("index.html", model_name=_service().settings.model_name)


def _predict(batch: bool):
    """Parse, preprocess, ask the model server, answer; timings in milliseconds."""
    service = _service()
    started = time.perf_counter()
    try:
        images = read_images(request, service.settings.image_limits, service.settings.max_batch_images, batch)
        prepared = time.perf_counter()
        prediction = service.predict(images)
    except BadImage as err:
        return _error(err.http_status, str(err))
    except ClientError as err:
        return _model_server_error(err)
    done = time.perf_counter()
    shown = images if request.args.get("include_input") in ("1", "true") else None
    body = _answer(prediction, service.settings.class_names, shown, batch)
    body["timings_ms"] = {
        "preprocess": round(1000 * (prepared - started), 2),
        "model": round(1000 * (done - prepared), 2),
        "total": round(1000 * (time.perf_counter() - started), 2),
    }
    return jsonify(body)


def _answer(prediction: Prediction, names: tuple[str, ...], images: np.ndarray | None, batch: bool) -> dict:
    """The JSON body: one answer per image (plus the preprocessed image when asked), and the model."""
    answers = []
    for k, (probs, cls) in enumerate(zip(prediction.probabilities, prediction.classes, strict=True)):
        answer = {
            "digit": int(cls),
            "label": names[int(cls)],
            "confidence": float(probs[cls]),
            "probabilities": [round(float(p), 6) for p in probs],
        }
        if images is not None:
            answer["input"] = images[k].tolist()  # the uint8 [28, 28] the model saw
        answers.append(answer)
    body = {"predictions": answers} if batch else answers[0]
    body["model"] = {"name": prediction.model_name, "version": prediction.model_version}
    return body


def _model_server_error(err: ClientError):
    if isinstance(err, ServerUnavailable):
        return _error(503, f"model server unavailable: {err}")
    if isinstance(err, BadTarget):
        log.warning("model server unusable: %s", err)
        return _error(503, f"model server unusable: {err}")
    if isinstance(err, ModelNotFound):
        return _error(503, f"model not available on the model server: {err}")
    log.warning("model server error: %s", err)
    return _error(err.http_status if err.http_status >= 500 else 502, f"model server error: {err}")


def _error(status: int, message: str) -> Response:
    """The one error shape: JSON {"error": message}."""
    response = jsonify(error=message)
    response.status_code = status
    return response


def _http_error(err: HTTPException):
    if err.code == 413:
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        return _error(413, f"request body too large; the limit is {limit} bytes")
    return _error(err.code or 500, err.description or err.name)


def _unexpected_error(err: Exception):
    log.exception("unexpected error on %s %s", request.method, request.path)
    return _error(500, "internal error (details are in the gateway's log)")


def main(argv: list[str] | None = None) -> int:
    """Run the gateway on Werkzeug's threaded server, for local use (`make up`)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=contract.GATEWAY_PORT, help="default: %(default)s")
    parser.add_argument("--model-server", help="host:port of the model server (env DIGITS_MODEL_SERVER)")
    parser.add_argument("--protocol", choices=("grpc", "rest"), help="env DIGITS_PROTOCOL (default grpc)")
    parser.add_argument("--model-name", help="env DIGITS_MODEL_NAME (default mnist)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {
        key: value
        for key, value in (
            ("MODEL_SERVER", args.model_server),
            ("PROTOCOL", args.protocol),
            ("MODEL_NAME", args.model_name),
        )
        if value
    }
    try:
        app = create_app(overrides)
    except ValueError as err:
        parser.error(str(err))
    settings = app.extensions["digits"].settings
    log.info(
        "gateway on http://%s:%d/ -> %s model server %s, model %r",
        args.host,
        args.port,
        settings.protocol,
        settings.model_server,
        settings.model_name,
    )
    app.run(host=args.host, port=args.port, threaded=True, debug=False, use_reloader=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
