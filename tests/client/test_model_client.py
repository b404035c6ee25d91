"""The client library against a real `digits-serve` over both transports, on real sockets."""

from __future__ import annotations

import re
import socket
import threading
import time

import numpy as np
import pytest

from client.contract import INPUT_NAME, NUM_CLASSES, OUTPUT_CLASSES, OUTPUT_PROBABILITIES, SIGNATURE_NAME
from client.errors import BadTarget, InvalidInput, ModelNotFound, ServerUnavailable
from client.model_client import ClientConfig, available_versions, connect
from client.rest_transport import RestModelClient

PROTOCOLS = ["grpc", "rest"]


@pytest.fixture(scope="module")
def reference(mnist_model_dir, test_digits):
    """In-process answers of versions 1 and 2 on the first 64 test images (what the server must return)."""
    import tensorflow as tf

    images = test_digits[0][:64]
    answers = {}
    for version in (1, 2):
        signature = tf.saved_model.load(str(mnist_model_dir / str(version))).signatures[SIGNATURE_NAME]
        out = signature(**{INPUT_NAME: tf.constant(images)})
        answers[version] = (out[OUTPUT_PROBABILITIES].numpy(), out[OUTPUT_CLASSES].numpy())
    return images, answers


def client_for(served_model, protocol: str, **overrides):
    return connect(ClientConfig(served_model.target(protocol), protocol=protocol, **overrides))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_predict_matches_the_in_process_model(served_model, reference, protocol):
    images, answers = reference
    with client_for(served_model, protocol) as model:
        probabilities, classes = model.predict(images)  # newest version: 2
        at_v1 = model.predict(images, version=1)
        stable = model.predict(images, label="stable")
    assert probabilities.shape == (len(images), NUM_CLASSES) and probabilities.dtype == np.float32
    assert classes.dtype == np.int64
    np.testing.assert_allclose(probabilities, answers[2][0], atol=1e-5)
    np.testing.assert_array_equal(classes, answers[2][1])
    np.testing.assert_allclose(at_v1.probabilities, answers[1][0], atol=1e-5)
    np.testing.assert_allclose(stable.probabilities, answers[1][0], atol=1e-5)
    assert not np.allclose(answers[1][0], answers[2][0], atol=1e-3), "the two fixture versions must differ"


def test_grpc_reports_the_version_that_answered(served_model, test_digits):
    with client_for(served_model, "grpc") as model:
        assert model.predict(test_digits[0][:2]).model_version == 2
        assert model.predict(test_digits[0][:2], label="stable").model_version == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_large_inputs_are_split_into_batches_with_the_same_answers(served_model, test_digits, protocol):
    images = test_digits[0]
    with client_for(served_model, protocol, batch_size=500) as whole:
        expected = whole.predict(images)
    with client_for(served_model, protocol, batch_size=37) as split:  # 14 requests, the last one short
        got = split.predict(images)
    np.testing.assert_allclose(got.probabilities, expected.probabilities, atol=1e-5)
    np.testing.assert_array_equal(got.classes, expected.classes)
    assert np.mean(got.classes == test_digits[1]) > 0.9  # the fixture model is > 90% accurate


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_one_client_is_safe_to_share_between_threads(served_model, test_digits, protocol):
    images = test_digits[0][:160]
    with client_for(served_model, protocol) as model:
        expected = model.predict(images).classes
        results: dict[int, np.ndarray] = {}

        def work(i: int) -> None:
            results[i] = model.predict(images[i * 20 : (i + 1) * 20]).classes

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    np.testing.assert_array_equal(np.concatenate([results[i] for i in range(8)]), expected)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_status_and_metadata_describe_the_served_model(served_model, protocol):
    with client_for(served_model, protocol) as model:
        statuses = model.status()
        one = model.status(version=1)
        meta = model.metadata()
    assert available_versions(statuses) == [2, 1]
    assert [(s.version, s.state) for s in one] == [(1, "AVAILABLE")]
    assert meta.model_version == 2
    assert meta.inputs[INPUT_NAME].dtype == "DT_UINT8"
    assert meta.inputs[INPUT_NAME].shape == (-1, 28, 28)
    assert set(meta.outputs) == {OUTPUT_PROBABILITIES, OUTPUT_CLASSES}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "overrides, call, expected, words",
    [
        ({"model_name": "nope"}, "predict", ModelNotFound, "nope"),
        ({"model_version": 99}, "predict", ModelNotFound, "99"),
        ({"version_label": "gold"}, "predict", ModelNotFound, "gold"),
        ({"model_name": "nope"}, "status", ModelNotFound, "nope"),
        ({"signature_name": "missing_sig"}, "predict", InvalidInput, "missing_sig"),
    ],
)
def test_server_errors_become_typed_exceptions_with_the_servers_message(
    served_model, test_digits, protocol, overrides, call, expected, words
):
    with client_for(served_model, protocol, **overrides) as model:
        with pytest.raises(expected) as caught:
            model.predict(test_digits[0][:2]) if call == "predict" else model.status()
    assert words in str(caught.value)


