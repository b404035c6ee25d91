"""Warmup files that are not what they should be fail that version's load, as TF Serving, never the server."""

from __future__ import annotations

import os
import shutil
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow.core.protobuf import error_codes_pb2
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from client.contract import INPUT_NAME, OUTPUT_CLASSES
from serving.server import StartupError
from tests.serving.test_metrics import METRICS, parse_exposition
from tests.serving.warmup_files import (
    digits_request,
    warmup_file,
    write_warmup,
    write_warmup_requests,
    zero_batches,
)


def _config(base):
    return f'model_config_list {{ config {{ name: "digits" base_path: "{base}" }} }}'


def _version_status(rest, version):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        states = requests.get(f"{rest}/v1/models/digits", timeout=5).json()["model_version_status"]
        for state in states:
            if int(state["version"]) == version and state["state"] == "END":
                return state["status"]
        time.sleep(0.05)
    raise AssertionError(f"version {version} never ended")


def test_a_file_that_is_not_tfrecord_fails_the_version_with_data_loss(tmp_path, built_models, server_factory):
    base = tmp_path / "digits"
    shutil.copytree(built_models.digits[1], base / "1")
    server = server_factory(_config(base))
    rest = f"http://127.0.0.1:{server.rest_port}"
    staging = tmp_path / "staging"
    shutil.copytree(built_models.digits[2], staging)
    warmup_file(staging).write_bytes(b"this is not a TFRecord file" * 10)
    os.rename(staging, base / "2")
    status = _version_status(rest, 2)
    assert status["error_code"] == "DATA_LOSS"
    assert "Please verify your warmup data is in TFRecord format." in status["error_message"]
    assert "function_node" not in status["error_message"]
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:  # version 1 still serves
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "digits"
        request.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto(np.zeros((1, 28, 28), np.uint8)))
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    assert response.model_spec.version.value == 1
    assert tf.make_ndarray(response.outputs[OUTPUT_CLASSES]).shape == (1,)
    samples = parse_exposition(requests.get(f"{rest}{METRICS}", timeout=5).text)
    failed = [key for key in samples if key.startswith(":tensorflow:serving:model_warmup_latency_count")]
    assert any(f'model_path="{base / "2"}",status="DATA_LOSS: ' in key for key in failed), failed


def test_a_record_that_is_not_a_prediction_log_fails_the_load(tmp_path, built_models, server_factory):
    base = tmp_path / "digits"
    shutil.copytree(built_models.digits[1], base / "1")
    with tf.io.TFRecordWriter(str(warmup_file(base / "1"))) as writer:
        writer.write(b"\xff\xff\xff not a PredictionLog")
    message = "Failed to parse warmup record 1 from .*tf_serving_warmup_requests"
    with pytest.raises(StartupError, match=message):
        server_factory(_config(base))


def test_more_than_1000_records_fail_the_load(tmp_path, built_models, server_factory):
    base = tmp_path / "digits"
    shutil.copytree(built_models.digits[1], base / "1")
    write_warmup(base / "1", zero_batches([1] * 1001))
    with pytest.raises(StartupError, match=r"Number of warmup records exceeds the maximum \(1000\) at "):
        server_factory(_config(base))


def test_a_warmup_request_for_an_unknown_signature_reports_failed_precondition(
    tmp_path, built_models, server_factory
):
    # TF Serving's RunPredict answers FAILED_PRECONDITION for an unknown signature key, and the failed
    # load's own status is what GetModelStatus reports -- not a blanket INVALID_ARGUMENT.
    base = tmp_path / "digits"
    shutil.copytree(built_models.digits[1], base / "1")
    server = server_factory(_config(base))
    rest = f"http://127.0.0.1:{server.rest_port}"
    staging = tmp_path / "staging"
    shutil.copytree(built_models.digits[2], staging)
    write_warmup_requests(staging, [digits_request(zero_batches([1])[0], "no_such_signature")])
    os.rename(staging, base / "2")
    status = _version_status(rest, 2)
    assert status["error_code"] == "FAILED_PRECONDITION"
    assert status["error_message"] == 'Serving signature key "no_such_signature" not found.'
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        status_request = get_model_status_pb2.GetModelStatusRequest()
        status_request.model_spec.name = "digits"
        answer = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status_request, timeout=30)
    by_version = {item.version: item for item in answer.model_version_status}
    assert by_version[2].state == get_model_status_pb2.ModelVersionStatus.END
    assert by_version[2].status.error_code == error_codes_pb2.FAILED_PRECONDITION
    assert by_version[1].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert by_version[1].status.error_code == error_codes_pb2.OK
