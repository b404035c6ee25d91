"""The gateway over real sockets, in front of a real `digits-serve`."""

from __future__ import annotations

import base64
import io
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from client.contract import IMAGE_SIZE, NUM_CLASSES
from client.model_client import ClientConfig, connect


def encode(array: np.ndarray, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, fmt, **options)
    return out.getvalue()


@pytest.fixture(scope="module")
def model_answers(served_model, test_digits):
    """What the model itself says about the first 30 test digits (no gateway in between)."""
    with connect(ClientConfig(served_model.grpc_target)) as model:
        return model.predict(test_digits[0][:30]).classes


def test_png_uploads_are_answered_like_the_model_answers_the_raw_digits(gateway, test_digits, model_answers):
    digits = []
    for image in test_digits[0][:30]:
        reply = requests.post(f"{gateway.url}/v1/predict", data=encode(image, "PNG"),
                              headers={"Content-Type": "image/png"}, timeout=30)  # fmt: skip
        assert reply.status_code == 200, reply.text
        answer = reply.json()
        assert len(answer["probabilities"]) == NUM_CLASSES
        assert abs(sum(answer["probabilities"]) - 1) < 1e-3
        assert answer["digit"] == int(np.argmax(answer["probabilities"]))
        assert answer["label"] == str(answer["digit"])
        assert answer["model"] == {"name": "mnist", "version": 2}
        assert answer["timings_ms"]["total"] >= answer["timings_ms"]["model"] > 0
        digits.append(answer["digit"])
    assert np.mean(np.array(digits) == model_answers) >= 0.95  # preprocessing barely moves MNIST digits


