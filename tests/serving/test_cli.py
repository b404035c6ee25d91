"""digits-serve as a process: TF Serving's flags, one-line start-up errors, log lines, graceful SIGTERM."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest

from client.contract import OUTPUT_CLASSES

SERVE = [sys.executable, "-m", "serving.cli"]


def _run(args, timeout=60):
    return subprocess.run(SERVE + args, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--no_such_flag=1"], "unrecognized arguments: --no_such_flag=1"),
        (["--port=http"], "argument --port: invalid int value: 'http'"),
        (["--enable_batching=maybe"], "expected true or false, got 'maybe'"),
    ],
)
def test_bad_flags_are_one_line_errors(args, message):
    result = _run(args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_config_files_are_one_line_errors(tmp_path, built_models):
    shutil.copytree(built_models.digits[1], tmp_path / "m" / "1")
    bad_models = tmp_path / "models.config"
    bad_models.write_text("model_config_list { config { name: 'm' base_path: ")
    bad_batching = tmp_path / "batching.config"
    bad_batching.write_text("max_batch_size { value: 8 }\nallowed_batch_sizes: 4\n")
    cases = [
        (["--model_config_file", str(bad_models)], "invalid model config file"),
        (["--model_base_path", str(tmp_path / "missing")], "is not a directory"),
        (
            ["--model_base_path", str(tmp_path / "m"), "--batching_parameters_file", str(bad_batching)],
            "batching_parameters_file is set without setting enable_batching",
        ),
        (
            [
                "--model_base_path",
                str(tmp_path / "m"),
                "--enable_batching",
                "--batching_parameters_file",
                str(bad_batching),
            ],
            "Last entry in allowed_batch_sizes must match max_batch_size",
        ),
        ([], "either --model_base_path or --model_config_file must be given"),
    ]
    for args, message in cases:
        result = _run(args)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr


def _read_until(process, marker, lines, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            return
    raise AssertionError(f"never saw {marker!r}; stderr was:\n{''.join(lines)}")


def test_serves_then_stops_gracefully_on_sigterm(tmp_path, built_models, model_builders):
    shutil.copytree(built_models.digits[1], tmp_path / "mnist" / "1")
    grpc_port, rest_port = model_builders.free_port(), model_builders.free_port()
    batching = tmp_path / "batching.config"
    # A long batch timeout keeps a request in flight while SIGTERM arrives.
    batching.write_text(
        "max_batch_size { value: 64 }\nbatch_timeout_micros { value: 4000000 }\n"
        "num_batch_threads { value: 1 }\n"
    )
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n')
    process = subprocess.Popen(
        SERVE
        + [
            f"--port={grpc_port}",
            f"--rest_api_port={rest_port}",
            "--model_name=mnist",
            f"--model_base_path={tmp_path / 'mnist'}",
            "--enable_batching",
            f"--batching_parameters_file={batching}",
            f"--monitoring_config_file={monitoring}",
            "--host=127.0.0.1",
            "--enable_grpc_healthcheck_service=true",
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    try:
        _read_until(process, f"Running gRPC ModelServer at 127.0.0.1:{grpc_port} ...", lines)
        _read_until(process, f"Exporting HTTP/REST API at:localhost:{rest_port} ...", lines)
        url = f"http://127.0.0.1:{rest_port}/v1/models/mnist:predict"
        body = json.dumps({"instances": np.zeros((2, 28, 28), np.uint8).tolist()}).encode()
        result: dict = {}

        def in_flight():
            started = time.monotonic()
            with urllib.request.urlopen(urllib.request.Request(url, body), timeout=30) as response:
                result["status"], result["doc"] = response.status, json.loads(response.read())
            result["seconds"] = time.monotonic() - started

        def grpc_in_flight():
            import grpc
            import tensorflow as tf
            from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                request = predict_pb2.PredictRequest()
                request.model_spec.name = "mnist"
                request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((3, 28, 28), np.uint8)))
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                outputs = stub.Predict(request, timeout=30).outputs
                result["grpc_rows"] = len(tf.make_ndarray(outputs[OUTPUT_CLASSES]))

        threads = [threading.Thread(target=in_flight), threading.Thread(target=grpc_in_flight)]
        for thread in threads:
            thread.start()
        metrics_url = f"http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics"
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # until both requests wait in the batch queue
            with urllib.request.urlopen(metrics_url, timeout=5) as response:
                if ":digits:serving:requests_in_flight 2" in response.read().decode():
                    break
            time.sleep(0.02)
        else:
            raise AssertionError("the two requests never were in flight together")
        process.send_signal(signal.SIGTERM)
        refused_while_busy = False
        while threads[0].is_alive() and not refused_while_busy:
            try:
                socket.create_connection(("127.0.0.1", rest_port), timeout=1).close()
                time.sleep(0.05)
            except (ConnectionRefusedError, ConnectionResetError):  # reset: closed with us in its backlog
                refused_while_busy = threads[0].is_alive()  # new connections refused, old ones still served
        for thread in threads:
            thread.join(30)
        assert refused_while_busy, "the REST port kept accepting after SIGTERM"
        assert result.get("status") == 200, f"in-flight REST request lost: {result}"
        assert len(result["doc"]["predictions"]) == 2
        assert OUTPUT_CLASSES in result["doc"]["predictions"][0] and result["seconds"] > 2.0
        assert result["grpc_rows"] == 3
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    rest_of_log = process.stderr.read()
    process.stderr.close()
    assert "Traceback" not in "".join(lines) + rest_of_log


def test_startup_failure_exits_non_zero_with_the_reason(tmp_path):
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "saved_model.pb").write_bytes(b"not a proto")
    result = _run(["--model_base_path", str(tmp_path / "m"), "--port=0", "--rest_api_port=0"])
    assert result.returncode == 1
    assert "Failed to start server. Error: 1 servable(s) did not become available" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_label_on_a_version_that_is_not_available_exits_non_zero_in_one_line(tmp_path, built_models):
    shutil.copytree(built_models.digits[1], tmp_path / "m" / "1")
    config = tmp_path / "models.config"
    config.write_text(
        f"model_config_list {{ config {{ name: 'm' base_path: '{tmp_path / 'm'}' "
        "version_labels { key: 'stable' value: 9 } } }"
    )
    result = _run(["--model_config_file", str(config), "--port=0", "--rest_api_port=0"])
    assert result.returncode == 1
    assert (
        "Failed to start server. Error: Request to assign label to version 9 of model m, "
        "which is not currently available for inference\n"
    ) in result.stderr
    assert "Traceback" not in result.stderr


def test_rest_api_timeout_zero_means_no_timeout_as_in_tf_serving(tmp_path, built_models, server_factory):
    import requests

    from serving.cli import build_config, build_parser
    from serving.config_files import ConfigError

    shutil.copytree(built_models.digits[1], tmp_path / "m" / "1")
    args = build_parser().parse_args(["--model_base_path", str(tmp_path / "m"), "--rest_api_timeout_in_ms=0"])
    config = build_config(args)
    assert config.rest.timeout_ms == 0
    server = server_factory(
        f'model_config_list {{ config {{ name: "m" base_path: "{tmp_path / "m"}" }} }}', rest=config.rest
    )
    body = {"instances": np.zeros((2, 28, 28), np.uint8).tolist()}
    r = requests.post(f"http://127.0.0.1:{server.rest_port}/v1/models/m:predict", json=body, timeout=30)
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 2
    negative = build_parser().parse_args(
        ["--model_base_path", str(tmp_path / "m"), "--rest_api_timeout_in_ms=-1"]
    )
    with pytest.raises(ConfigError, match="must be >= 0"):
        build_config(negative)
