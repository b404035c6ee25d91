"""TF Serving warmup files (`assets.extra/tf_serving_warmup_requests`) written for the tests."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from client.contract import INPUT_NAME


def warmup_file(version_dir: Path) -> Path:
    """The warmup file's path in a version folder, its `assets.extra` folder made."""
    path = version_dir / "assets.extra" / "tf_serving_warmup_requests"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def digits_request(images: np.ndarray, signature_name: str = "") -> predict_pb2.PredictRequest:
    """A Predict request to the model "digits" with `images` as its input."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "digits"
    request.model_spec.signature_name = signature_name
    request.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto(images))
    return request


def write_warmup_requests(version_dir: Path, requests: Iterable[predict_pb2.PredictRequest]) -> None:
    """One PredictionLog record per request, as TF Serving's warmup file holds them."""
    with tf.io.TFRecordWriter(str(warmup_file(version_dir))) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def write_warmup(version_dir: Path, images_list: Iterable[np.ndarray]) -> None:
    """A warmup file of one Predict request per batch of images."""
    write_warmup_requests(version_dir, (digits_request(images) for images in images_list))


def zero_batches(row_counts: Iterable[int]) -> list[np.ndarray]:
    """Blank 28×28 uint8 batches of the given sizes."""
    return [np.zeros((rows, 28, 28), np.uint8) for rows in row_counts]
