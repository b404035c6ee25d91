"""`bench/soak.py --quick` as a test: a hot-swap, corrupt versions, abandoned requests and a SIGTERM restart
while 16 clients stream requests; no failed request, no wrong answer, no accepted request lost. And how the
soak tells a call refused while the server restarts from a failure, its memory check and its flags,
without a server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CHECKS = (
    "new version served",
    "status reports the corrupt version 3",
    "version 2 keeps serving after version 3",
    "status reports the corrupt version 4",
    "version 2 keeps serving after version 4",
    "server unaffected by abandoned requests",
    "no memory growth in the steady stream",
    "SIGTERM: clean exit",
    "clients served again after the restart",
    "every request accepted before SIGTERM completed",
    "no failed request",
    "no wrong answer",
)


def test_quick_soak_passes_every_check(mnist_model_dir, tmp_path):
    data_dir = os.environ.get("DIGITS_DATA_DIR") or str(REPO_ROOT / "data")
    argv = [
        sys.executable,
        str(REPO_ROOT / "bench" / "soak.py"),
        "--quick",
        "--model-base",
        str(mnist_model_dir),
        "--data-dir",
        data_dir,
        # A test must not be a stopwatch on a shared machine: it checks that the new version is
        # picked up without a restart; how fast is bench/soak.py's business on a quiet machine.
        "--swap-slack",
        "5",
        "--out",
        str(tmp_path / "soak.json"),
    ]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=240, cwd=REPO_ROOT)
    report = run.stdout + "\n" + run.stderr[-3000:]
    assert run.returncode == 0, report
    assert "PASS" in run.stdout, report
    for check in CHECKS:
        assert f"[ok] {check}" in run.stdout, report
    summary = json.loads((tmp_path / "soak.json").read_text())
    assert summary["passed"] and all(check["ok"] for check in summary["checks"]), summary
    assert len(summary["checks"]) == len(CHECKS), summary  # every check made, none left out of the list


class _RpcError:
    """What a client's `stub.Predict` raises: a code and details."""

    def __init__(self, code: str, details: str):
        import grpc

        self._code, self._details = grpc.StatusCode[code], details

    def code(self):
        return self._code

    def details(self) -> str:
        return self._details


# A call on a channel whose last connection attempt was refused: it fails at once until the reconnect
# backoff runs out, even when the server listens again by then.
REFUSED = _RpcError(
    "UNAVAILABLE",
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
    "Failed to connect to remote host: Connection refused",
)
DROPPED = _RpcError("UNAVAILABLE", "Socket closed")  # reached a server, which went away mid-call


def test_the_restart_window_closes_per_client_once_the_restarted_server_answers_it(bench_soak):
    import numpy as np
    from tensorflow_serving.apis import predict_pb2

    from client.contract import IMAGE_SIZE, OUTPUT_CLASSES, OUTPUT_PROBABILITIES
    from client.grpc_transport import ndarray_to_proto

    probabilities, classes = np.full((1, 10), 0.1, np.float32), np.array([3], np.int64)
    stream = bench_soak.Stream(
        "127.0.0.1:1", np.zeros((1, IMAGE_SIZE, IMAGE_SIZE), np.uint8), {1: (probabilities, classes)}, "m"
    )
    answer = predict_pb2.PredictResponse()
    answer.model_spec.version.value = 1
    answer.outputs[OUTPUT_PROBABILITIES].CopyFrom(ndarray_to_proto(probabilities))
    answer.outputs[OUTPUT_CLASSES].CopyFrom(ndarray_to_proto(classes))
    tally = stream.tally

    before = bench_soak.time.monotonic()
    stream._failed(REFUSED, before, client=0)  # refused while the server is up: a failure
    assert (tally.failed, tally.refused_while_down) == (1, 0)

    stream.sigterm()
    stream._failed(DROPPED, before, client=1)  # in flight at SIGTERM, reached it, then lost
    assert tally.accepted_then_failed == 1
    stream._failed(REFUSED, bench_soak.time.monotonic(), client=2)  # sent while the server is down
    assert (tally.failed, tally.refused_while_down) == (1, 1)

    stream.restarted()
    stream._check(answer, 0, before, client=4)  # answered, but sent before the restart: still restarting
    stream._failed(REFUSED, bench_soak.time.monotonic(), client=4)
    stream._failed(REFUSED, bench_soak.time.monotonic(), client=3)  # its channel still in reconnect backoff
    assert (tally.failed, tally.refused_while_down) == (1, 3)
    stream._failed(DROPPED, bench_soak.time.monotonic(), client=5)  # reached the restarted server: failed
    assert tally.failed == 2

    stream._check(answer, 0, bench_soak.time.monotonic(), client=3)  # client 3 is back...
    assert 3 not in stream.reconnecting and 2 in stream.reconnecting
    stream._failed(REFUSED, bench_soak.time.monotonic(), client=3)  # ...so a refusal now is a failure
    assert (tally.failed, tally.refused_while_down, tally.ok, tally.wrong) == (3, 3, 2, 0)
    assert stream.wait_reconnected(bench_soak.time.monotonic()) is False  # 14 clients not yet answered


