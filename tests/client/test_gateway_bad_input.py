"""Bad input at the gateway: each gets a 4xx JSON error that says what was wrong, and the gateway keeps
answering correctly afterwards. Also bearer-token authentication."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest
import requests
from image_payloads import encode, png_claiming

OVER_LIMIT_BYTES = 3 * 1024 * 1024  # the test gateway accepts 2 MiB


NOISE = np.random.default_rng(7).integers(0, 256, (96, 96), dtype=np.uint8)
SMALL_PNG = encode(NOISE[:28, :28], "PNG")
BOMB = encode(np.zeros((6000, 6000), np.uint8), "PNG")  # 36 megapixels in about 35 kB
ONE, BATCH = "/v1/predict", "/v1/predict/batch"
NOT_IMAGE = "not an image"


def raw(data: bytes, content_type: str = "image/png") -> dict:
    return {"data": data, "headers": {"Content-Type": content_type}}


def two_files() -> list:
    return [("image", ("a.png", encode(NOISE, "PNG"))), ("image", ("b.png", encode(NOISE, "PNG")))]


# (name, path, request kwargs, expected status, words the error message must contain)
BAD_REQUESTS = [
    ("text as image", ONE, raw(b"hello, I am not a picture"), 400, NOT_IMAGE),
    ("unicode garbage", ONE, raw("☃ ünïcødé ✓ 𝔊".encode()), 400, NOT_IMAGE),
    ("unicode as text", ONE, raw("☃ ünïcødé ✓".encode(), "text/plain; charset=utf-8"), 400, NOT_IMAGE),
    ("pdf bytes", ONE, raw(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"), 400, NOT_IMAGE),
    ("truncated png", ONE, raw(encode(NOISE, "PNG")[:2000]), 400, "truncated"),
    ("truncated jpeg", ONE, raw(encode(NOISE, "JPEG")[:1500], "image/jpeg"), 400, "truncated"),
    ("decompression bomb png", ONE, raw(BOMB), 413, "6000x6000"),
    ("20000x20000 header", ONE, raw(png_claiming(20000, 20000)), 413, "too many pixels"),
    ("zero-size header", ONE, raw(png_claiming(0, 0)), 400, "image"),
    ("empty body", ONE, raw(b""), 400, "empty"),
    ("empty json body", ONE, raw(b"", "application/json"), 400, "empty"),
    ("blank white image", ONE, raw(encode(np.full((50, 50), 255, np.uint8), "PNG")), 400, "blank"),
    ("broken json", ONE, raw(b'{"pixels": [[1, 2', "application/json"), 400, "not valid JSON"),
    ("json not utf-8", ONE, raw(b'{"pixels": "\xff\xfe"}', "application/json"), 400, "UTF-8"),
    ("json wrong key", ONE, {"json": {"image": [[0]]}}, 400, "'pixels'"),
    ("json string", ONE, {"json": "a digit"}, 400, "2-D array"),
    ("ragged pixels", ONE, {"json": {"pixels": [[0, 1, 2], [3, 4]]}}, 400, "rectangular"),
    ("3-d pixels", ONE, {"json": {"pixels": np.zeros((2, 28, 28)).tolist()}}, 400, "2-D"),
    ("empty pixels", ONE, {"json": {"pixels": []}}, 400, "non-empty"),
    ("pixels over 255", ONE, {"json": {"pixels": np.full((28, 28), 300).tolist()}}, 400, "0..255"),
    ("negative pixels", ONE, {"json": {"pixels": np.full((28, 28), -1).tolist()}}, 400, "0..255"),
    ("nan pixels", ONE, raw(b'{"pixels": [[NaN, 1], [2, 3]]}', "application/json"), 400, "finite"),
    ("string pixels", ONE, {"json": {"pixels": [["a", "b"], ["c", "d"]]}}, 400, "numbers"),
    ("huge pixel array", ONE, {"json": {"pixels": [[0] * 5000] * 2}}, 413, "5000x2"),
    ("bad base64", ONE, {"json": {"b64": "not*base64!"}}, 400, "base64"),
    ("base64 of text", ONE, {"json": {"b64": base64.b64encode(b"text").decode()}}, 400, NOT_IMAGE),
    ("multipart without file", ONE, {"files": {"note": (None, "hi")}}, 400, "no file"),
    ("multipart non-image", ONE, {"files": {"image": ("a.png", b"nope", "image/png")}}, 400, NOT_IMAGE),
    ("two images to single", ONE, {"files": two_files()}, 400, "batch"),
    # Files are counted before any is decoded: the count is what is wrong, whatever the files hold.
    ("two non-images to single", ONE, {"files": [("image", ("a.png", b"nope"))] * 2}, 400, "batch"),
    ("body over the limit", ONE, raw(b"\0" * OVER_LIMIT_BYTES), 413, "limit"),
    ("chunked body over the limit", ONE, raw(b"\0" * 65536 for _ in range(48)), 413, "limit"),
    ("batch not a list", BATCH, {"json": {"images": 7}}, 400, "images"),
    ("batch empty", BATCH, {"json": {"images": []}}, 400, "no image"),
    ("batch over the limit", BATCH, {"json": {"images": [[[0]]] * 65}}, 400, "limit 64"),
    ("65 files in a batch", BATCH, {"files": [("image", ("a.png", SMALL_PNG))] * 65}, 400, "limit 64"),
    ("65 non-images in a batch", BATCH, {"files": [("image", ("a.png", b"nope"))] * 65}, 400, "limit 64"),
    ("batch bad item", BATCH, {"json": {"images": [np.zeros((28, 28)).tolist(), "x"]}}, 400, "images[1]"),
    ("GET on predict", ONE, {"method": "GET"}, 405, "method"),
    ("unknown path", "/v1/nothing-here", {"method": "GET"}, 404, "not found"),
]


def send(base_url: str, path: str, request: dict) -> requests.Response:
    request = dict(request)
    return requests.request(request.pop("method", "POST"), base_url + path, timeout=30, **request)


@pytest.mark.parametrize("path, request_kwargs, status, words", [r[1:] for r in BAD_REQUESTS],
                         ids=[r[0] for r in BAD_REQUESTS])  # fmt: skip
def test_bad_input_gets_a_clear_4xx_json_error_and_the_gateway_keeps_working(
    gateway, test_digits, path, request_kwargs, status, words
):
    reply = send(gateway.url, path, request_kwargs)
    assert reply.status_code == status, reply.text
    assert reply.headers["Content-Type"].startswith("application/json")
    message = reply.json()["error"]
    assert words.lower() in message.lower(), message
    assert "Traceback" not in reply.text
    assert reply.elapsed.total_seconds() < 5  # refused quickly, never a hang
    good = requests.post(f"{gateway.url}/v1/predict", json=test_digits[0][0].tolist(), timeout=30)
    assert good.status_code == 200 and good.json()["digit"] == int(test_digits[1][0])


TOKEN = "s3cret-t0ken"


@pytest.fixture(scope="module")
def locked_gateway(served_model, gateway_factory):
    """A gateway that wants `Authorization: Bearer <TOKEN>` on /v1/*."""
    with gateway_factory({"MODEL_SERVER": served_model.grpc_target, "AUTH_TOKEN": TOKEN}) as running:
        yield running


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN},
     {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": "Bearer "}],
    ids=["none", "wrong", "basic scheme", "no scheme", "longer", "empty"],
)  # fmt: skip
def test_missing_or_wrong_token_gets_401(locked_gateway, test_digits, headers):
    reply = requests.post(f"{locked_gateway.url}/v1/predict", json=test_digits[0][0].tolist(),
                          headers=headers, timeout=30)  # fmt: skip
    assert reply.status_code == 401
    assert "token" in reply.json()["error"]
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")


def test_right_token_is_let_through_and_probes_need_none(locked_gateway, test_digits):
    reply = requests.post(f"{locked_gateway.url}/v1/predict", json=test_digits[0][0].tolist(),
                          headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)  # fmt: skip
    assert reply.status_code == 200 and reply.json()["digit"] == int(test_digits[1][0])
    for probe in ("/healthz", "/readyz", "/openapi.json", "/"):
        assert requests.get(locked_gateway.url + probe, timeout=10).status_code == 200


def test_numeric_token_from_the_environment_still_works(
    served_model, gateway_factory, test_digits, monkeypatch
):
    monkeypatch.setenv("DIGITS_AUTH_TOKEN", "12345")  # Flask would parse it as JSON into an int
    with gateway_factory({"MODEL_SERVER": served_model.grpc_target}) as running:
        url = f"{running.url}/v1/predict"
        pixels = test_digits[0][0].tolist()
        assert requests.post(url, json=pixels, timeout=30).status_code == 401
        ok = requests.post(url, json=pixels, headers={"Authorization": "Bearer 12345"}, timeout=30)
        assert ok.status_code == 200


def test_debug_mode_is_off_whatever_the_environment_says(served_model, gateway_factory, monkeypatch):
    monkeypatch.setenv("DIGITS_DEBUG", "true")
    with gateway_factory({"MODEL_SERVER": served_model.grpc_target, "DEBUG": True}) as running:
        assert running.app.debug is False
        reply = requests.post(f"{running.url}/v1/predict", data=b"junk", timeout=30)
        assert reply.status_code == 400 and "Traceback" not in reply.text


def offline_gateway_config(port: int) -> dict:
    """A REST gateway whose model server is down: what is refused here never reaches it."""
    return {"MODEL_SERVER": f"127.0.0.1:{port}", "PROTOCOL": "rest", "RETRIES": 0}


@pytest.mark.parametrize(
    "body, words",
    [(b"[" * 100_000, "nests too deeply"), (b"[[" + b"1" * 5000 + b"]]", "4300 digits"),
     (b'{"pixels": [[1' + b"0" * 400 + b"]]}", "0..255")],
    ids=["deeply nested", "integer over 4300 digits", "integer too large for a float"],
)  # fmt: skip
def test_json_python_cannot_parse_or_convert_gets_400(gateway_factory, unused_port, body, words):
    with gateway_factory(offline_gateway_config(unused_port)) as running:
        reply = requests.post(f"{running.url}{ONE}", data=body, headers={"Content-Type": "application/json"},
                              timeout=30)  # fmt: skip
    assert reply.status_code == 400, reply.text
    assert words in reply.json()["error"]


ZEROS = np.zeros((28, 28), int).tolist()
PNG_B64 = base64.b64encode(encode(NOISE, "PNG")).decode()


@pytest.mark.parametrize(
    "path, body, words",
    [(ONE, {"pixels": [["0"] * 28] * 28}, "not strings"),
     (ONE, [[0, True], [255, False]], "not booleans"),
     (ONE, {"pixels": [[None] * 28] * 28}, "not null"),
     (BATCH, [ZEROS, [[0, 1], [2, "3"]]], "images[1]: pixel values must be numbers"),
     (ONE, {"pixels": ZEROS, "b64": PNG_B64}, "not both"),
     (BATCH, {"images": [ZEROS, {"pixels": ZEROS, "b64": PNG_B64}]}, "images[1]: send either")],
    ids=["string pixels", "boolean pixels", "null pixels", "string in a batch item", "pixels and b64",
         "pixels and b64 in a batch item"],
)  # fmt: skip
def test_non_number_pixels_or_pixels_with_b64_get_400(gateway_factory, unused_port, path, body, words):
    with gateway_factory(offline_gateway_config(unused_port)) as running:
        reply = requests.post(f"{running.url}{path}", json=body, timeout=30)
    assert reply.status_code == 400, reply.text
    assert words in reply.json()["error"]


@pytest.mark.parametrize("token", ["null", "1e3", "true", "1.50", '"quoted"'])
def test_the_token_is_taken_verbatim_from_the_environment(gateway_factory, unused_port, monkeypatch, token):
    monkeypatch.setenv("DIGITS_AUTH_TOKEN", token)  # Flask would parse these as JSON: None, 1000.0, True...
    with gateway_factory(offline_gateway_config(unused_port)) as running:
        url = f"{running.url}{ONE}"
        assert requests.post(url, data=b"junk", timeout=30).status_code == 401
        let_in = requests.post(url, data=b"junk", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert let_in.status_code == 400 and NOT_IMAGE in let_in.json()["error"]  # past the token check


def test_an_empty_token_turns_authentication_off(gateway_factory, unused_port, monkeypatch):
    monkeypatch.setenv("DIGITS_AUTH_TOKEN", "")  # compose's `${DIGITS_AUTH_TOKEN:-}` when it is not set
    with gateway_factory(offline_gateway_config(unused_port)) as running:
        assert running.app.extensions["digits"].settings.auth_token is None
        reply = requests.post(f"{running.url}{ONE}", data=b"junk", timeout=30)
    assert reply.status_code == 400 and NOT_IMAGE in reply.json()["error"]  # no token asked for


@pytest.mark.parametrize("token", ["   ", " padded ", "padded\n", "\tpadded"])
def test_a_token_padded_with_whitespace_stops_the_gateway_from_starting(monkeypatch, token):
    from client.gateway import create_app

    monkeypatch.setenv("DIGITS_AUTH_TOKEN", token)
    with pytest.raises(ValueError, match="DIGITS_AUTH_TOKEN starts or ends with whitespace"):
        create_app({"PROTOCOL": "rest"})



@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("TIMEOUT_S", "abc", "DIGITS_TIMEOUT_S must be a number above 0, not 'abc'"),
        ("TIMEOUT_S", "0", "DIGITS_TIMEOUT_S must be a number above 0, not 0"),
        ("RETRIES", "-1", "DIGITS_RETRIES must be an integer at least 0, not -1"),  # was a 500 per request
        ("RETRIES", "2.5", "DIGITS_RETRIES must be an integer at least 0, not 2.5"),
        ("MAX_BATCH_IMAGES", "0", "DIGITS_MAX_BATCH_IMAGES must be an integer at least 1, not 0"),
        ("MODEL_VERSION", "latest", "DIGITS_MODEL_VERSION must be an integer at least 0, not 'latest'"),
    ],
)
def test_a_bad_number_setting_stops_the_gateway_naming_its_variable(monkeypatch, name, value, message):
    from client.gateway import create_app

    monkeypatch.setenv(f"DIGITS_{name}", value)
    with pytest.raises(ValueError, match=re.escape(message)):
        create_app({"PROTOCOL": "rest"})


def test_digits_gateway_refuses_a_bad_setting_in_one_line(monkeypatch, capsys):
    from client.gateway import main

    monkeypatch.setenv("DIGITS_TIMEOUT_S", "5s")
    with pytest.raises(SystemExit) as stopped:
        main(["--port", "0"])
    assert stopped.value.code == 2
    assert "DIGITS_TIMEOUT_S must be a number above 0, not '5s'" in capsys.readouterr().err
