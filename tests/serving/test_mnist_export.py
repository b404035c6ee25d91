"""The trainer's real export (CNN, warmup records, two versions) served by digits-serve, over both APIs."""

from __future__ import annotations

import logging

import grpc
import numpy as np
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from client.contract import (
    DEFAULT_MODEL_NAME,
    IMAGE_SIZE,
    INPUT_NAME,
    NUM_CLASSES,
    OUTPUT_CLASSES,
    OUTPUT_PROBABILITIES,
    SIGNATURE_NAME,
)


def test_trainer_export_serves_the_same_answers_as_in_process(
    mnist_model_dir, mnist_data, server_factory, caplog
):
    with caplog.at_level(logging.INFO):
        server = server_factory(
            f'model_config_list {{ config {{ name: "{DEFAULT_MODEL_NAME}" '
            f'base_path: "{mnist_model_dir}" model_version_policy {{ all {{}} }} }} }}'
        )
    assert "Number of warmup records read" in caplog.text  # the export's warmup file was replayed
    images = mnist_data.x_test[:200]
    rest = f"http://127.0.0.1:{server.rest_port}/v1/models/{DEFAULT_MODEL_NAME}"
    stub = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    )
    versions = sorted(int(s["version"]) for s in requests.get(rest, timeout=5).json()["model_version_status"])
    assert versions == [1, 2]
    for version in versions:
        loaded = tf.saved_model.load(str(mnist_model_dir / str(version)))
        want = loaded.signatures[SIGNATURE_NAME](**{INPUT_NAME: tf.constant(images)})
        r = requests.post(f"{rest}/versions/{version}:predict", json={"inputs": images.tolist()}, timeout=30)
        assert r.status_code == 200, r.text
        got = r.json()["outputs"]
        np.testing.assert_allclose(got[OUTPUT_PROBABILITIES], want[OUTPUT_PROBABILITIES].numpy(), atol=1e-6)
        assert got[OUTPUT_CLASSES] == want[OUTPUT_CLASSES].numpy().tolist()
        request = predict_pb2.PredictRequest()
        request.model_spec.name = DEFAULT_MODEL_NAME
        request.model_spec.version.value = version
        request.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto(images))
        response = stub.Predict(request, timeout=30)
        probabilities = tf.make_ndarray(response.outputs[OUTPUT_PROBABILITIES])
        assert probabilities.shape == (len(images), NUM_CLASSES)
        np.testing.assert_allclose(probabilities, want[OUTPUT_PROBABILITIES].numpy(), atol=1e-6)
        accuracy = np.mean(tf.make_ndarray(response.outputs[OUTPUT_CLASSES]) == mnist_data.y_test[:200])
        assert accuracy > 0.85
    metadata = requests.get(f"{rest}/metadata", timeout=5).json()["metadata"]["signature_def"][
        "signature_def"
    ]
    spec = metadata[SIGNATURE_NAME]["inputs"][INPUT_NAME]
    assert spec["dtype"] == "DT_UINT8"
    assert [d["size"] for d in spec["tensor_shape"]["dim"]] == ["-1", str(IMAGE_SIZE), str(IMAGE_SIZE)]
