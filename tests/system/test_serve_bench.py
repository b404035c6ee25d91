"""bench/serve_bench.py without model servers: the targets when a measurement answered nothing, its flags,
the server CPU per request counting the warm-up requests its reading spans, and bench/common.py's load
clients (against a stand-in HTTP server) and child processes."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest


def load(rps: float, requests: int | None = None) -> dict:
    """One load measurement's summary, as `LoadResult.summary()` writes it (NaN latencies when empty)."""
    requests = int(rps * 4) if requests is None else requests
    p50 = 1.5 if requests else float("nan")
    return {"clients": 1, "requests": requests, "warmup_requests": 5, "errors": 0 if requests else 40,
            "wall_s": 4.0, "rps": rps, "p50_ms": p50, "p99_ms": 2 * p50, "error_samples": [],
            "server_cpu_us_per_req": 900}


def results(**rps: float) -> dict:
    """A run's results; `rps` overrides the req/s of "off32", "on32", "off1" (gRPC c1) and "naive"."""
    rates = {"off32": 800.0, "on32": 1300.0, "off1": 600.0, "naive": 20.0, **rps}
    serving = {f"{protocol}/batching-{mode}/c{clients}": load(500.0)
               for mode in ("off", "on") for protocol in ("grpc", "rest") for clients in (1, 8, 32)}
    serving["grpc/batching-off/c32"] = load(rates["off32"])
    serving["grpc/batching-on/c32"] = load(rates["on32"])
    serving["grpc/batching-off/c1"] = load(rates["off1"])
    best = {"batch_size": 1000, "concurrency": 2, "wall_s": 1.1, "images_per_s": 9000.0, "errors": 80,
            "images": 10000}
    return {
        "model": "m/1", "cpus": 2, "wall_s": 60.0, "load_average": (0.5, 0.7),
        "in_process": {"p50_ms": 0.6, "p99_ms": 0.9, "batched_images_per_s": {100: 5e4, 1000: 9e4}},
        "wrong_answers": {"off": 0, "on": 0},
        "digits_serve": serving,
        "transport_ceiling": {"c1": load(2000.0), "c32": load(3400.0)},
        "gateway": load(300.0),
        "naive": {"c1": load(rates["naive"]), "c32": load(rates["naive"])},
        "eval": {"runs": [best], "best": best, "in_process_wall_s": 1.0, "in_process_errors": 80},
    }


def by_name(targets: list[dict]) -> dict[str, dict]:
    return {t["target"]: t for t in targets}


def test_a_measurement_that_answered_nothing_misses_its_targets_with_the_reason(bench_serve):
    run = results(off32=0.0, naive=0.0)
    run["digits_serve"]["grpc/batching-off/c1"] = load(0.0, requests=0)
    run["targets"] = bench_serve.targets(run)
    targets = by_name(run["targets"])
    batching = targets["32 gRPC clients: batching on >= 5x batching off"]
    assert not batching["met"] and "gRPC batching off c32 answered no request" in batching["measured"]
    naive = targets["32 gRPC clients, batching on >= 50x naive Flask"]
    assert not naive["met"] and naive["measured"] == "not measured: naive Flask answered no request"
    latency = targets["gRPC single-image p50 within 1 ms of in-process"]
    assert not latency["met"] and "not measured" in latency["measured"]
    assert targets["REST single-image p50 within 2 ms of in-process"]["met"]
    assert not targets["every answer right, no failed request"]["met"]  # the empty arm's failures
    json.dumps(run, allow_nan=True)  # what main() writes
    table = bench_serve.render(run)
    assert "[MISSED] 32 gRPC clients: batching on >= 5x batching off: not measured" in table


def test_measured_arms_keep_their_ratios(bench_serve):
    targets = by_name(bench_serve.targets(results()))
    batching = targets["32 gRPC clients: batching on >= 5x batching off"]
    assert not batching["met"] and batching["measured"].startswith("1300 vs 800 req/s (1.6x)")
    naive = targets["32 gRPC clients, batching on >= 50x naive Flask"]
    assert naive["met"] and naive["measured"] == "1300 vs 20.0 req/s (65x)"
    assert all(t["met"] is True or t["met"] is False for t in targets.values())


