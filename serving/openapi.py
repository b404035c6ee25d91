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


# What every model route can answer besides 200 (TF Serving's ToHTTPStatusCode of each failure).
_GET_ERRORS = {
    "400": "malformed request: bad version number, unknown version label",
    "404": "no such model or version",
    "500": "internal error",
    "503": "the model or its labels are not loaded yet, or the server is shutting down",
    "504": "no REST worker became free within --rest_api_timeout_in_ms",
}
_POST_ERRORS = {
    **_GET_ERRORS,
    "400": "malformed request: bad JSON, unknown input or signature, wrong dtype or shape, bad version "
    "number, unknown version label, a signature of the wrong kind (classify/regress)",
    "413": "request body (or its gzip-decompressed form) over --rest_api_max_body_bytes",
    "429": "the model ran out of resources (RESOURCE_EXHAUSTED), e.g. memory",
    "503": "the batch queue is full, the model is not loaded yet, or the server is shutting down",
    "504": "the request ran past --rest_api_timeout_in_ms",
}


def _error(text: str) -> dict:
    return {**_ERROR, "description": text}


def _json_op(summary: str, params: list, request: str | None, response: str) -> dict:
    errors = _POST_ERRORS if request else _GET_ERRORS
    op = {
        "summary": summary,
        "parameters": params,
        "responses": {
            "200": {
                "description": "OK",
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{response}"}}},
            },
            **{code: _error(text) for code, text in errors.items()},
        },
    }
    if request:
        op["requestBody"] = {
            "required": True,
            "description": "JSON; a body sent with Content-Encoding: gzip is decompressed first",
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{request}"}}},
        }
    return op


def _json_body(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


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
        summary = "Model version status (the readiness check)"
        if suffix.startswith("/labels"):
            summary += "; as TF Serving, the label is not resolved: every version's status is returned"
        paths[base] = {"get": _json_op(summary, params, None, "Status")}
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
        "get": {
            "summary": "List models and their AVAILABLE versions (KServe V1 shape plus versions)",
            "parameters": [],
            "responses": {
                "200": _json_body("OK", {"$ref": "#/components/schemas/ModelList"}),
                "500": _error("internal error"),
                "504": _error(_GET_ERRORS["504"]),
            },
        }
    }
    paths["/v1/openapi.json"] = {
        "get": {
            "summary": "This document",
            "responses": {"200": _json_body("the OpenAPI 3 document", {"type": "object"})},
        }
    }
    live = {
        "type": "object",
        "properties": {"live": {"type": "boolean", "enum": [True]}},
        "required": ["live"],
    }
    ready = {"type": "object", "properties": {"ready": {"type": "boolean"}}, "required": ["ready"]}
    paths["/v2/health/live"] = {
        "get": {"summary": "Liveness", "responses": {"200": _json_body("live", live)}}
    }
    paths["/v2/health/ready"] = {
        "get": {
            "summary": "Ready when every configured model has an AVAILABLE version",
            "responses": {
                "200": _json_body('ready: {"ready": true}', ready),
                "503": _json_body('not ready: {"ready": false}', ready),
            },
        }
    }
    paths["/monitoring/prometheus/metrics"] = {
        "get": {
            "summary": "Prometheus metrics (at the path set by --monitoring_config_file's "
            "prometheus_config; this is the usual one)",
            "responses": {
                "200": {
                    "description": "Prometheus text exposition format 0.0.4",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    }
    tensor = {"description": 'a value or (nested) list; {"b64": "..."} for string tensors'}
    schemas = {
        "Error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
        "PredictRequest": {
            "type": "object",
            "description": "exactly one of instances / inputs",
            "oneOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
            "properties": {
                "signature_name": {"type": "string", "default": "serving_default"},
                "instances": {
                    "type": "array",
                    "minItems": 1,
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
            "oneOf": [{"required": ["predictions"]}, {"required": ["outputs"]}],
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
                "examples": {
                    "type": "array",
                    "items": {"type": "object"},
                    "minItems": 1,
                    "description": 'feature name -> value (or list, or {"b64": ...}); merged with context',
                },
            },
        },
        "Results": {
            "type": "object",
            "properties": {
                "results": {
                    "type": "array",
                    "description": "classify: per example a list of [label, score]; regress: per example "
                    "a number",
                }
            },
            "required": ["results"],
        },
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
                        "required": ["version", "state", "status"],
                    },
                }
            },
            "required": ["model_version_status"],
        },
        "Metadata": {
            "type": "object",
            "properties": {
                "model_spec": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "signature_name": {"type": "string"},
                        "version": {"type": "string", "description": "the version that answered"},
                    },
                    "required": ["name", "version"],
                },
                "metadata": {
                    "type": "object",
                    "properties": {
                        "signature_def": {
                            "type": "object",
                            "description": "a SignatureDefMap in proto JSON: "
                            '{"signature_def": {name: SignatureDef}}',
                            "properties": {"signature_def": {"type": "object"}},
                            "required": ["signature_def"],
                        }
                    },
                    "required": ["signature_def"],
                },
            },
            "required": ["model_spec", "metadata"],
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
            "required": ["models", "versions", "ready"],
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "digits-serve REST API",
            "version": "1",
            "description": "TensorFlow Serving's REST API (same paths, JSON and status codes), "
            'plus health, model listing and metrics. Every error has the body {"error": "..."}: '
            "404 for a path outside /v1/, 400 (Malformed request) for an unknown /v1/ path or a "
            "method a /v1/ path does not take (TF Serving answers no 405), 413 for a body over "
            "--rest_api_max_body_bytes on any route, 400 for a broken Content-Length, chunked or gzip body. "
            "Methods other than GET, POST, PUT, DELETE and OPTIONS (HEAD, PATCH, ...) get 501 "
            "Not Implemented. "
            "With --rest_api_enable_cors_support an OPTIONS preflight on any path answers 200 (400 "
            "without an http(s) Origin) and every answer carries the CORS headers.",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
