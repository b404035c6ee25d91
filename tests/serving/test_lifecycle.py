"""Model lifecycle over real sockets: hot-swap under load, corrupt versions, warmup, policies, reloads."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from client.contract import INPUT_NAME, OUTPUT_CLASSES, OUTPUT_PROBABILITIES
from serving.config_files import parse_model_server_config
from serving.model_manager import list_version_dirs
from serving.server import StartupError
from tests.serving.warmup_files import write_warmup, zero_batches


def _publish(source, target):
    """Copy a version in atomically (temp dir + rename), as one should publish to TF Serving."""
    staging = target.parent / f".staging-{target.name}"
    shutil.copytree(source, staging)
    os.rename(staging, target)


def _wait_for(condition, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _states(rest, name):
    r = requests.get(f"{rest}/v1/models/{name}", timeout=5)
    return {int(s["version"]): s for s in r.json()["model_version_status"]}


def _config(name, base, policy=""):
    return f'model_config_list {{ config {{ name: "{name}" base_path: "{base}" {policy} }} }}'


def _serving_version_1(tmp_path, built_models, server_factory):
    """A server of model "digits" whose base path holds version 1: (base path, server, REST address)."""
    base = tmp_path / "digits"
    base.mkdir()
    _publish(built_models.digits[1], base / "1")
    server = server_factory(_config("digits", base))
    return base, server, f"http://127.0.0.1:{server.rest_port}"


@pytest.fixture(scope="module")
def answers(built_models, images):
    out = {}
    for version in (1, 2):
        loaded = tf.saved_model.load(str(built_models.digits[version]))
        result = loaded.signatures["serving_default"](**{INPUT_NAME: tf.constant(images)})
        out[version] = {k: v.numpy() for k, v in result.items()}
    return out


def test_hot_swap_under_load_drops_no_request_and_answers_stay_right(
    tmp_path, built_models, images, answers, server_factory
):
    base, server, rest = _serving_version_1(tmp_path, built_models, server_factory)
    stop = threading.Event()
    seen_versions: set[int] = set()
    failures: list[str] = []
    counts = [0]

    def grpc_client():
        stub = prediction_service_pb2_grpc.PredictionServiceStub(
            grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        )
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "digits"
        request.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto(images))
        while not stop.is_set():
            try:
                response = stub.Predict(request, timeout=10)
            except grpc.RpcError as error:
                failures.append(f"gRPC {error.code()}: {error.details()}")
                continue
            version = response.model_spec.version.value
            classes = tf.make_ndarray(response.outputs[OUTPUT_CLASSES])
            if classes.tolist() != answers[version][OUTPUT_CLASSES].tolist():
                failures.append(f"wrong answer from version {version}")
            seen_versions.add(version)
            counts[0] += 1

    def rest_client():
        session = requests.Session()
        body = {"instances": images.tolist()}
        while not stop.is_set():
            r = session.post(f"{rest}/v1/models/digits:predict", json=body, timeout=10)
            if r.status_code != 200:
                failures.append(f"REST {r.status_code}: {r.text}")
                continue
            probs = np.array([p[OUTPUT_PROBABILITIES] for p in r.json()["predictions"]])
            if not any(np.allclose(probs, answers[v][OUTPUT_PROBABILITIES], rtol=1e-5) for v in (1, 2)):
                failures.append("REST answer matches no version")
            counts[0] += 1

    threads = [threading.Thread(target=fn) for fn in (grpc_client, grpc_client, rest_client, rest_client)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        _publish(built_models.digits[2], base / "2")
        _wait_for(lambda: _states(rest, "digits").get(1, {}).get("state") == "END", what="version 1 unloaded")
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert failures == []
    assert seen_versions == {1, 2} and counts[0] > 20
    states = _states(rest, "digits")
    assert states[2]["state"] == "AVAILABLE" and states[1]["status"]["error_code"] == "OK"


def test_corrupt_versions_are_reported_and_never_replace_a_good_one(
    tmp_path, built_models, images, answers, server_factory, caplog
):
    base, server, rest = _serving_version_1(tmp_path, built_models, server_factory)
    # Version 2: a truncated saved_model.pb, as a half-finished copy leaves it.
    (base / "2").mkdir()
    data = (built_models.digits[2] / "saved_model.pb").read_bytes()
    (base / "2" / "saved_model.pb").write_bytes(data[: len(data) // 3])
    with caplog.at_level(logging.ERROR):
        _wait_for(lambda: _states(rest, "digits").get(2, {}).get("state") == "END", what="version 2 to fail")
    status = _states(rest, "digits")
    assert (
        status[2]["status"]["error_code"] != "OK" and "saved_model.pb" in status[2]["status"]["error_message"]
    )
    assert status[1]["state"] == "AVAILABLE"
    assert "Failed to load servable version {name: digits version: 2}" in caplog.text
    # Version 3: the graph without its variables/.
    (base / "3").mkdir()
    shutil.copy(built_models.digits[2] / "saved_model.pb", base / "3" / "saved_model.pb")
    _wait_for(lambda: _states(rest, "digits").get(3, {}).get("state") == "END", what="version 3 to fail")
    assert "variables" in _states(rest, "digits")[3]["status"]["error_message"]
    r = requests.post(f"{rest}/v1/models/digits:predict", json={"instances": images.tolist()}, timeout=10)
    assert [p[OUTPUT_CLASSES] for p in r.json()["predictions"]] == answers[1][OUTPUT_CLASSES].tolist()
    # The copy finishes: version 3 gets its variables and is retried, then replaces version 1.
    shutil.copytree(built_models.digits[2] / "variables", base / "3" / "variables")
    _wait_for(
        lambda: _states(rest, "digits")[3]["state"] == "AVAILABLE", what="version 3 to load after repair"
    )
    _wait_for(lambda: _states(rest, "digits")[1]["state"] == "END", what="version 1 to unload")
    r = requests.post(f"{rest}/v1/models/digits:predict", json={"instances": images.tolist()}, timeout=10)
    assert [p[OUTPUT_CLASSES] for p in r.json()["predictions"]] == answers[2][OUTPUT_CLASSES].tolist()


def test_only_a_corrupt_version_fails_startup(tmp_path, built_models, server_factory):
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "saved_model.pb").write_bytes(b"\x08garbage")
    with pytest.raises(StartupError, match="1 servable\\(s\\) did not become available"):
        server_factory(_config("m", tmp_path / "m"))


def test_warmup_records_are_replayed_and_a_bad_one_fails_the_load(
    tmp_path, built_models, server_factory, caplog
):
    base = tmp_path / "digits"
    shutil.copytree(built_models.digits[1], base / "1")
    write_warmup(base / "1", zero_batches([1, 2, 3]))
    with caplog.at_level(logging.INFO):
        server = server_factory(_config("digits", base))
    assert "Number of warmup records read: 3." in caplog.text
    rest = f"http://127.0.0.1:{server.rest_port}"
    shutil.copytree(built_models.digits[2], tmp_path / "staging")
    write_warmup(tmp_path / "staging", [np.zeros((1, 28, 5), np.uint8)])  # does not fit the signature
    os.rename(tmp_path / "staging", base / "2")
    _wait_for(
        lambda: _states(rest, "digits").get(2, {}).get("state") == "END", what="version 2 warmup failure"
    )
    assert "has shape [1,28,5]" in _states(rest, "digits")[2]["status"]["error_message"]
    assert _states(rest, "digits")[1]["state"] == "AVAILABLE"


def test_version_policies(tmp_path, built_models, server_factory):
    base = tmp_path / "digits"
    for version in (1, 2, 3):
        shutil.copytree(built_models.digits[1 + version % 2], base / str(version))
    server = server_factory(
        f'model_config_list {{ config {{ name: "latest2" base_path: "{base}" '
        f"model_version_policy {{ latest {{ num_versions: 2 }} }} }} "
        f'config {{ name: "pinned" base_path: "{base}" model_version_policy {{ specific {{ versions: 1 }} }} '
        f'version_labels {{ key: "stable" value: 1 }} }} }}'
    )
    rest = f"http://127.0.0.1:{server.rest_port}"
    assert sorted(_states(rest, "latest2")) == [2, 3]
    assert sorted(_states(rest, "pinned")) == [1]
    image = {"instances": np.zeros((1, 28, 28), np.uint8).tolist()}
    assert (
        requests.post(f"{rest}/v1/models/pinned/labels/stable:predict", json=image, timeout=5).status_code
        == 200
    )
    r = requests.post(f"{rest}/v1/models/latest2/versions/1:predict", json=image, timeout=5)
    assert r.status_code == 404 and "Specific(latest2, 1)" in r.json()["error"]


def test_model_config_file_is_polled(tmp_path, built_models, server_factory):
    shutil.copytree(built_models.digits[1], tmp_path / "a" / "1")
    shutil.copytree(built_models.odd, tmp_path / "b" / "1")
    config_file = tmp_path / "models.config"
    config_file.write_text(_config("a", tmp_path / "a"))
    from serving.config_files import read_model_server_config

    server = server_factory(
        config_file.read_text(),
        model_config=read_model_server_config(config_file),
        model_config_file=str(config_file),
        model_config_file_poll_wait_seconds=0.2,
    )
    rest = f"http://127.0.0.1:{server.rest_port}"
    config_file.write_text("model_config_list { this is not a config")  # ignored, the old config stays
    time.sleep(0.5)
    assert requests.get(f"{rest}/v1/models/a", timeout=5).status_code == 200
    config_file.write_text(_config("b", tmp_path / "b"))
    _wait_for(lambda: requests.get(f"{rest}/v1/models/b", timeout=5).status_code == 200, what="model b")
    _wait_for(
        lambda: (
            requests.post(
                f"{rest}/v1/models/a:predict", json={"instances": [[[0] * 28] * 28]}, timeout=5
            ).status_code
            == 404
        ),
        what="model a removed",
    )
    assert requests.get(f"{rest}/v1/models", timeout=5).json()["models"] == ["b"]
    _wait_for(lambda: requests.get(f"{rest}/v2/health/ready", timeout=5).status_code == 200, what="b ready")
    # A model without any version yet: the server stays live but is no longer ready.
    (tmp_path / "c").mkdir()
    config_file.write_text(
        f'model_config_list {{ config {{ name: "b" base_path: "{tmp_path / "b"}" }} '
        f'config {{ name: "c" base_path: "{tmp_path / "c"}" }} }}'
    )
    _wait_for(lambda: requests.get(f"{rest}/v2/health/ready", timeout=5).status_code == 503, what="not ready")
    assert requests.get(f"{rest}/v2/health/ready", timeout=5).json() == {"ready": False}
    assert requests.get(f"{rest}/v2/health/live", timeout=5).status_code == 200


def _predicted_classes(rest, images):
    r = requests.post(f"{rest}/v1/models/digits:predict", json={"instances": images.tolist()}, timeout=10)
    assert r.status_code == 200, r.text
    return [p[OUTPUT_CLASSES] for p in r.json()["predictions"]]


def test_only_ascii_digit_names_within_int64_are_versions(tmp_path):
    names = ["1", "007", str(2**63 - 1), str(2**63), "²", "③", "١", "-2", "+3", "1.0", "v4"]
    for name in names:
        (tmp_path / name).mkdir()
    (tmp_path / "5").write_text("a file, not a version directory")
    assert sorted(list_version_dirs(tmp_path)) == [1, 7, 2**63 - 1]


def test_unicode_digit_folders_are_ignored_and_polling_goes_on(
    tmp_path, built_models, images, answers, server_factory
):
    base = tmp_path / "digits"
    base.mkdir()
    _publish(built_models.digits[1], base / "1")
    for name in ("²", "③", "١"):  # str.isdigit() holds for each; int() fails on two and reads '١' as 1
        shutil.copytree(built_models.digits[2], base / name)
    server = server_factory(_config("digits", base))
    rest = f"http://127.0.0.1:{server.rest_port}"
    assert list(_states(rest, "digits")) == [1]
    assert _predicted_classes(rest, images) == answers[1][OUTPUT_CLASSES].tolist()
    _publish(built_models.digits[2], base / "2")
    _wait_for(lambda: _states(rest, "digits")[1]["state"] == "END", what="version 2 to replace version 1")
    assert _predicted_classes(rest, images) == answers[2][OUTPUT_CLASSES].tolist()


def test_a_missing_base_path_keeps_the_served_versions(
    tmp_path, built_models, images, answers, server_factory, caplog
):
    base, server, rest = _serving_version_1(tmp_path, built_models, server_factory)
    models = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))

    def reload(base_path):
        request = model_management_pb2.ReloadConfigRequest(
            config=parse_model_server_config(_config("digits", base_path))
        )
        return models.HandleReloadConfigRequest(request, timeout=30).status.error_code

    with caplog.at_level(logging.ERROR):
        os.rename(base, tmp_path / "moved")  # the base path vanishes: each poll fails, nothing unloads
        _wait_for(
            lambda: caplog.text.count(f"Could not find base path {base} for servable digits") >= 2,
            what="two failed polls",
        )
        assert _states(rest, "digits")[1]["state"] == "AVAILABLE"
        assert _predicted_classes(rest, images) == answers[1][OUTPUT_CLASSES].tolist()
        # A reload with a typo in base_path succeeds, as TF Serving's does, and version 1 keeps serving.
        assert reload(tmp_path / "digitz") == 0
        assert f"Could not find base path {tmp_path / 'digitz'} for servable digits" in caplog.text
    assert _states(rest, "digits")[1]["state"] == "AVAILABLE"
    assert _predicted_classes(rest, images) == answers[1][OUTPUT_CLASSES].tolist()
    os.rename(tmp_path / "moved", base)
    assert reload(base) == 0
    _publish(built_models.digits[2], base / "2")  # polling goes on as before
    _wait_for(lambda: _states(rest, "digits")[1]["state"] == "END", what="version 2 to replace version 1")
    assert _predicted_classes(rest, images) == answers[2][OUTPUT_CLASSES].tolist()


def test_a_label_on_a_version_that_is_not_available_fails_startup(tmp_path, built_models, server_factory):
    shutil.copytree(built_models.digits[1], tmp_path / "e" / "1")
    with pytest.raises(StartupError) as error:
        server_factory(_config("e", tmp_path / "e", "version_labels { key: 'stable' value: 9 }"))
    assert str(error.value) == (
        "Request to assign label to version 9 of model e, which is not currently available for inference"
    )
