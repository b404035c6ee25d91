"""Server-side batching: merged model calls, each caller gets exactly its own rows, bounded queue."""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from client.contract import INPUT_NAME, OUTPUT_PROBABILITIES
from serving.batching import BatchingConfig, BatchQueue
from serving.errors import DeadlineExceeded, InvalidArgument, ServingError, Unavailable


@pytest.fixture
def batched_server(tmp_path, built_models, server_factory):
    shutil.copytree(built_models.digits[1], tmp_path / "digits" / "1")
    config = BatchingConfig(
        max_batch_size=16,
        batch_timeout_micros=5000,
        max_enqueued_batches=1000,
        num_batch_threads=2,
        allowed_batch_sizes=(4, 8, 16),
    )
    return server_factory(
        f'model_config_list {{ config {{ name: "digits" base_path: "{tmp_path / "digits"}" }} }}',
        batching=config,
    )


def test_concurrent_callers_get_exactly_their_own_rows(batched_server, built_models):
    rng = np.random.default_rng(7)
    requests_images = [rng.integers(0, 256, size=(1 + i % 3, 28, 28), dtype=np.uint8) for i in range(96)]
    loaded = tf.saved_model.load(str(built_models.digits[1]))
    expected = [
        loaded.signatures["serving_default"](**{INPUT_NAME: tf.constant(x)})[OUTPUT_PROBABILITIES].numpy()
        for x in requests_images
    ]
    channel = grpc.insecure_channel(f"127.0.0.1:{batched_server.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    rest = f"http://127.0.0.1:{batched_server.rest_port}"
    start = threading.Barrier(32)

    def call(index):
        if index < 32:
            start.wait()  # the first wave arrives together, so batches must form
        images = requests_images[index]
        if index % 2:
            r = requests.post(
                f"{rest}/v1/models/digits:predict", json={"inputs": images.tolist()}, timeout=30
            )
            assert r.status_code == 200, r.text
            return np.array(r.json()["outputs"][OUTPUT_PROBABILITIES])
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "digits"
        request.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto(images))
        # Every fourth gRPC call has no deadline at all, as many clients send.
        response = stub.Predict(request, timeout=None if index % 4 == 0 else 30)
        return tf.make_ndarray(response.outputs[OUTPUT_PROBABILITIES])

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(call, range(len(requests_images))))
    for got, want in zip(results, expected, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)  # merged batches round differently
    metrics = requests.get(f"{rest}/monitoring/prometheus/metrics", timeout=5).text
    batches = int(metrics.split(":tensorflow:serving:batching_session:wrapped_run_count{} ")[1].split()[0])
    rows = int(metrics.split("\n:digits:serving:batching:rows ")[1].split()[0])
    assert rows == sum(len(x) for x in requests_images)
    assert batches < len(requests_images)  # requests were merged
    channel.close()


def test_padding_to_allowed_batch_sizes_and_row_split():
    seen_sizes: list[int] = []

    def run(inputs):
        seen_sizes.append(len(inputs["x"]))
        return {"y": inputs["x"] * 10, "n": np.arange(len(inputs["x"]))}

    queue = BatchQueue(
        run,
        BatchingConfig(
            max_batch_size=8,
            batch_timeout_micros=20000,
            max_enqueued_batches=10,
            num_batch_threads=1,
            allowed_batch_sizes=(2, 8),
        ),
    )
    inputs = [np.full((1 + i % 2, 3), i, np.float32) for i in range(5)]
    with ThreadPoolExecutor(5) as pool:
        results = list(pool.map(lambda x: queue.run({"x": x}, timeout=10), inputs))
    queue.stop()
    for x, result in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(result["y"], x * 10)
        assert len(result["n"]) == len(x)
    assert set(seen_sizes) <= {2, 8}