def test_every_upload_form_reads_the_same_digit(gateway, test_digits):
    digit = test_digits[0][0]  # a 7
    png = encode(digit, "PNG")
    url = f"{gateway.url}/v1/predict"
    forms = {
        "raw png": dict(data=png, headers={"Content-Type": "image/png"}),
        "multipart": dict(files={"image": ("seven.png", png, "image/png")}),
        "b64 json": dict(json={"b64": base64.b64encode(png).decode()}),
        "pixels json": dict(json={"pixels": digit.tolist()}),
        "bare pixels json": dict(json=digit.tolist()),
        "bmp": dict(data=encode(digit, "BMP"), headers={"Content-Type": "image/bmp"}),
        "gif": dict(data=encode(digit, "GIF"), headers={"Content-Type": "image/gif"}),
        "ink on paper jpeg, 4x": dict(
            data=encode(255 - np.kron(digit, np.ones((4, 4), np.uint8)), "JPEG", quality=92),
            headers={"Content-Type": "image/jpeg"},
        ),
        "colour rgb png": dict(data=encode(np.dstack([digit, digit // 2, 255 - digit]), "PNG")),
    }
    answers = {}
    for name, request in forms.items():
        reply = requests.post(url, timeout=30, **request)
        assert reply.status_code == 200, f"{name}: {reply.text}"
        answers[name] = reply.json()
    assert {a["digit"] for a in answers.values()} == {int(test_digits[1][0])}
    # The lossless forms of the same picture go through the same bytes -> identical probabilities.
    for name in ("multipart", "b64 json"):
        assert answers[name]["probabilities"] == answers["raw png"]["probabilities"]
    # A 28x28 pixel array is used as-is: the model sees exactly the test digit.
    pixels = requests.post(f"{url}?include_input=1", json=digit.tolist(), timeout=30).json()
    assert np.array_equal(np.array(pixels["input"]), digit)
    # Unless "preprocess": true asks for MNIST's framing: an off-centre digit comes back centred.
    shifted = np.roll(digit, (5, 5), axis=(0, 1))
    framed = requests.post(f"{url}?include_input=1", json={"pixels": shifted.tolist(), "preprocess": True},
                           timeout=30).json()  # fmt: skip
    seen = np.array(framed["input"], dtype=np.float64)
    centre = [float((seen.sum(axis=1 - axis) * np.arange(IMAGE_SIZE)).sum() / seen.sum()) for axis in (0, 1)]
    assert np.allclose(centre, IMAGE_SIZE / 2, atol=1.0), centre


def test_batch_answers_each_image_in_order(gateway, test_digits):
    images, labels = test_digits[0][:12], test_digits[1][:12]
    singles = [
        requests.post(f"{gateway.url}/v1/predict", json=image.tolist(), timeout=30).json()["probabilities"]
        for image in images
    ]
    as_json = requests.post(f"{gateway.url}/v1/predict/batch", json={"images": images.tolist()}, timeout=30)
    files = [("image", (f"{i}.png", encode(image, "PNG"), "image/png")) for i, image in enumerate(images)]
    as_files = requests.post(f"{gateway.url}/v1/predict/batch", files=files, timeout=30)
    for reply in (as_json, as_files):
        assert reply.status_code == 200, reply.text
        predictions = reply.json()["predictions"]
        assert len(predictions) == len(images)
        np.testing.assert_allclose([p["probabilities"] for p in predictions], singles, atol=2e-3)
    digits = [p["digit"] for p in as_json.json()["predictions"]]
    assert np.mean(np.array(digits) == labels) >= 0.8


def test_preprocessed_input_is_returned_on_request(gateway, test_digits):
    big = np.kron(test_digits[0][3], np.ones((5, 5), np.uint8))
    reply = requests.post(f"{gateway.url}/v1/predict?include_input=1", data=encode(big, "PNG"), timeout=30)
    seen = np.array(reply.json()["input"])
    assert seen.shape == (IMAGE_SIZE, IMAGE_SIZE) and seen.max() > 200 and seen[0].max() == 0


def test_health_readiness_and_openapi(gateway):
    assert requests.get(f"{gateway.url}/healthz", timeout=10).json() == {"status": "ok"}
    ready = requests.get(f"{gateway.url}/readyz", timeout=10)
    assert ready.status_code == 200
    assert ready.json()["ready"] is True and ready.json()["available_versions"] == [2, 1]
    spec = requests.get(f"{gateway.url}/openapi.json", timeout=10).json()
    assert spec["openapi"].startswith("3.")
    assert {"/v1/predict", "/v1/predict/batch", "/healthz", "/readyz"} <= set(spec["paths"])


@pytest.fixture(scope="module")
def openapi_spec(gateway_factory) -> dict:
    """GET /openapi.json from a gateway whose model server is never asked (the document needs none)."""
    with gateway_factory({"PROTOCOL": "rest", "RETRIES": 0}) as running:
        reply = requests.get(f"{running.url}/openapi.json", timeout=10)
    assert reply.status_code == 200
    return reply.json()


def schemas_in(node: object) -> list[dict]:
    """Every dict under `node` that has a "type" (the document's schemas), depth first."""
    if isinstance(node, list):
        return [found for child in node for found in schemas_in(child)]
    if not isinstance(node, dict):
        return []
    own = [node] if isinstance(node.get("type"), str) else []
    return own + [found for child in node.values() for found in schemas_in(child)]


def json_schema(described: dict) -> dict:
    """The application/json schema of a response or request body in the document."""
    return described["content"]["application/json"]["schema"]


def test_openapi_every_array_schema_says_what_its_items_are(openapi_spec):
    arrays = [schema for schema in schemas_in(openapi_spec) if schema["type"] == "array"]
    assert len(arrays) > 10
    assert all("items" in schema for schema in arrays), [s for s in arrays if "items" not in s]


def test_openapi_lists_every_route_and_the_probes_bodies(openapi_spec):
    paths = openapi_spec["paths"]
    assert set(paths) == {
        "/v1/predict",
        "/v1/predict/batch",
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/",
        "/static/{filename}",
    }
    assert json_schema(paths["/healthz"]["get"]["responses"]["200"])["required"] == ["status"]
    ready = paths["/readyz"]["get"]["responses"]
    fields = {code: json_schema(ready[code])["required"] for code in ("200", "503")}
    assert fields == {"200": ["ready", "model", "available_versions"], "503": ["ready", "error"]}


@pytest.mark.parametrize("path", ["/v1/predict", "/v1/predict/batch"])
def test_openapi_predict_operations_list_what_they_answer(openapi_spec, path):
    operation = openapi_spec["paths"][path]["post"]
    responses = operation["responses"]
    assert set(responses) == {"200", "400", "401", "413", "500", "502", "503", "504"}
    for code in set(responses) - {"200"}:
        assert json_schema(responses[code]) == {"$ref": "#/components/schemas/Error"}
    assert "Bearer" in responses["401"]["headers"]["WWW-Authenticate"]["description"]
    assert {"multipart/form-data", "application/json", "image/*", "application/octet-stream"} <= set(
        operation["requestBody"]["content"]
    )


def test_openapi_describes_the_answer_and_the_json_bodies(openapi_spec):
    schemas = openapi_spec["components"]["schemas"]
    answer, extra = schemas["Prediction"]["allOf"]
    image = answer["properties"]["input"]
    assert (image["minItems"], image["items"]["maxItems"]) == (IMAGE_SIZE, IMAGE_SIZE)
    assert image["items"]["items"] == {"type": "integer", "minimum": 0, "maximum": 255}
    assert extra["properties"]["model"]["properties"]["version"]["nullable"] is True
    paths = openapi_spec["paths"]
    single = json_schema(paths["/v1/predict"]["post"]["requestBody"])
    assert "preprocess" in single["oneOf"][1]["properties"]
    batch = json_schema(paths["/v1/predict/batch"]["post"]["requestBody"])
    assert batch["oneOf"][0]["required"] == ["images"]


def test_drawing_page_and_its_assets_are_served(gateway):
    page = requests.get(f"{gateway.url}/", timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    assert '<canvas id="pad"' in page.text and "draw.js" in page.text
    for asset in ("draw.js", "style.css"):
        assert requests.get(f"{gateway.url}/static/{asset}", timeout=10).status_code == 200


def test_rest_protocol_gives_the_same_answers_and_the_served_version(
    served_model, test_digits, gateway_factory
):
    png = encode(test_digits[0][1], "PNG")
    with gateway_factory({"MODEL_SERVER": served_model.rest_target, "PROTOCOL": "rest"}) as running:
        answer = requests.post(f"{running.url}/v1/predict", data=png, timeout=30).json()
        assert answer["digit"] == int(test_digits[1][1])
        assert answer["model"] == {"name": "mnist", "version": 2}
        assert requests.get(f"{running.url}/readyz", timeout=10).status_code == 200


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_a_pinned_version_label_is_served_and_reported(served_model, test_digits, gateway_factory, protocol):
    png = encode(test_digits[0][1], "PNG")
    config = {"MODEL_SERVER": served_model.target(protocol), "PROTOCOL": protocol, "VERSION_LABEL": "stable"}
    with gateway_factory(config) as running:
        answer = requests.post(f"{running.url}/v1/predict", data=png, timeout=30).json()
        assert answer["model"] == {"name": "mnist", "version": 1}
        assert requests.get(f"{running.url}/readyz", timeout=10).json()["available_versions"] == [1]
    with gateway_factory({**config, "VERSION_LABEL": "gold"}) as running:
        ready = requests.get(f"{running.url}/readyz", timeout=10)
        assert ready.status_code == 503 and "gold" in ready.json()["error"]


def test_model_server_down_means_503_with_a_message_not_a_crash(test_digits, gateway_factory, unused_port):
    config = {"MODEL_SERVER": f"127.0.0.1:{unused_port}", "RETRIES": 1, "TIMEOUT_S": 2}
    with gateway_factory(config) as running:
        assert requests.get(f"{running.url}/healthz", timeout=10).status_code == 200
        ready = requests.get(f"{running.url}/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["ready"] is False and ready.json()["error"]
        reply = requests.post(f"{running.url}/v1/predict", data=encode(test_digits[0][0], "PNG"), timeout=30)
        assert reply.status_code == 503
        assert "unavailable" in reply.json()["error"]


def test_unknown_model_is_not_ready_and_answers_503(served_model, test_digits, gateway_factory):
    with gateway_factory({"MODEL_SERVER": served_model.grpc_target, "MODEL_NAME": "letters"}) as running:
        ready = requests.get(f"{running.url}/readyz", timeout=10)
        assert ready.status_code == 503 and "letters" in ready.json()["error"]
        reply = requests.post(f"{running.url}/v1/predict", data=encode(test_digits[0][0], "PNG"), timeout=30)
        assert reply.status_code == 503 and "letters" in reply.json()["error"]


def test_a_model_with_no_available_version_left_is_not_ready(
    mnist_model_dir, serve_factory, gateway_factory, tmp_path
):
    """The model server answers and knows the model, but its one version was unloaded (its folder removed)."""
    base = tmp_path / "mnist"
    shutil.copytree(Path(mnist_model_dir) / "2", base / "2")
    config_file = tmp_path / "models.config"
    config_file.write_text(
        f"model_config_list {{ config {{ name: 'mnist' base_path: '{base}' "
        "model_platform: 'tensorflow' } }\n"
    )
    with (
        serve_factory(config_file, poll_wait_s=0.2) as served,
        gateway_factory({"MODEL_SERVER": served.grpc_target, "RETRIES": 0}) as running,
    ):
        assert requests.get(f"{running.url}/readyz", timeout=10).json()["available_versions"] == [2]
        shutil.rmtree(base / "2")
        deadline = time.monotonic() + 30
        while (states := version_states(served)) != ["END"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert states == ["END"], served.log[-20:]  # still known to the server, but unloaded
        ready = requests.get(f"{running.url}/readyz", timeout=10)
        assert ready.status_code == 503
        assert ready.json() == {"ready": False, "error": "model 'mnist' has no AVAILABLE version"}


def version_states(served) -> list[str]:
    status = requests.get(f"http://{served.rest_target}/v1/models/mnist", timeout=10).json()
    return [v["state"] for v in status["model_version_status"]]


def test_string_settings_are_taken_verbatim_from_the_environment(monkeypatch):
    from client.gateway import create_app

    for name, value in {"PROTOCOL": "rest", "MODEL_NAME": "1e3", "VERSION_LABEL": "null"}.items():
        monkeypatch.setenv(f"DIGITS_{name}", value)  # Flask's JSON parsing: 1000.0 and None
    app = create_app()
    settings = app.extensions["digits"].settings
    app.extensions["digits"].client.close()
    assert (settings.model_name, settings.version_label) == ("1e3", "null")


@pytest.mark.parametrize("target", ["localhost:notaport", "http://"])
def test_a_malformed_rest_address_is_not_ready_and_answers_503_naming_it(gateway_factory, target):
    named = f"the model server address {target!r} is not valid: "
    with gateway_factory({"PROTOCOL": "rest", "MODEL_SERVER": target}) as running:
        ready = requests.get(f"{running.url}/readyz", timeout=10)
        assert ready.status_code == 503 and named in ready.json()["error"]
        digit = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8).tolist()
        reply = requests.post(f"{running.url}/v1/predict", json=digit, timeout=30)
        assert reply.status_code == 503 and named in reply.json()["error"]