def test_a_baseline_that_failed_requests_gives_no_ratio(bench_serve):
    """req/s counts answers only: a failing baseline would flatter the ratio, so the target is missed."""
    run = results(naive=10.0, off32=100.0)  # 130x naive and 13x batching off, were they clean
    run["naive"]["c32"]["errors"] = 12
    run["digits_serve"]["grpc/batching-off/c32"]["errors"] = 3
    targets = by_name(bench_serve.targets(run))
    naive = targets["32 gRPC clients, batching on >= 50x naive Flask"]
    assert not naive["met"] and naive["measured"] == (
        "not measured: naive Flask failed 12 requests, which would flatter the ratio"
    )
    batching = targets["32 gRPC clients: batching on >= 5x batching off"]
    assert not batching["met"] and "gRPC batching off c32 failed 3 requests" in batching["measured"]


def test_a_missed_target_never_shows_the_limit_itself(bench_serve):
    """Rounded for the table, 1.004 ms over in-process read "+1.00 ms" beside [MISSED] "within 1 ms"."""
    run = results(on32=39_798.0, naive=796.0)  # 49.997x naive: "50x" at no decimals
    run["in_process"]["p50_ms"] = 0.6
    run["digits_serve"]["grpc/batching-off/c1"]["p50_ms"] = 1.604
    run["eval"]["in_process_wall_s"] = 0.5499  # the eval's 1.1 s is 2.0004x
    targets = by_name(bench_serve.targets(run))
    grpc = targets["gRPC single-image p50 within 1 ms of in-process"]
    assert not grpc["met"] and grpc["measured"].endswith("(+1.004 ms)")
    naive = targets["32 gRPC clients, batching on >= 50x naive Flask"]
    assert not naive["met"] and naive["measured"].endswith("(49.997x)")
    evaluation = targets["10k eval via gRPC within 2x of in-process predict"]
    assert not evaluation["met"] and evaluation["measured"].endswith("(2.0004x)")
    rest = targets["REST single-image p50 within 2 ms of in-process"]
    assert rest["met"] and rest["measured"].endswith("(+0.90 ms)")  # as many decimals as ever elsewhere


@pytest.mark.parametrize("flag", [["--duration", "0"], ["--duration", "-1"], ["--duration", "nan"]])
def test_a_duration_that_measures_nothing_is_refused(bench_serve, flag, capsys):
    with pytest.raises(SystemExit) as exited:
        bench_serve.build_parser().parse_args(flag)
    assert exited.value.code == 2 and "--duration" in capsys.readouterr().err


def test_an_older_runs_json_does_not_outlive_a_run_that_stops_early(bench_serve, tmp_path):
    out = tmp_path / "serve_bench.json"
    out.write_text('{"targets": [{"met": true}]}\n')  # an earlier run's verdict
    data_dir = os.environ.get("DIGITS_DATA_DIR") or str(bench_serve.common.REPO_ROOT / "data")
    with pytest.raises(SystemExit, match="holds no numbered version directory"):
        bench_serve.main(["--data-dir", data_dir, "--model-base", str(tmp_path / "none"), "--out", str(out)])
    assert not out.exists()


def test_the_evaluation_asks_for_the_served_model_by_its_name(bench_serve, tmp_path, monkeypatch):
    """`--model-name digits` serves "digits": digits-eval must not ask for its default, "mnist"."""
    calls = []

    def run(argv, **kwargs):
        calls.append(argv)
        report = {"wall_s": 1.0, "throughput_images_per_s": 1e4, "errors": 80, "images": 10000}
        (tmp_path / "report.json").write_text(json.dumps(report))
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(bench_serve.subprocess, "run", run)
    result = bench_serve.run_eval("127.0.0.1:1", "digits", tmp_path, 1000, 2, tmp_path)
    assert result["images"] == 10000
    argv = calls[0]
    assert argv[argv.index("--model-name") + 1] == "digits"


@pytest.mark.parametrize(
    ("server_args", "threads"),
    [([], 4 * (os.cpu_count() or 1)), (["--grpc_max_threads=3"], 3),
     (["--enable_model_warmup=false", "--grpc_max_threads", "5"], 5)],
)
def test_the_transport_ceiling_gets_digits_serves_thread_pool(bench_serve, server_args, threads):
    """`--server-arg=--grpc_max_threads=N` changes digits-serve's pool: the bare server's follows it."""
    assert bench_serve.grpc_threads(server_args) == threads


def test_duration_is_used_when_given(bench_serve):
    assert bench_serve.build_parser().parse_args(["--duration", "0.5"]).duration == 0.5


def test_warm_up_requests_are_counted_with_the_timed_ones(bench_common):
    result = bench_common.LoadResult(clients=2)
    for started in (10.0, 10.2):
        result.merge({"latencies": [0.001] * 100, "errors": 0, "warmup_ok": 5, "samples": [],
                      "starts": [started], "started": started, "ended": started + 1.0})
    assert (result.ok, result.warmup_ok) == (200, 10)
    assert result.summary()["warmup_requests"] == 10


