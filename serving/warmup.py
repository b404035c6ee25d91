"""Replay assets.extra/tf_serving_warmup_requests before a version becomes AVAILABLE (as TF Serving)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from tensorflow_serving.apis import prediction_log_pb2

from serving import inference
from serving.errors import ServingError
from serving.metrics import Metrics
from serving.servable import Servable
from serving.tensor_codec import to_ndarray

log = logging.getLogger(__name__)

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000


def run_warmup(servable: Servable, iterations: int = 1, metrics: Metrics | None = None) -> int:
    """Replay every warmup record `iterations` times; returns the record count (0 if there is no file).

    Every outcome is one `model_warmup_latency{model_path, status}` sample, as TF Serving records it.
    """
    path = servable.path / WARMUP_FILE
    if not path.is_file():
        log.info("No warmup data file found at %s", path)
        return 0
    started = time.monotonic()
    try:
        count = _replay_file(servable, path, iterations)
    except Exception as error:
        if metrics is not None:
            metrics.record_warmup(str(servable.path), _status_text(error), time.monotonic() - started)
        raise
    if metrics is not None:
        metrics.record_warmup(str(servable.path), "OK", time.monotonic() - started)
    log.info(
        "Finished reading warmup data for model at %s. Number of warmup records read: %d.",
        servable.path,
        count,
    )
    return count


def _replay_file(servable: Servable, path: Path, iterations: int) -> int:
    import tensorflow as tf

    records = []
    for raw in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        records.append(raw)
        if len(records) > MAX_WARMUP_RECORDS:
            raise ValueError(f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}")
    for raw in records:
        entry = prediction_log_pb2.PredictionLog.FromString(raw)
        for _ in range(max(1, iterations)):
            _replay(servable, entry)
    return len(records)


def _status_text(error: Exception) -> str:
    """TF's Status::ToString for a failed warmup: "<CODE>: <message>"."""
    from tensorflow.core.protobuf import error_codes_pb2

    if isinstance(error, ServingError):
        code, message = error.code.name, error.message
    elif isinstance(getattr(error, "error_code", None), int):
        code, message = error_codes_pb2.Code.Name(error.error_code), getattr(error, "message", str(error))
    else:
        code, message = "UNKNOWN", str(error)
    first_line = (message.strip().splitlines() or [""])[0]
    return f"{code}: {first_line}"


def _replay(servable: Servable, entry: prediction_log_pb2.PredictionLog) -> None:
    kind = entry.WhichOneof("log_type")
    if kind == "predict_log":
        request = entry.predict_log.request
        signature = servable.signature(request.model_spec.signature_name)
        inputs = {alias: to_ndarray(proto, alias) for alias, proto in request.inputs.items()}
        servable.predict(signature, inputs, list(request.output_filter))
    elif kind == "classify_log":
        request = entry.classify_log.request
        inference.classify(
            servable, request.model_spec.signature_name, inference.examples_from_input(request.input)
        )
    elif kind == "regress_log":
        request = entry.regress_log.request
        inference.regress(
            servable, request.model_spec.signature_name, inference.examples_from_input(request.input)
        )
    elif kind == "multi_inference_log":
        inference.multi_inference(servable, entry.multi_inference_log.request)
    else:
        raise ValueError(f"Unsupported log_type for warmup: {kind}")
