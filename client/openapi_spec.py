"""The gateway's OpenAPI 3 description, served at GET /openapi.json."""

from __future__ import annotations

from typing import TYPE_CHECKING

from client import contract

if TYPE_CHECKING:
    from client.gateway_settings import GatewaySettings

_ERROR = {"$ref": "#/components/schemas/Error"}


def _error(text: str) -> dict:
    return {"description": text, "content": {"application/json": {"schema": _ERROR}}}


def _json(schema: dict, text: str) -> dict:
    return {"description": text, "content": {"application/json": {"schema": schema}}}


def _responses(ok_schema: str) -> dict:
    unauthorized = _error("missing or wrong bearer token (only when the gateway has one configured)")
    unauthorized["headers"] = {
        "WWW-Authenticate": {"schema": {"type": "string"}, "description": 'always Bearer realm="digits"'}
    }
    return {
        "200": _json({"$ref": ok_schema}, "OK"),
        "400": _error(
            "not an image, truncated file, empty input, wrong JSON or pixel array, no digit in the picture, "
            "more than one image to /v1/predict or more than the batch limit to /v1/predict/batch"
        ),
        "401": unauthorized,
        "413": _error("body or image dimensions over the limit"),
        "500": _error("unexpected error in the gateway, or one the model server did not classify"),
        "502": _error("the model server failed or rejected the preprocessed input"),
        "503": _error("the model server is down or does not serve the model"),
        "504": _error("the model server did not answer within the timeout"),
    }


def _image_body(batch: bool, settings: GatewaySettings) -> dict:
    side, longest = contract.IMAGE_SIZE, settings.max_image_side
    value = {"type": "number", "minimum": 0, "maximum": contract.PIXEL_MAX}
    pixels = {
        "type": "array",
        "items": {"type": "array", "items": value, "minItems": 1, "maxItems": longest},
        "minItems": 1,
        "maxItems": longest,
        "description": f"grey pixels [height][width], JSON numbers only, rows of equal length, at most "
        f"{settings.max_image_pixels} in all; {side}x{side} is taken as MNIST format (ink bright on "
        "black) unless preprocess is true, any other size is preprocessed",
    }
    preprocess = {"type": "boolean", "description": f"preprocess a {side}x{side} pixel array too"}
    # A single image's object may carry "preprocess"; a batch takes it once, next to "images".
    pixels_object = {"pixels": pixels} if batch else {"pixels": pixels, "preprocess": preprocess}
    item = {
        "oneOf": [
            pixels,
            {"type": "object", "properties": pixels_object, "required": ["pixels"]},
            {
                "type": "object",
                "properties": {"b64": {"type": "string", "format": "byte", "description": "an image file"}},
                "required": ["b64"],
            },
        ],
        "description": "an object with both pixels and b64 is refused",
    }
    items = {"type": "array", "items": item, "minItems": 1, "maxItems": settings.max_batch_images}
    json_schema = (
        {
            "oneOf": [
                {
                    "type": "object",
                    "properties": {"images": items, "preprocess": preprocess},
                    "required": ["images"],
                },
                items,
            ]
        }
        if batch
        else item
    )
    files = {"type": "string", "format": "binary"}
    sent = "the images as files, in order" if batch else "the image as one file"
    multipart = {
        "type": "object",
        "properties": {
            "image": {"type": "array", "items": files, "maxItems": settings.max_batch_images}
            if batch
            else files
        },
        "description": f"{sent}; `image` is the usual field name, but a file in a field of any name is "
        "taken, and non-file fields are ignored",
    }
    return {
        "required": True,
        "description": "multipart/form-data; JSON (application/json or any type ending in +json); "
        "any other Content-Type, or none, is read as the bytes of one image file (PNG, JPEG, BMP, GIF, WEBP)",
        "content": {
            "multipart/form-data": {"schema": multipart},
            "application/json": {"schema": json_schema},
            "image/*": {"schema": files},
            "application/octet-stream": {"schema": files},
        },
    }


def _object(**properties: dict) -> dict:
    """An object schema in which every property is always present."""
    return {"type": "object", "properties": properties, "required": list(properties)}


