"""The served /v1/openapi.json against the server's real answers: every route, status code and JSON body."""

from __future__ import annotations

import jsonschema
import pytest
import requests

from tests.openapi_validation import SpecChecker, structural_problems


@pytest.fixture(scope="module")
def http(rest_url):
    session = requests.Session()
    yield session
    session.close()


@pytest.fixture(scope="module")
def spec(http, rest_url) -> SpecChecker:
    reply = http.get(f"{rest_url}/v1/openapi.json")
    assert reply.status_code == 200
    return SpecChecker(reply.json())


def test_every_schema_in_the_document_is_a_valid_schema(spec):
    assert structural_problems(spec.document) == []
    for schema in spec.document["components"]["schemas"].values():
        jsonschema.Draft7Validator.check_schema(schema)


def _small_image(images):
    return images[:1].tolist()


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("GET", "/v1/models", None),
        ("GET", "/v1/models/digits", None),
        ("GET", "/v1/models/digits/versions/1", None),
        ("GET", "/v1/models/digits/labels/stable", None),
        ("GET", "/v1/models/digits/metadata", None),
        ("GET", "/v1/models/digits/versions/2/metadata", None),
        ("GET", "/v1/models/digits/labels/canary/metadata", None),
        ("POST", "/v1/models/digits:predict", "instances"),
        ("POST", "/v1/models/digits/versions/1:predict", "inputs"),
        ("POST", "/v1/models/digits/labels/stable:predict", "instances"),
        ("POST", "/v1/models/estimator:classify", {"examples": [{"x": 0.0}, {"x": 2.0}]}),
        (
            "POST",
            "/v1/models/estimator/versions/7:regress",
            {"signature_name": "regress_x", "examples": [{"x": 1.5}]},
        ),
        ("GET", "/v1/openapi.json", None),
        ("GET", "/v2/health/live", None),
        ("GET", "/v2/health/ready", None),
        ("GET", "/monitoring/prometheus/metrics", None),
    ],
)
def test_successful_answers_match_the_document(spec, http, rest_url, images, method, path, body):
    if body == "instances":
        body = {"instances": _small_image(images)}
    elif body == "inputs":
        body = {"inputs": _small_image(images)}
    reply = http.request(method, f"{rest_url}{path}", json=body)
    assert reply.status_code == 200, reply.text
    spec.check(method, path, reply)


@pytest.mark.parametrize(
    "method, path, body, status",
    [
        ("GET", "/v1/models/nope", None, 404),
        ("GET", "/v1/models/nope/metadata", None, 404),
        ("GET", "/v1/models/digits/versions/9", None, 404),
        ("GET", "/v1/models/digits/labels/nope/metadata", None, 400),
        ("POST", "/v1/models/nope:predict", {"instances": [1]}, 404),
        ("POST", "/v1/models/digits:predict", b"{not json", 400),
        ("POST", "/v1/models/digits:predict", b"x" * 2_000_001, 413),
        ("POST", "/v1/models/digits:classify", {"examples": [{"x": 1.0}]}, 400),
        ("POST", "/v1/models/estimator:regress", {"examples": []}, 400),
    ],
)
def test_error_answers_are_documented(spec, http, rest_url, method, path, body, status):
    data = body if isinstance(body, bytes) else None
    reply = http.request(method, f"{rest_url}{path}", data=data, json=None if data else body)
    assert reply.status_code == status, reply.text
    assert isinstance(reply.json()["error"], str)
    spec.check(method, path, reply)


def test_every_documented_route_is_served(spec, http, rest_url):
    """No path in the document is one the server answers as unknown (404 Not found or Malformed request)."""
    values = {"{name}": "digits", "{version}": "1", "{label}": "stable"}
    for template, item in spec.document["paths"].items():
        path = template
        for placeholder, value in values.items():
            path = path.replace(placeholder, value)
        for method in item:
            reply = http.request(method.upper(), f"{rest_url}{path}", json={} if method == "post" else None)
            error = reply.json().get("error", "") if "json" in reply.headers["Content-Type"] else ""
            assert not error.startswith(("Not found", "Malformed request")), (method, template, error)
            spec.check(method.upper(), path, reply)


def _request_validator(spec: SpecChecker, path: str) -> jsonschema.Draft7Validator:
    body = spec.document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return jsonschema.Draft7Validator({"components": spec.document["components"], "allOf": [body]})


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/models/{name}:predict", {"signature_name": "serving_default"}),
        ("/v1/models/{name}:predict", {"instances": [[[0]]], "inputs": [[[0]]]}),
        ("/v1/models/{name}:predict", {"instances": []}),
        ("/v1/models/{name}:predict", {"instances": {"x": 1}}),
        ("/v1/models/{name}:predict", {"instances": [[[0]]], "signature_name": 7}),
        ("/v1/models/{name}:regress", {"signature_name": "regress_x"}),
        ("/v1/models/{name}:regress", {"signature_name": "regress_x", "examples": []}),
        ("/v1/models/{name}:regress", {"signature_name": "regress_x", "examples": [1.0]}),
        ("/v1/models/{name}:regress", {"signature_name": "regress_x", "examples": [{}], "context": [1]}),
    ],
)
def test_request_bodies_the_server_refuses_do_not_fit_the_request_schema(spec, http, rest_url, path, body):
    model = "estimator" if "regress" in path else "digits"
    reply = http.post(f"{rest_url}{path.replace('{name}', model)}", json=body)
    assert reply.status_code == 400, reply.text
    with pytest.raises(jsonschema.ValidationError):
        _request_validator(spec, path).validate(body)


def test_request_bodies_the_server_takes_fit_the_request_schema(spec, images):
    predict = _request_validator(spec, "/v1/models/{name}:predict")
    for body in ({"instances": images[:1].tolist()}, {"inputs": images[:1].tolist(), "signature_name": ""}):
        predict.validate(body)
    _request_validator(spec, "/v1/models/{name}:regress").validate(
        {"signature_name": "regress_x", "context": {"x": 3.0}, "examples": [{}]}
    )


@pytest.mark.parametrize(
    "method, path, status, words",
    [
        ("GET", "/nothing", 404, "Not found"),
        ("GET", "/v1/nothing", 400, "Malformed request"),
        ("DELETE", "/v1/models/digits", 400, "Malformed request"),
        ("PATCH", "/v1/models/digits", 501, "PATCH"),
    ],
)
def test_off_route_answers_are_the_ones_the_document_describes(spec, rest_url, method, path, status, words):
    reply = requests.request(method, f"{rest_url}{path}", timeout=10)
    assert reply.status_code == status and words in reply.json()["error"]
    described = spec.document["info"]["description"]
    assert f"{status} " in described and ("PATCH" in described if status == 501 else True)
