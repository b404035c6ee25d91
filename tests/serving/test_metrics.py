"""The Prometheus endpoint over real sockets: TF Serving's series names, labels and label values."""

from __future__ import annotations

import re
import shutil

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from client.contract import INPUT_NAME
from serving.batching import BatchingConfig
from tests.serving.warmup_files import write_warmup, zero_batches

METRICS = "/monitoring/prometheus/metrics"
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def parse_exposition(text: str) -> dict[str, float]:
    """Check the text format (every sample under a `# TYPE` line of its own family) and index it."""
    types: dict[str, str] = {}
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in types, f"second TYPE line for {name}"
            types[name] = kind
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name = match.group(1)
        family = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and types.get(name[: -len(suffix)]) == "histogram":
                family = name[: -len(suffix)]
        assert family in types, f"sample {name} has no # TYPE line of its own"
        samples[name + (match.group(2) or "")] = float(match.group(3))
    return samples


@pytest.fixture
def monitored_server(tmp_path, built_models, server_factory):
    base = tmp_path / "digits"
    shutil.copytree(built_models.digits[1], base / "1")
    write_warmup(base / "1", zero_batches([1, 2]))
    batching = BatchingConfig(max_batch_size=8, batch_timeout_micros=1000, num_batch_threads=2)
    server = server_factory(
        f'model_config_list {{ config {{ name: "digits" base_path: "{base}" }} }}', batching=batching
    )
    return server, base / "1"


def test_request_count_status_is_the_canonical_code_and_only_inference_rpcs_count(monitored_server):
    server, version_dir = monitored_server
    rest = f"http://127.0.0.1:{server.rest_port}"
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        model_service = model_service_pb2_grpc.ModelServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "digits"
        request.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto(np.zeros((2, 28, 28), np.uint8)))
        predict.Predict(request, timeout=30)
        predict.Predict(request, timeout=30)
        bad = predict_pb2.PredictRequest()
        bad.model_spec.name = "digits"
        bad.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto(np.zeros((1, 28, 5), np.uint8)))
        with pytest.raises(grpc.RpcError) as invalid:
            predict.Predict(bad, timeout=30)
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        unknown = predict_pb2.PredictRequest()
        unknown.CopyFrom(request)
        unknown.model_spec.name = "nope"
        with pytest.raises(grpc.RpcError) as missing:
            predict.Predict(unknown, timeout=30)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        # Metadata and status calls are not requests in TF Serving's request_count.
        metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        metadata.model_spec.name = "digits"
        predict.GetModelMetadata(metadata, timeout=30)
        status_request = get_model_status_pb2.GetModelStatusRequest()
        status_request.model_spec.name = "digits"
        model_service.GetModelStatus(status_request, timeout=30)
    r = requests.post(f"{rest}/v1/models/digits:predict", data=b'{"instances": [[1, 2', timeout=30)
    assert r.status_code == 400
    r = requests.get(f"{rest}{METRICS}", timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    samples = parse_exposition(r.text)
    count = ":tensorflow:serving:request_count"
    assert samples[f'{count}{{model_name="digits",status="OK"}}'] == 2
    assert samples[f'{count}{{model_name="digits",status="INVALID_ARGUMENT"}}'] == 2  # one gRPC, one REST
    assert samples[f'{count}{{model_name="nope",status="NOT_FOUND"}}'] == 1
    assert not any('status="ERROR"' in key for key in samples)
    latency = ':tensorflow:serving:request_latency_count{model_name="digits",API="Predict",entrypoint="GRPC"}'
    assert samples[latency] == 2  # successes only
    assert not any("GetModel" in key for key in samples)
    # A SavedModel load attempt, as TF's loader counts it, and the warmup that followed it.
    path = str(version_dir)
    load = f':tensorflow:cc:saved_model:load_attempt_count{{model_path="{path}",status="success"}}'
    assert samples[load] == 1
    warmup = f':tensorflow:serving:model_warmup_latency_count{{model_path="{path}",status="OK"}}'
    assert samples[warmup] == 1
    # Batching: TF Serving's batching-session series.
    assert samples[":tensorflow:serving:batching_session:wrapped_run_count{}"] >= 4  # 2 warmup + 2 predicts
    queued = ":tensorflow:serving:batching_session:queuing_latency_count"
    assert samples[queued + '{thread_pool_name="model_server_batch_threads"}'] >= 4


def test_latency_buckets_are_tf_servings_and_cumulative(monitored_server):
    server, _ = monitored_server
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "digits"
        request.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto(np.zeros((1, 28, 28), np.uint8)))
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    text = requests.get(f"http://127.0.0.1:{server.rest_port}{METRICS}", timeout=30).text
    prefix = ':tensorflow:serving:request_latency_bucket{model_name="digits",API="Predict",entrypoint="GRPC",'
    prefix += 'le="'
    buckets = [line for line in text.splitlines() if line.startswith(prefix)]
    bounds = [line[len(prefix) :].split('"')[0] for line in buckets]
    assert bounds[:4] == ["10", "18", "32.4", "58.32"] and bounds[-1] == "+Inf" and len(bounds) == 34
    counts = [int(line.rsplit(" ", 1)[1]) for line in buckets]
    assert counts == sorted(counts) and counts[-1] == 1