def test_requests_that_cannot_be_stacked_are_not_merged():
    """A signature with a free inner dimension ([None, None]): rows of width 3 and 5 never share a batch."""
    batch_shapes: list[tuple[int, ...]] = []

    def run(inputs):
        batch_shapes.append(inputs["x"].shape)
        return {"total": inputs["x"].sum(axis=1)}

    queue = BatchQueue(
        run,
        BatchingConfig(
            max_batch_size=16, batch_timeout_micros=50_000, max_enqueued_batches=10, num_batch_threads=1
        ),
    )
    inputs = [np.full((1, 3 + 2 * (i % 2)), i, np.float32) for i in range(6)]  # widths 3, 5, 3, 5, ...
    start = threading.Barrier(len(inputs))

    def call(x):
        start.wait()
        return queue.run({"x": x}, timeout=10)

    with ThreadPoolExecutor(len(inputs)) as pool:
        results = list(pool.map(call, inputs))
    queue.stop()
    for x, result in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(result["total"], x.sum(axis=1))
    assert {shape[1] for shape in batch_shapes} == {3, 5}


def test_full_queue_is_unavailable_and_oversized_task_is_invalid():
    release = threading.Event()
    running = threading.Event()

    def slow(inputs):
        running.set()
        release.wait(10)
        return {"y": inputs["x"]}

    queue = BatchQueue(
        slow,
        BatchingConfig(max_batch_size=2, batch_timeout_micros=0, max_enqueued_batches=1, num_batch_threads=1),
    )
    pool = ThreadPoolExecutor(2)
    first = pool.submit(queue.run, {"x": np.ones((2, 1))}, 10)  # occupies the only worker
    running.wait(5)
    second = pool.submit(queue.run, {"x": np.ones((2, 1))}, 10)  # fills the only queue slot
    import time

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not queue._batches:
        time.sleep(0.01)
    with pytest.raises(Unavailable, match="queue to which this task was submitted is full"):
        queue.run({"x": np.ones((2, 1))}, 10)
    with pytest.raises(InvalidArgument, match="Task size 3 is larger than maximum input batch size 2"):
        queue.run({"x": np.ones((3, 1))}, 10)
    release.set()
    assert first.result(10)["y"].shape == (2, 1) and second.result(10)["y"].shape == (2, 1)
    queue.stop()
    pool.shutdown()


def _one_slot_server(tmp_path, built_models, server_factory):
    """A server of model "digits" whose batch queue holds one batch of one image: easy to fill."""
    shutil.copytree(built_models.digits[1], tmp_path / "digits" / "1")
    config = BatchingConfig(
        max_batch_size=1, batch_timeout_micros=0, max_enqueued_batches=1, num_batch_threads=1
    )
    return server_factory(
        f'model_config_list {{ config {{ name: "digits" base_path: "{tmp_path / "digits"}" }} }}',
        batching=config,
    )


def test_rest_returns_503_when_the_batch_queue_is_full(tmp_path, built_models, server_factory):
    server = _one_slot_server(tmp_path, built_models, server_factory)
    rest = f"http://127.0.0.1:{server.rest_port}"
    body = {"instances": np.zeros((1, 28, 28), np.uint8).tolist()}
    with ThreadPoolExecutor(16) as pool:
        responses = list(
            pool.map(
                lambda _: requests.post(f"{rest}/v1/models/digits:predict", json=body, timeout=30), range(64)
            )
        )
    too_big = requests.post(
        f"{rest}/v1/models/digits:predict",
        json={"instances": np.zeros((2, 28, 28), np.uint8).tolist()},
        timeout=30,
    )
    assert too_big.status_code == 400
    assert too_big.json()["error"] == "Task size 2 is larger than maximum input batch size 1"
    codes = {r.status_code for r in responses}
    assert codes == {200, 503}  # 16 callers on a one-slot queue: some served, some turned away
    for r in responses:
        if r.status_code == 503:
            assert "queue" in r.json()["error"]
        else:
            assert len(r.json()["predictions"]) == 1


