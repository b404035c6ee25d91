"""Replay assets.extra/tf_serving_warmup_requests before a version becomes AVAILABLE (as TF Serving).

As TF Serving's saved_model_warmup_util.cc: records are read one at a time (never the whole file at
once), each is replayed `iterations` times, more than 1000 records fail the load (INVALID_ARGUMENT), a
file that is not TFRecord fails it with DATA_LOSS, a record that is not a PredictionLog with
INVALID_ARGUMENT; every outcome is one `model_warmup_latency{model_path, status}` sample.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from google.protobuf.message import DecodeError
from tensorflow_serving.apis import prediction_log_pb2

from serving import inference
from serving.errors import InvalidArgument, ServingError
from serving.metrics import Metrics
from serving.servable import Servable
from serving.tensor_codec import to_ndarray

log = logging.getLogger(__name__)

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000
_TF_NOISE = re.compile(r"\{\{function_node [^}]*\}\}|\s*\[Op:.*$")  # tf.data's wrapper text around the error


def run_warmup(servable: Servable, iterations: int = 1, metrics: Metrics | None = None) -> int:
    """Replay every warmup record `iterations` times; returns the record count (0 if there is no file)."""
    path = servable.path / WARMUP_FILE
    if not path.exists():
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
        path,
        count,
    )
    return count


def _replay_file(servable: Servable, path: Path, iterations: int) -> int:
    import tensorflow as tf

    if not path.is_file():
        raise InvalidArgument(f"Warmup data file {path} is not a file")
    count = 0
    records = iter(tf.data.TFRecordDataset(str(path)))
    while True:
        try:
            raw = next(records)
        except StopIteration:
            return count
        except tf.errors.DataLossError as error:
            message = _TF_NOISE.sub("", (error.message or str(error)).strip().splitlines()[0]).strip()
            raise tf.errors.DataLossError(
                None, None, f"{message}. Please verify your warmup data is in TFRecord format."
            ) from None
        count += 1
        if count > MAX_WARMUP_RECORDS:
            raise InvalidArgument(
                f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}"
            )
        try:
            entry = prediction_log_pb2.PredictionLog.FromString(raw.numpy())
        except DecodeError:
            raise InvalidArgument(f"Failed to parse warmup record {count} from {path}") from None
        for _ in range(max(1, iterations)):
            _replay(servable, entry)


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
        raise InvalidArgument(f"Unsupported log_type for warmup: {kind or ''}")