def test_memory_is_checked_only_over_a_full_second_half(bench_soak):
    held, detail = bench_soak.memory_check((1000, 300.0), (2000, 310.0), 1000)
    assert held and detail.startswith("+10 MiB")
    grew, _ = bench_soak.memory_check((1000, 300.0), (2000, 340.0), 1000)
    assert not grew
    # Two readings back to back (the stream had already reached its size): nothing was checked.
    back_to_back, detail = bench_soak.memory_check((2500, 300.0), (2500, 300.0), 1000)
    assert not back_to_back and detail.startswith("not checked: 0 of 1,000 requests")
    cut_short, _ = bench_soak.memory_check((1000, 300.0), (1400, 300.0), 1000)  # the time limit
    assert not cut_short
    gone, detail = bench_soak.memory_check((1000, 300.0), (2000, 0.0), 1000)  # no server to read
    assert not gone and detail.startswith("not checked: no server")


@pytest.mark.parametrize(
    "flag", [["--requests", "0"], ["--requests", "-5"], ["--time-limit", "0"], ["--swap-slack", "-1"]]
)
def test_numbers_that_would_fall_back_to_defaults_are_refused(bench_soak, flag, capsys):
    with pytest.raises(SystemExit) as exited:
        bench_soak.build_parser().parse_args(flag)
    assert exited.value.code == 2 and flag[0] in capsys.readouterr().err


@pytest.mark.parametrize("script", ["bench_soak", "bench_serve"])
def test_a_data_dir_without_mnist_is_a_usage_error_before_anything_starts(script, request, tmp_path, capsys):
    """Not a traceback from numpy after a model was trained and servers started."""
    bench = request.getfixturevalue(script)
    with pytest.raises(SystemExit) as exited:
        bench.main(["--data-dir", str(tmp_path), "--model-base", str(tmp_path / "no-models")])
    assert exited.value.code == 2
    assert f"--data-dir {tmp_path} holds no mnist.npz" in capsys.readouterr().err


def test_a_server_that_never_gets_ready_fails_the_soak_with_its_reason_in_a_fresh_summary(
    bench_soak, mnist_model_dir, tmp_path, monkeypatch
):
    """Exit 1 and a summary saying why, not a traceback that leaves an earlier run's summary in place."""

    def never_ready(server, timeout_s: float = 120.0):
        server.stop()
        raise RuntimeError(f"{server.name}: no ready model server within {timeout_s:.0f} s, stopped")

    monkeypatch.setattr(bench_soak.common.ModelServerProcess, "wait_ready", never_ready)
    out = tmp_path / "soak.json"
    out.write_text('{"passed": true}\n')  # an earlier run's verdict
    data_dir = os.environ.get("DIGITS_DATA_DIR") or str(REPO_ROOT / "data")
    argv = ["--quick", "--model-base", str(mnist_model_dir), "--data-dir", data_dir, "--out", str(out)]
    assert bench_soak.main(argv) == 1
    summary = json.loads(out.read_text())
    step = {check["check"]: check for check in summary["checks"]}["every step ran to its end"]
    assert not summary["passed"] and not step["ok"]
    assert "RuntimeError: soak-serve: no ready model server within 120 s" in step["detail"]