def test_large_batch_splitting_runs_execution_sized_batches_and_reassembles_rows_in_order():
    """With splitting, requests up to max_batch_size, model calls of at most max_execution_batch_size."""
    seen_sizes: list[int] = []
    lock = threading.Lock()

    def run(inputs):
        with lock:
            seen_sizes.append(len(inputs["x"]))
        return {"y": inputs["x"] * 2}

    queue = BatchQueue(
        run,
        BatchingConfig(
            max_batch_size=10,
            batch_timeout_micros=2000,
            max_enqueued_batches=100,
            num_batch_threads=2,
            enable_large_batch_splitting=True,
            max_execution_batch_size=4,
        ),
    )
    inputs = [
        np.arange(start, start + rows, dtype=np.float32)[:, None]
        for start, rows in [(0, 10), (100, 3), (200, 7), (300, 1), (400, 10), (500, 4)]
    ]
    with ThreadPoolExecutor(len(inputs)) as pool:
        results = list(pool.map(lambda x: queue.run({"x": x}, timeout=10), inputs))
    queue.stop()
    for x, result in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(result["y"], x * 2)  # every row back, in its order
    assert max(seen_sizes) <= 4 and sum(seen_sizes) == sum(len(x) for x in inputs)
    with pytest.raises(InvalidArgument, match="Task size 11 is larger than maximum input batch size 10"):
        BatchQueue(run, BatchingConfig(max_batch_size=10, enable_large_batch_splitting=True)).run(
            {"x": np.zeros((11, 1), np.float32)}, 1
        )


def test_large_batch_splitting_from_a_tf_serving_parameters_file_over_grpc(
    tmp_path, built_models, server_factory
):
    """A parameters file TF Serving accepts (allowed sizes end at max_execution_batch_size) is served."""
    from serving.config_files import read_batching_parameters

    params_file = tmp_path / "batching.config"
    params_file.write_text(
        "max_batch_size { value: 64 }\nbatch_timeout_micros { value: 1000 }\n"
        "enable_large_batch_splitting { value: true }\nmax_execution_batch_size { value: 8 }\n"
        "allowed_batch_sizes: 4\nallowed_batch_sizes: 8\n"
    )
    config = BatchingConfig.from_proto(read_batching_parameters(params_file), default_threads=2)
    assert (config.max_batch_size, config.execution_batch_size) == (64, 8)
    shutil.copytree(built_models.digits[1], tmp_path / "digits" / "1")
    server = server_factory(
        f'model_config_list {{ config {{ name: "digits" base_path: "{tmp_path / "digits"}" }} }}',
        batching=config,
    )
    images = np.random.default_rng(3).integers(0, 256, size=(21, 28, 28), dtype=np.uint8)
    loaded = tf.saved_model.load(str(built_models.digits[1]))
    want = loaded.signatures["serving_default"](**{INPUT_NAME: tf.constant(images)})[OUTPUT_PROBABILITIES]
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "digits"
        request.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto(images))
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    got = tf.make_ndarray(response.outputs[OUTPUT_PROBABILITIES])
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-6)
    metrics = requests.get(
        f"http://127.0.0.1:{server.rest_port}/monitoring/prometheus/metrics", timeout=5
    ).text
    assert int(metrics.split(":tensorflow:serving:batching_session:wrapped_run_count{} ")[1].split()[0]) >= 3


def test_a_request_whose_caller_gave_up_is_never_run_and_frees_its_queue_slot():
    release = threading.Event()
    running = threading.Event()
    seen: list[float] = []

    def slow(inputs):
        seen.extend(inputs["x"][:, 0].tolist())
        running.set()
        release.wait(10)
        return {"y": inputs["x"]}

    queue = BatchQueue(
        slow,
        BatchingConfig(max_batch_size=1, batch_timeout_micros=0, max_enqueued_batches=1, num_batch_threads=1),
    )
    pool = ThreadPoolExecutor(2)
    first = pool.submit(queue.run, {"x": np.full((1, 1), 1.0)}, 10)  # occupies the only worker
    assert running.wait(5)
    with pytest.raises(DeadlineExceeded):
        queue.run({"x": np.full((1, 1), 2.0)}, 0.2)  # queued behind it; its caller leaves
    third = pool.submit(queue.run, {"x": np.full((1, 1), 3.0)}, 10)  # the slot it held is free again
    release.set()
    assert first.result(10)["y"][0, 0] == 1.0 and third.result(10)["y"][0, 0] == 3.0
    queue.stop()
    pool.shutdown()
    assert seen == [1.0, 3.0]  # the abandoned request never reached the model