def openapi_document(settings: GatewaySettings) -> dict:
    """The document, with this gateway's limits filled in."""
    n, side = contract.NUM_CLASSES, contract.IMAGE_SIZE
    grey = {"type": "integer", "minimum": 0, "maximum": contract.PIXEL_MAX}
    share = {"type": "number", "minimum": 0, "maximum": 1}
    answer = {
        "type": "object",
        "properties": {
            "digit": {"type": "integer", "minimum": 0, "maximum": n - 1},
            "label": {"type": "string", "description": "the class name of digit (DIGITS_DATASET)"},
            "confidence": {**share, "description": "the probability of digit"},
            "probabilities": {
                "type": "array",
                "items": share,
                "minItems": n,
                "maxItems": n,
                "description": "one per class, by class index",
            },
            "input": {
                "type": "array",
                "items": {"type": "array", "items": grey, "minItems": side, "maxItems": side},
                "minItems": side,
                "maxItems": side,
                "description": f"the preprocessed {side}x{side} image [row][column] (?include_input=1)",
            },
        },
        "required": ["digit", "label", "confidence", "probabilities"],
    }
    version = {"type": "integer", "nullable": True, "description": "null when the gateway cannot look it up"}
    model = _object(name={"type": "string"}, version=version)
    timings = _object(**{step: {"type": "number"} for step in ("preprocess", "model", "total")})
    include = {
        "name": "include_input",
        "in": "query",
        "schema": {"type": "string", "enum": ["1", "true"]},
        "description": "1 or true: also return the preprocessed 28x28 image the model saw "
        "(any other value, or none, leaves it out)",
    }
    security = [{"bearer": []}] if settings.auth_token else []
    ready = _object(
        ready={"type": "boolean", "enum": [True]},
        model={"type": "string"},
        available_versions={
            "type": "array",
            "items": {"type": "integer"},
            "description": "newest first; only the pinned label's version when one is set and the model "
            "server names it (else every AVAILABLE version)",
        },
    )
    not_ready = _object(ready={"type": "boolean", "enum": [False]}, error={"type": "string"})
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "digits gateway",
            "version": "0.1.0",
            "description": "Handwritten-digit recognition in front of a TF-Serving-compatible model server. "
            f"Limits: {settings.max_content_length} bytes a body, {settings.max_image_pixels} pixels and "
            f"{settings.max_image_side} px a side an image, {settings.max_batch_images} images a batch. "
            'Every error, 404 (unknown path) and 405 (wrong method) included, has the body {"error": "..."}.',
        },
        "paths": {
            "/v1/predict": {
                "post": {
                    "summary": "Classify one image (file, raw bytes or JSON pixels)",
                    "parameters": [include],
                    "security": security,
                    "requestBody": _image_body(batch=False, settings=settings),
                    "responses": _responses("#/components/schemas/Prediction"),
                }
            },
            "/v1/predict/batch": {
                "post": {
                    "summary": "Classify many images in one request",
                    "parameters": [include],
                    "security": security,
                    "requestBody": _image_body(batch=True, settings=settings),
                    "responses": _responses("#/components/schemas/BatchPrediction"),
                }
            },
            "/healthz": {
                "get": {
                    "summary": "The process is alive (says nothing about the model server)",
                    "responses": {"200": _json(_object(status={"type": "string", "enum": ["ok"]}), "alive")},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "The model server answers and the model has an AVAILABLE version",
                    "responses": {
                        "200": _json(ready, "ready"),
                        "503": _json(
                            not_ready,
                            "not ready: no answer from the model server, or the model, "
                            "version or label is not AVAILABLE",
                        ),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object"}, "the OpenAPI 3 document")},
                }
            },
            "/": {
                "get": {
                    "summary": "Drawing page",
                    "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}},
                }
            },
            "/static/{filename}": {
                "get": {
                    "summary": "The drawing page's script and style sheet (draw.js, style.css)",
                    "parameters": [
                        {"name": "filename", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {
                        "200": {
                            "description": "the file",
                            "content": {"text/javascript": {}, "text/css": {}},
                        },
                        "404": _error("no such file"),
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}},
                    "required": ["error"],
                },
                "Prediction": {"allOf": [answer, _object(model=model, timings_ms=timings)]},
                "BatchPrediction": _object(
                    predictions={"type": "array", "items": answer}, model=model, timings_ms=timings
                ),
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
