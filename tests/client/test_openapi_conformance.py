"""The gateway's /openapi.json against its real answers over a socket, and its request schemas against
the bodies the gateway takes and refuses."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import requests

from tests.image_payloads import encode, png_claiming
from tests.openapi_validation import SpecChecker, _json_schema, structural_problems


@pytest.fixture(scope="module")
def spec(gateway) -> SpecChecker:
    reply = requests.get(f"{gateway.url}/openapi.json", timeout=10)
    assert reply.status_code == 200
    return SpecChecker(reply.json())


def test_every_schema_in_the_document_is_a_valid_schema(spec):
    assert structural_problems(spec.document) == []
    for schema in spec.document["components"]["schemas"].values():
        jsonschema.Draft7Validator.check_schema(_json_schema(schema))


def _requests(digit: np.ndarray) -> list[tuple[str, str, dict]]:
    png = encode(digit, "PNG")
    b64 = base64.b64encode(png).decode()
    return [
        ("POST", "/v1/predict", {"files": {"image": ("d.png", png, "image/png")}}),
        ("POST", "/v1/predict", {"data": png, "headers": {"Content-Type": "image/png"}}),
        ("POST", "/v1/predict?include_input=1", {"data": png, "headers": {"Content-Type": "application/x"}}),
        ("POST", "/v1/predict", {"json": {"pixels": digit.tolist()}}),
        ("POST", "/v1/predict", {"json": {"pixels": digit.tolist(), "preprocess": True}}),
        ("POST", "/v1/predict", {"json": digit.tolist()}),
        ("POST", "/v1/predict", {"json": {"b64": b64}}),
        ("POST", "/v1/predict/batch", {"files": [("image", ("a.png", png)), ("image", ("b.png", png))]}),
        (
            "POST",
            "/v1/predict/batch?include_input=true",
            {"json": {"images": [{"b64": b64}, digit.tolist()]}},
        ),
        ("POST", "/v1/predict/batch", {"json": [{"pixels": digit.tolist()}]}),
        ("GET", "/healthz", {}),
        ("GET", "/readyz", {}),
        ("GET", "/openapi.json", {}),
        ("GET", "/", {}),
        ("GET", "/static/draw.js", {}),
        ("GET", "/static/style.css", {}),
    ]


def test_successful_answers_match_the_document(spec, gateway, test_digits):
    for method, path, kwargs in _requests(test_digits[0][0]):
        reply = requests.request(method, f"{gateway.url}{path}", timeout=30, **kwargs)
        assert reply.status_code == 200, (method, path, reply.text)
        spec.check(method, path, reply)


def test_error_answers_are_documented(spec, gateway):
    cases = [
        ("/v1/predict", {"data": b"not an image"}, 400),
        ("/v1/predict", {"json": {"pixels": [[256]]}}, 400),
        ("/v1/predict", {"data": png_claiming(5000, 5000)}, 413),
        ("/v1/predict", {"data": b"x" * (2 * 1024 * 1024 + 1)}, 413),
        ("/v1/predict/batch", {"json": {"images": [[[0]]] * 65}}, 400),
        ("/v1/predict/batch", {"json": {"nothing": 1}}, 400),
    ]
    for path, kwargs, status in cases:
        reply = requests.post(f"{gateway.url}{path}", timeout=30, **kwargs)
        assert reply.status_code == status, (path, reply.text)
        spec.check("POST", path, reply)


def test_auth_and_model_server_errors_are_documented(gateway_factory, unused_port):
    config = {
        "MODEL_SERVER": f"127.0.0.1:{unused_port}",
        "PROTOCOL": "rest",
        "RETRIES": 0,
        "AUTH_TOKEN": "s3",
    }
    with gateway_factory(config) as running:
        checker = SpecChecker(requests.get(f"{running.url}/openapi.json", timeout=10).json())
        assert checker.document["paths"]["/v1/predict"]["post"]["security"] == [{"bearer": []}]
        one = np.zeros((28, 28), np.uint8)
        one[4:24, 12:16] = 255  # a digit 1, so the gateway asks the (absent) model server
        png = encode(one, "PNG")
        refused = requests.post(f"{running.url}/v1/predict", data=png, timeout=30)
        assert refused.status_code == 401
        checker.check("POST", "/v1/predict", refused)
        down = requests.post(
            f"{running.url}/v1/predict/batch", data=png, headers={"Authorization": "Bearer s3"}, timeout=30
        )
        assert down.status_code == 503, down.text
        checker.check("POST", "/v1/predict/batch", down)
        not_ready = requests.get(f"{running.url}/readyz", timeout=30)
        assert not_ready.status_code == 503
        checker.check("GET", "/readyz", not_ready)


def _request_schema(spec: SpecChecker, path: str) -> jsonschema.Draft7Validator:
    body = spec.document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    root = {"components": _json_schema(spec.document["components"]), "allOf": [_json_schema(body)]}
    return jsonschema.Draft7Validator(root)


def test_json_bodies_the_gateway_takes_fit_the_request_schema(spec, test_digits):
    digit = test_digits[0][0].tolist()
    single, batch = _request_schema(spec, "/v1/predict"), _request_schema(spec, "/v1/predict/batch")
    for body in (digit, {"pixels": digit}, {"pixels": digit, "preprocess": True}, {"b64": "AAAA"}):
        single.validate(body)
    for body in ([digit], {"images": [digit, {"b64": "AAAA"}], "preprocess": True}, [{"pixels": digit}]):
        batch.validate(body)


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/predict", {"pixels": [[256]]}),
        ("/v1/predict", {"pixels": [[-1]]}),
        ("/v1/predict", {"pixels": []}),
        ("/v1/predict", {"pixels": [[]]}),
        ("/v1/predict", {"pixels": [[True]]}),
        ("/v1/predict", {"pixels": [[1]], "b64": "AAAA"}),
        ("/v1/predict", {"picture": [[1]]}),
        ("/v1/predict", {"b64": 7}),
        ("/v1/predict/batch", {"images": []}),
        ("/v1/predict/batch", {"images": [[[0]]] * 65}),
        ("/v1/predict/batch", [[[0]]] * 65),
        ("/v1/predict/batch", {"images": [{"pixels": [[300]]}]}),
    ],
)
def test_json_bodies_the_gateway_refuses_do_not_fit_the_request_schema(spec, gateway, path, body):
    reply = requests.post(f"{gateway.url}{path}", json=body, timeout=30)
    assert reply.status_code == 400, reply.text
    with pytest.raises(jsonschema.ValidationError):
        _request_schema(spec, path).validate(body)


def test_the_client_readme_curl_examples_work_and_match_the_document(spec, gateway, test_digits, tmp_path):
    """client/README.md's curl block, run as written (address swapped) on real files: every answer fits."""
    readme = (Path(__file__).parents[2] / "client" / "README.md").read_text()
    blocks = [b for b in re.findall(r"```bash\n(.*?)```", readme, re.DOTALL) if "/v1/predict" in b]
    assert len(blocks) == 1, "client/README.md should have one bash block of gateway curl examples"
    script = blocks[0].replace("http://localhost:8080", gateway.url).replace("python3 ", f"{sys.executable} ")
    digits, labels = test_digits
    for name, digit, fmt in (("digit.png", 0, "PNG"), ("a.png", 1, "PNG"), ("b.png", 2, "PNG")):
        (tmp_path / name).write_bytes(encode(digits[digit], fmt))
    (tmp_path / "photo.jpg").write_bytes(encode(255 - np.kron(digits[3], np.ones((4, 4), np.uint8)), "JPEG"))
    # each curl prints its answer's status and path after the body, so every answer can be checked
    script = script.replace("curl ", "curl -s -w '\\n@@%{http_code} %{url_effective}\\n' ")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    answers = [
        (body, f"{code} {url}")
        for body, code, url in re.findall(r"(.*?)\n@@(\d{3}) (\S+)\n", done.stdout, re.S)
    ]
    assert len(answers) == 7, done.stdout[-2000:]
    for body, trailer in answers:
        code, url = trailer.split(" ", 1)
        path = url.removeprefix(gateway.url)
        method = "POST" if path.startswith("/v1/") else "GET"
        reply = requests.models.Response()
        reply.status_code, reply._content = int(code), body.encode()
        reply.headers["Content-Type"] = "application/json"
        assert code == "200", (path, body)
        spec.check(method, path, reply)
    single = [json.loads(body) for body, trailer in answers if trailer.endswith("/v1/predict")]
    batch = next(json.loads(body) for body, trailer in answers if trailer.endswith("/batch"))
    assert [s["digit"] for s in single] == [labels[0], labels[3], 1, labels[0]]  # the JSON array draws a 1
    assert len(batch["predictions"]) == 2


class _NoVersionServer(BaseHTTPRequestHandler):
    """A REST model server whose metadata does not say which version answered (the field is optional)."""

    def do_GET(self):  # noqa: N802 -- http.server's naming
        if self.path.endswith("/metadata"):
            signature = {"serving_default": {"inputs": {}, "outputs": {}, "method_name": ""}}
            doc = {
                "model_spec": {"name": "mnist"},
                "metadata": {"signature_def": {"signature_def": signature}},
            }
        else:
            entry = {
                "version": "3",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
            doc = {"model_version_status": [entry]}
        body = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_readyz_with_a_label_answers_version_numbers_when_the_server_names_none(gateway_factory):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NoVersionServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = {
        "MODEL_SERVER": f"127.0.0.1:{server.server_port}",
        "PROTOCOL": "rest",
        "RETRIES": 0,
        "VERSION_LABEL": "stable",
    }
    try:
        with gateway_factory(config) as running:
            checker = SpecChecker(requests.get(f"{running.url}/openapi.json", timeout=10).json())
            reply = requests.get(f"{running.url}/readyz", timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert reply.status_code == 200, reply.text
    assert reply.json()["available_versions"] == [3]
    checker.check("GET", "/readyz", reply)