class _FirstRequestSlow(http.server.BaseHTTPRequestHandler):
    """Answers every POST with 200 at once, except the server's very first request: that one takes 3 s."""

    first = threading.Lock()

    def do_POST(self):  # noqa: N802 -- http.server's naming
        self.rfile.read(int(self.headers["Content-Length"]))
        if _FirstRequestSlow.first.acquire(blocking=False):
            time.sleep(3.0)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_no_client_is_timed_while_another_still_warms_up(bench_common):
    """Two client processes, one of them held up 3 s in its warm-up: both clocks start together, so the
    measured span is the 0.5 s asked for, not the other client's early start plus the wait."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FirstRequestSlow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    job = bench_common.LoadJob("http", f"127.0.0.1:{server.server_port}", (b"{}",), path="/",
                               duration_s=0.5, warmup_requests=1, timeout_s=10)
    try:
        with bench_common.LoadPool(processes=2) as pool:
            result = pool.run(job, clients=2)
    finally:
        server.shutdown()
    assert result.errors == 0 and result.warmup_ok == 2 and result.ok > 2
    assert result.wall_s < 0.5 + 1.5, result.summary()  # 3.5 s when each process started on its own
    assert result.start_spread_s < 1.5, result.client_starts
    assert result.summary()["start_spread_ms"] == round(1000 * result.start_spread_s, 1)


def test_a_server_that_never_gets_ready_is_stopped_not_leaked(bench_common, tmp_path):
    proc = bench_common.Process("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path)
    try:
        with pytest.raises(RuntimeError, match="sleeper: no readiness within 1 s"):
            proc.wait_until(lambda: False, 1.0, "readiness")
        assert not proc.alive()
    finally:
        proc.stop()


def test_a_process_reads_only_its_own_lines_of_an_appended_log(bench_common, tmp_path):
    """An earlier run's lines (its ports, its last words) are never taken for this process's."""
    (tmp_path / "serve.log").write_text("Running gRPC ModelServer at 127.0.0.1:1111 ...\nold crash\n")
    proc = bench_common.Process("serve", [sys.executable, "-c", "print('this run')"], tmp_path)
    proc.popen.wait(30)
    proc.stop()
    assert "this run" in proc.log_text() and "1111" not in proc.log_text()
    assert "old crash" not in proc.log_tail()


STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
print(subprocess.Popen([sys.executable, "-c", code]).pid, flush=True)
time.sleep(120)
"""


def _running(pid: int) -> bool:
    """Whether `pid` exists and is no zombie (an orphan's zombie may wait long for a reaper)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_server_deaf_to_sigterm_is_killed_with_its_children(bench_common, tmp_path):
    """As a gunicorn's workers would be: nothing of it keeps running, or holds a port, after stop()."""
    proc = bench_common.Process("stubborn", [sys.executable, "-c", STUBBORN], tmp_path)
    try:
        proc.wait_until(lambda: proc.log_text().split("\n")[-2].isdigit(), 30, "its child's pid")
        child = int(proc.log_text().split("\n")[-2])
        assert _running(child)
    finally:
        proc.stop(timeout_s=1)
    deadline = time.monotonic() + 5
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not proc.alive() and not _running(child)


def test_a_client_process_that_died_fails_the_measurement_at_once(bench_common):
    """A clear error within seconds, not a wait for the measurement's whole timeout."""
    job = bench_common.LoadJob("http", f"127.0.0.1:{bench_common.free_port()}", (b"{}",), path="/",
                               duration_s=0.2, warmup_requests=1, timeout_s=60)
    with bench_common.LoadPool(processes=2) as pool:
        pool._procs[1].terminate()  # as the OOM killer would
        pool._procs[1].join(10)
        began = time.monotonic()
        with pytest.raises(RuntimeError, match=r"client process 1 \(exit -15\) died before its 'ready'"):
            pool.run(job, clients=2)
        assert time.monotonic() - began < 30


@pytest.mark.parametrize("bench", ["bench_serve", "bench_soak", "bench_train"])
def test_every_bench_reads_the_data_folder_as_the_trainer_does(bench, request, monkeypatch, tmp_path):
    """$DIGITS_DATA_DIR with a `~` (as `make DATA_DIR=~/d` exports it) is the user's folder, not './~/d'."""
    module = request.getfixturevalue(bench)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DIGITS_DATA_DIR", "~/digits-data")
    assert Path(module.build_parser().parse_args([]).data_dir) == tmp_path / "digits-data"
