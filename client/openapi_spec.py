"""The gateway's OpenAPI 3 description, served at GET /openapi.json."""

from __future__ import annotations

from typing import TYPE_CHECKING

from client import contract

if TYPE_CHECKING:
    from client.gateway_settings import GatewaySettings

_ERROR = {"$ref": "#/components/schemas/Error"}


def _responses(ok_schema: str) -> dict:
    def error(text: str) -> dict:
        return {"description": text, "content": {"application/json": {"schema": _ERROR}}}

    return {
        "200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": ok_schema}}}},
        "400": error("not an image, truncated file, empty input, wrong JSON or pixel array"),
        "401": error("missing or wrong bearer token (only when the gateway has one configured)"),
        "413": error("body or image dimensions over the limit"),
        "503": error("the model server is down or does not serve the model"),
    }


def _image_body(batch: bool) -> dict:
    side = contract.IMAGE_SIZE
    pixels = {
        "type": "array",
        "items": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": contract.PIXEL_MAX}},
        "description": f"grey pixels [height][width]; {side}x{side} is taken as MNIST format "
        "(ink bright on black) unless preprocess is true, any other size is preprocessed",
    }
    item = {
        "oneOf": [
            pixels,
            {"type": "object", "properties": {"pixels": pixels}, "required": ["pixels"]},
            {
                "type": "object",
                "properties": {"b64": {"type": "string", "format": "byte"}},
                "required": ["b64"],
            },
        ]
    }
    json_schema = (
        {
            "oneOf": [
                {
                    "type": "object",
                    "properties": {
                        "images": {"type": "array", "items": item},
                        "preprocess": {"type": "boolean"},
                    },
                },
                {"type": "array", "items": item},
            ]
        }
        if batch
        else item
    )
    files = {"type": "string", "format": "binary"}
    multipart = (
        {"type": "object", "properties": {"image": {"type": "array", "items": files}}}
        if batch
        else {"type": "object", "properties": {"image": files}, "required": ["image"]}
    )
    return {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": multipart},
            "image/*": {"schema": files},
            "application/json": {"schema": json_schema},
        },
    }


def openapi_document(settings: GatewaySettings) -> dict:
    """The document, with this gateway's limits filled in."""
    n = contract.NUM_CLASSES
    answer = {
        "type": "object",
        "properties": {
            "digit": {"type": "integer", "minimum": 0, "maximum": n - 1},
            "label": {"type": "string"},
            "confidence": {"type": "number"},
            "probabilities": {"type": "array", "items": {"type": "number"}, "minItems": n, "maxItems": n},
            "input": {"type": "array", "description": "the preprocessed 28x28 image (?include_input=1)"},
        },
    }
    model = {"type": "object", "properties": {"name": {"type": "string"}, "version": {"type": "integer"}}}
    timings = {"type": "object", "additionalProperties": {"type": "number"}}
    include = {
        "name": "include_input",
        "in": "query",
        "schema": {"type": "boolean"},
        "description": "also return the preprocessed 28x28 image the model saw",
    }
    security = [{"bearer": []}] if settings.auth_token else []
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "digits gateway",
            "version": "0.1.0",
            "description": "Handwritten-digit recognition in front of a TF-Serving-compatible model server. "
            f"Limits: {settings.max_content_length} bytes a body, {settings.max_image_pixels} pixels and "
            f"{settings.max_image_side} px a side an image, {settings.max_batch_images} images a batch.",
        },
        "paths": {
            "/v1/predict": {
                "post": {
                    "summary": "Classify one image (file, raw bytes or JSON pixels)",
                    "parameters": [include],
                    "security": security,
                    "requestBody": _image_body(batch=False),
                    "responses": _responses("#/components/schemas/Prediction"),
                }
            },
            "/v1/predict/batch": {
                "post": {
                    "summary": "Classify many images in one request",
                    "parameters": [include],
                    "security": security,
                    "requestBody": _image_body(batch=True),
                    "responses": _responses("#/components/schemas/BatchPrediction"),
                }
            },
            "/healthz": {
                "get": {"summary": "The process is alive", "responses": {"200": {"description": "OK"}}}
            },
            "/readyz": {
                "get": {
                    "summary": "The model server answers and the model is AVAILABLE",
                    "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}},
                }
            },
            "/": {"get": {"summary": "Drawing page", "responses": {"200": {"description": "HTML"}}}},
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}},
                    "required": ["error"],
                },
                "Prediction": {
                    "allOf": [
                        answer,
                        {"type": "object", "properties": {"model": model, "timings_ms": timings}},
                    ]
                },
                "BatchPrediction": {
                    "type": "object",
                    "properties": {
                        "predictions": {"type": "array", "items": answer},
                        "model": model,
                        "timings_ms": timings,
                    },
                },
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