@pytest.mark.parametrize(
    "images, words",
    [
        (np.zeros((2, 32, 32), np.uint8), "shape"),
        (np.zeros((0, 28, 28), np.uint8), "no images"),
        (np.full((1, 28, 28), np.nan), "finite"),
        (np.full((1, 28, 28), 300.0), "0..255"),
        (np.full((1, 28, 28), -1.0), "0..255"),  # uint8 would wrap it round to 255
    ],
)
def test_bad_arrays_are_refused_before_sending(served_model, images, words):
    with client_for(served_model, "rest") as model:
        with pytest.raises(InvalidInput, match=words):
            model.predict(images)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unreachable_server_raises_server_unavailable_after_bounded_retries(protocol):
    target = f"127.0.0.1:{closed_port()}"
    config = ClientConfig(target, protocol=protocol, retries=2, backoff_s=0.05, timeout_s=2)
    started = time.monotonic()
    with connect(config) as model:
        with pytest.raises(ServerUnavailable):
            model.predict(np.zeros((1, 28, 28), np.uint8))
    assert time.monotonic() - started < 5  # 3 attempts, short backoff: no hang


class CountingRest(RestModelClient):
    """A REST client whose first `failures` predict calls fail as UNAVAILABLE; counts every attempt."""

    def __init__(self, config: ClientConfig, failures: int) -> None:
        super().__init__(config)
        self.failures, self.attempts = failures, 0

    def _predict(self, images, version, label):
        self.attempts += 1
        if self.attempts <= self.failures:
            raise ServerUnavailable("warming up")
        return super()._predict(images, version, label)


def test_unavailable_is_retried_until_the_server_answers(served_model, test_digits):
    config = ClientConfig(served_model.rest_target, protocol="rest", retries=3, backoff_s=0.01)
    with CountingRest(config, failures=2) as model:
        assert model.predict(test_digits[0][:3]).classes.shape == (3,)
    assert model.attempts == 3


def test_errors_other_than_unavailable_are_not_retried(served_model, test_digits):
    config = ClientConfig(served_model.rest_target, protocol="rest", model_version=99, retries=3)
    with CountingRest(config, failures=0) as model:
        with pytest.raises(ModelNotFound):
            model.predict(test_digits[0][:3])
    assert model.attempts == 1


@pytest.mark.parametrize("target", ["localhost:notaport", "http://", "ftp://127.0.0.1:1"])
def test_an_address_requests_cannot_parse_is_a_bad_target_and_not_retried(target):
    with CountingRest(ClientConfig(target, protocol="rest", retries=3), failures=0) as model:
        with pytest.raises(BadTarget, match=re.escape(f"the model server address {target!r} is not valid: ")):
            model.predict(np.zeros((1, 28, 28), np.uint8))
    assert model.attempts == 1


def test_a_malformed_proxy_setting_is_blamed_on_the_proxy_not_the_target(monkeypatch):
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", "http://")  # requests: InvalidProxyURL, a kind of InvalidURL
    with connect(ClientConfig("127.0.0.1:1", protocol="rest", retries=3)) as model:
        with pytest.raises(BadTarget, match="the proxy setting for http://127.0.0.1:1 ") as raised:
            model.status()
    assert "model server address" not in str(raised.value)


def test_a_negative_retry_count_is_refused_not_an_assertion_error_on_every_call():
    with pytest.raises(ValueError, match="retries must be 0 or more"):
        ClientConfig("localhost:8500", retries=-1)