def test_num_batch_threads_bounds_running_batches_over_every_queue():
    """TF Serving's one shared scheduler: num_batch_threads batches at once over all models, not per model."""
    slots = threading.BoundedSemaphore(1)
    state = {"running": 0, "most": 0}
    lock = threading.Lock()

    def run(inputs):
        with lock:
            state["running"] += 1
            state["most"] = max(state["most"], state["running"])
        threading.Event().wait(0.02)
        with lock:
            state["running"] -= 1
        return {"y": inputs["x"]}

    config = BatchingConfig(max_batch_size=1, max_enqueued_batches=100, num_batch_threads=1)
    queues = [BatchQueue(run, config, name=f"q{i}", slots=slots) for i in range(3)]
    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda i: queues[i % 3].run({"x": np.full((1, 1), i)}, 10), range(24)))
    for queue in queues:
        queue.stop()
    assert [r["y"][0, 0] for r in results] == list(range(24))
    assert state["most"] == 1


def test_an_unloaded_version_answers_in_flight_requests_without_starting_new_queue_threads(built_models):
    from serving.servable import Servable

    servable = Servable("digits", 1, built_models.digits[1])
    servable.load()
    config = BatchingConfig(max_batch_size=8, num_batch_threads=2)
    servable.enable_batching(lambda run_fn: BatchQueue(run_fn, config, name="closed-check"))
    signature = servable.signature("")
    images = np.zeros((2, 28, 28), np.uint8)
    before = servable.predict(signature, {INPUT_NAME: images})
    servable.close()  # unloaded while a request still holds it
    after = servable.predict(signature, {INPUT_NAME: images})
    np.testing.assert_allclose(after[OUTPUT_PROBABILITIES], before[OUTPUT_PROBABILITIES], rtol=1e-6)
    assert not [t for t in threading.enumerate() if t.name.startswith("closed-check")]


def test_a_split_request_whose_pieces_cannot_be_joined_fails_instead_of_hanging():
    """Outputs whose inner size follows the batch (here [n, n]) cannot be put back together: an error."""
    queue = BatchQueue(
        lambda inputs: {"y": np.zeros((len(inputs["x"]), len(inputs["x"])), np.float32)},
        BatchingConfig(
            max_batch_size=6,
            enable_large_batch_splitting=True,
            max_execution_batch_size=4,
            num_batch_threads=1,
        ),
    )
    with pytest.raises(ServingError, match="cannot join the outputs of a split request"):
        queue.run({"x": np.zeros((6, 1), np.float32)}, timeout=10)
    queue.stop()


def test_grpc_answers_unavailable_when_the_batch_queue_is_full(tmp_path, built_models, server_factory):
    server = _one_slot_server(tmp_path, built_models, server_factory)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "digits"
    request.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto(np.zeros((1, 28, 28), np.uint8)))
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    start = threading.Barrier(16)

    def call(_):
        start.wait()
        try:
            return grpc.StatusCode.OK, stub.Predict(request, timeout=30)
        except grpc.RpcError as error:
            return error.code(), error.details()

    with ThreadPoolExecutor(16) as pool:
        results = [result for _ in range(4) for result in pool.map(call, range(16))]
    channel.close()
    codes = {code for code, _ in results}
    assert codes == {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}  # served or turned away, nothing else
    for code, answer in results:
        if code == grpc.StatusCode.UNAVAILABLE:
            assert answer == "The batch scheduling queue to which this task was submitted is full"
        else:
            assert tf.make_ndarray(answer.outputs[OUTPUT_PROBABILITIES]).shape == (1, 10)
