"""A readable OpenAPI 3 description of the REST API, served at /v1/openapi.json."""

from __future__ import annotations

from functools import cache

_ERROR = {
    "description": "Error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "model name",
}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "integer"}}
_LABEL = {
    "name": "label",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "a version label from the model config (e.g. stable, canary)",
}


def _json_op(summary: str, params: list, request: str | None, response: str) -> dict:
    op = {
        "summary": summary,
        "parameters": params,
        "responses": {
            "200": {
                "description": "OK",
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{response}"}}},
            },
            "400": _ERROR,
            "404": _ERROR,
            "503": _ERROR,
        },
    }
    if request:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{request}"}}},
        }
    return op


@cache
def openapi_document() -> dict:
    """The OpenAPI document (TF Serving's REST API plus our health, list and metrics extras)."""
    paths: dict = {}
    for suffix, params in (
        ("", [_NAME]),
        ("/versions/{version}", [_NAME, _VERSION]),
        ("/labels/{label}", [_NAME, _LABEL]),
    ):
        base = "/v1/models/{name}" + suffix
        paths[base] = {"get": _json_op("Model version status (the readiness check)", params, None, "Status")}
        paths[base + "/metadata"] = {
            "get": _json_op("Signatures (SignatureDefMap)", params, None, "Metadata")
        }
        paths[base + ":predict"] = {
            "post": _json_op("Predict (row or columnar format)", params, "PredictRequest", "PredictResponse")
        }
        paths[base + ":classify"] = {
            "post": _json_op(
                "Classify tf.Examples (classify signatures only)", params, "ExamplesRequest", "Results"
            )
        }
        paths[base + ":regress"] = {
            "post": _json_op(
                "Regress tf.Examples (regress signatures only)", params, "ExamplesRequest", "Results"
            )
        }
    paths["/v1/models"] = {
        "get": _json_op(
            "List models and their AVAILABLE versions (KServe V1 shape plus versions)", [], None, "ModelList"
        )
    }
    paths["/v2/health/live"] = {"get": {"summary": "Liveness", "responses": {"200": {"description": "live"}}}}
    paths["/v2/health/ready"] = {
        "get": {
            "summary": "Ready when every configured model has an AVAILABLE version",
            "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}},
        }
    }
    paths["/monitoring/prometheus/metrics"] = {
        "get": {
            "summary": "Prometheus metrics (with --monitoring_config_file)",
            "responses": {"200": {"description": "text/plain exposition"}},
        }
    }
    tensor = {"description": 'a value or (nested) list; {"b64": "..."} for string tensors'}
    schemas = {
        "Error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
        "PredictRequest": {
            "type": "object",
            "description": "exactly one of instances / inputs",
            "properties": {
                "signature_name": {"type": "string", "default": "serving_default"},
                "instances": {
                    "type": "array",
                    "description": "row format: one element per example; objects "
                    "of input name -> value for several inputs",
                },
                "inputs": {
                    "description": "columnar format: one tensor, or an object of input name -> tensor",
                    **tensor,
                },
            },
        },
        "PredictResponse": {
            "type": "object",
            "properties": {
                "predictions": {"description": "row requests: one element per example"},
                "outputs": {
                    "description": "columnar requests: one tensor, or an object of output name -> tensor"
                },
            },
        },
        "ExamplesRequest": {
            "type": "object",
            "required": ["examples"],
            "properties": {
                "signature_name": {"type": "string"},
                "context": {"type": "object"},
                "examples": {"type": "array", "items": {"type": "object"}},
            },
        },
        "Results": {"type": "object", "properties": {"results": {"type": "array"}}},
        "Status": {
            "type": "object",
            "properties": {
                "model_version_status": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "version": {"type": "string"},
                            "state": {
                                "enum": ["UNKNOWN", "START", "LOADING", "AVAILABLE", "UNLOADING", "END"]
                            },
                            "status": {
                                "type": "object",
                                "properties": {
                                    "error_code": {"type": "string"},
                                    "error_message": {"type": "string"},
                                },
                            },
                        },
                    },
                }
            },
        },
        "Metadata": {
            "type": "object",
            "properties": {"model_spec": {"type": "object"}, "metadata": {"type": "object"}},
        },
        "ModelList": {
            "type": "object",
            "properties": {
                "models": {"type": "array", "items": {"type": "string"}},
                "versions": {
                    "type": "object",
                    "additionalProperties": {"type": "array", "items": {"type": "string"}},
                },
                "ready": {"type": "object", "additionalProperties": {"type": "boolean"}},
            },
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "digits-serve REST API",
            "version": "1",
            "description": "TensorFlow Serving's REST API (same paths, JSON and status codes), "
            "plus health, model listing and metrics.",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
