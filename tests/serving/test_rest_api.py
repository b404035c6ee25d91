"""TF Serving's REST API over a socket: status, metadata, predict (row/columnar, b64), classify/regress."""

from __future__ import annotations

import base64
import gzip
import json

import numpy as np
import pytest
import requests

from client.contract import INPUT_NAME, NUM_CLASSES, OUTPUT_CLASSES, OUTPUT_PROBABILITIES


@pytest.fixture(scope="module")
def http(rest_url):
    session = requests.Session()  # one keep-alive connection, as real clients use
    yield session
    session.close()


def _reference(path, images):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    out = loaded.signatures["serving_default"](**{INPUT_NAME: tf.constant(images)})
    return {k: v.numpy() for k, v in out.items()}


@pytest.fixture(scope="module")
def answers(built_models, images):
    """In-process answers of versions 1 and 2 for the test images."""
    return {v: _reference(built_models.digits[v], images) for v in (1, 2)}


def test_status_lists_every_version_available(http, rest_url):
    r = http.get(f"{rest_url}/v1/models/digits")
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    assert r.json() == {
        "model_version_status": [
            {"version": str(v), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
            for v in (1, 2)
        ]
    }
    one = http.get(f"{rest_url}/v1/models/digits/versions/2").json()["model_version_status"]
    assert [s["version"] for s in one] == ["2"]
    # TF Serving's quirk: the label is not resolved for status, every version is listed.
    assert len(http.get(f"{rest_url}/v1/models/digits/labels/stable").json()["model_version_status"]) == 2


def test_metadata_is_a_signature_def_map(http, rest_url):
    doc = http.get(f"{rest_url}/v1/models/digits/versions/1/metadata").json()
    assert doc["model_spec"] == {"name": "digits", "signature_name": "", "version": "1"}
    sig = doc["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["method_name"] == "tensorflow/serving/predict"
    images = sig["inputs"][INPUT_NAME]
    assert images["dtype"] == "DT_UINT8"
    assert [d["size"] for d in images["tensor_shape"]["dim"]] == ["-1", "28", "28"]
    assert set(sig["outputs"]) == {OUTPUT_PROBABILITIES, OUTPUT_CLASSES}
    assert sig["outputs"][OUTPUT_CLASSES]["dtype"] == "DT_INT64"
    # Unlike status, metadata resolves a label (the gateway asks it which version a label serves).
    for route, version in (("/labels/stable", "1"), ("/labels/canary", "2"), ("", "2")):
        spec = http.get(f"{rest_url}/v1/models/digits{route}/metadata").json()["model_spec"]
        assert spec["version"] == version, route


def test_predict_row_format_matches_in_process_call(http, rest_url, images, answers):
    r = http.post(f"{rest_url}/v1/models/digits:predict", json={"instances": images.tolist()})
    assert r.status_code == 200
    predictions = r.json()["predictions"]
    assert len(predictions) == len(images)
    got = np.array([p[OUTPUT_PROBABILITIES] for p in predictions])
    np.testing.assert_allclose(got, answers[2][OUTPUT_PROBABILITIES], rtol=1e-5)  # latest = version 2
    assert [p[OUTPUT_CLASSES] for p in predictions] == answers[2][OUTPUT_CLASSES].tolist()


def test_predict_columnar_format_and_named_instances(http, rest_url, images, answers):
    r = http.post(
        f"{rest_url}/v1/models/digits/versions/1:predict",
        json={"signature_name": "serving_default", "inputs": images[:3].tolist()},
    )
    outputs = r.json()["outputs"]
    np.testing.assert_allclose(outputs[OUTPUT_PROBABILITIES], answers[1][OUTPUT_PROBABILITIES][:3], rtol=1e-5)
    assert np.array(outputs[OUTPUT_PROBABILITIES]).shape == (3, NUM_CLASSES)
    named = http.post(
        f"{rest_url}/v1/models/digits/versions/1:predict",
        json={"instances": [{INPUT_NAME: img} for img in images[:2].tolist()]},
    ).json()
    assert [p[OUTPUT_CLASSES] for p in named["predictions"]] == answers[1][OUTPUT_CLASSES][:2].tolist()


@pytest.mark.parametrize(
    "route, version",
    [
        ("/versions/1", 1),
        ("/versions/2", 2),
        ("/labels/stable", 1),
        ("/labels/canary", 2),
        ("", 2),
        ("/LABELS/stable", 1),
    ],
)
def test_version_and_label_routing(http, rest_url, images, answers, route, version):
    r = http.post(f"{rest_url}/v1/models/digits{route}:predict", json={"instances": images[:4].tolist()})
    assert r.status_code == 200, r.text
    got = [p[OUTPUT_CLASSES] for p in r.json()["predictions"]]
    assert got == answers[version][OUTPUT_CLASSES][:4].tolist()
    probs = np.array([p[OUTPUT_PROBABILITIES] for p in r.json()["predictions"]])
    np.testing.assert_allclose(probs, answers[version][OUTPUT_PROBABILITIES][:4], rtol=1e-5)


def test_the_label_in_the_path_is_url_decoded(rest_url):
    import http.client  # not requests: it would send %61 as "a" itself
    from urllib.parse import urlparse

    url = urlparse(rest_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    connection.request("GET", "/v1/models/digits/labels/st%61ble/metadata")
    response = connection.getresponse()
    assert response.status == 200 and json.loads(response.read())["model_spec"]["version"] == "1"
    connection.close()


def test_foreign_signature_with_strings_b64_and_several_outputs(http, rest_url):
    body = {
        "instances": [
            {"text": "hello", "values": [1.0, 2.0, 3.0]},
            {"text": {"b64": base64.b64encode(b"\x00\xffz").decode()}, "values": [0, 0, -1]},
        ]
    }
    r = http.post(f"{rest_url}/v1/models/odd:predict", json=body)
    assert r.status_code == 200, r.text
    first, second = r.json()["predictions"]
    assert first == {
        "length": 5,
        "doubled": [2.5, 4.5, 6.5],
        "echo_bytes": {"b64": base64.b64encode(b"hello!").decode()},
    }
    assert second["length"] == 3 and second["doubled"] == [0.5, 0.5, -1.5]
    assert base64.b64decode(second["echo_bytes"]["b64"]) == b"\x00\xffz!"
    columnar = http.post(
        f"{rest_url}/v1/models/odd:predict", json={"inputs": {"text": ["ab"], "values": [[1, 1, 1]]}}
    ).json()["outputs"]
    assert columnar["length"] == [2] and columnar["doubled"] == [[2.5, 2.5, 2.5]]
    other = http.post(
        f"{rest_url}/v1/models/odd:predict", json={"signature_name": "total", "inputs": [[1, 2], [30, 40]]}
    ).json()
    assert other == {"outputs": [3, 70]}  # one output: unnamed
    rows = http.post(
        f"{rest_url}/v1/models/odd:predict", json={"signature_name": "total", "instances": [[1, 2], [30, 40]]}
    ).json()
    assert rows == {"predictions": [3, 70]}  # in the row format too


def test_classify_and_regress_on_example_signatures(http, rest_url):
    r = http.post(f"{rest_url}/v1/models/estimator:classify", json={"examples": [{"x": 0.0}, {"x": 2.0}]})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [[label for label, _ in row] for row in results] == [["neg", "pos"], ["neg", "pos"]]
    assert results[0][1][1] == pytest.approx(0.5) and results[1][1][1] == pytest.approx(1 / (1 + np.exp(-2)))
    r = http.post(
        f"{rest_url}/v1/models/estimator/versions/7:regress",
        json={"signature_name": "regress_x", "examples": [{"x": 1.5}, {"x": -1.0}]},
    )
    assert r.json() == {"results": [4.0, -1.0]}
    with_context = http.post(
        f"{rest_url}/v1/models/estimator:regress",
        json={"signature_name": "regress_x", "context": {"x": 3.0}, "examples": [{}]},
    )
    assert with_context.json() == {"results": [7.0]}


def test_classify_on_predict_signature_is_tf_serving_error(http, rest_url):
    r = http.post(f"{rest_url}/v1/models/digits:classify", json={"examples": [{"x": 1.0}]})
    assert r.status_code == 400
    assert (
        "Expected classification signature method_name to be tensorflow/serving/classify" in r.json()["error"]
    )


def test_gzip_request_body(http, rest_url, images, answers):
    body = gzip.compress(json.dumps({"instances": images[:2].tolist()}).encode())
    r = http.post(
        f"{rest_url}/v1/models/digits/versions/1:predict",
        data=body,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert [p[OUTPUT_CLASSES] for p in r.json()["predictions"]] == answers[1][OUTPUT_CLASSES][:2].tolist()


def test_list_models_health_and_openapi(http, rest_url):
    listing = http.get(f"{rest_url}/v1/models").json()
    assert listing["models"] == ["digits", "estimator", "odd"]
    assert listing["versions"]["digits"] == ["1", "2"] and listing["ready"]["odd"] is True
    assert http.get(f"{rest_url}/v2/health/live").status_code == 200
    ready = http.get(f"{rest_url}/v2/health/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True}
    spec = http.get(f"{rest_url}/v1/openapi.json").json()
    assert spec["openapi"].startswith("3.") and "/v1/models/{name}:predict" in spec["paths"]


def test_prometheus_metrics_count_requests(http, rest_url, images):
    http.post(f"{rest_url}/v1/models/digits:predict", json={"instances": images[:1].tolist()})
    r = http.get(f"{rest_url}/monitoring/prometheus/metrics")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    assert ':tensorflow:serving:request_count{model_name="digits",status="OK"}' in r.text
    assert 'request_latency_bucket{model_name="digits",API="predict",entrypoint="REST"' in r.text


def test_keep_alive_connection_is_reused(rest_url, images):
    import http.client
    from urllib.parse import urlparse

    url = urlparse(rest_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    body = json.dumps({"instances": images[:1].tolist()})
    for _ in range(3):
        connection.request("POST", "/v1/models/digits:predict", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 200 and "predictions" in json.loads(response.read())
    assert connection.sock is not None  # still the same open socket
    connection.close()


def test_cors_flag_and_rest_timeout(tmp_path, built_models, server_factory):
    import shutil

    from serving.batching import BatchingConfig
    from serving.settings import RestOptions

    shutil.copytree(built_models.digits[1], tmp_path / "d" / "1")
    # A batch timeout far beyond the REST timeout: the request must come back 504, not hang.
    server = server_factory(
        f'model_config_list {{ config {{ name: "d" base_path: "{tmp_path / "d"}" }} }}',
        rest=RestOptions(enable_cors=True, timeout_ms=300),
        batching=BatchingConfig(max_batch_size=64, batch_timeout_micros=5_000_000),
    )
    url = f"http://127.0.0.1:{server.rest_port}/v1/models/d"
    preflight = requests.options(f"{url}:predict", headers={"Origin": "https://example.org"}, timeout=5)
    assert preflight.status_code == 200 and preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert requests.options(f"{url}:predict", timeout=5).json() == {
        "error": "Origin header is missing in CORS preflight"
    }
    status = requests.get(url, timeout=5)
    assert status.headers["Access-Control-Allow-Methods"] == "POST, GET"
    r = requests.post(
        f"{url}:predict", json={"instances": np.zeros((1, 28, 28), np.uint8).tolist()}, timeout=10
    )
    assert r.status_code == 504 and "Deadline exceeded" in r.json()["error"]
