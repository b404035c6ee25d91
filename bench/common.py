"""Shared by the benchmarks and the soak test: servers as subprocesses, client processes, stats.

Only the standard library is imported at module level: load-generator processes are spawned and import
this module, and they must start fast (no TensorFlow) so that they measure the server, not themselves.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # this checkout's client/ and serving/, as the servers started here use
    sys.path.insert(1, str(REPO_ROOT))  # after bench/ itself, before an install that may point elsewhere
RESULTS_DIR = REPO_ROOT / "bench" / "results"
PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
_GRPC_PORT_LINE = re.compile(r"Running gRPC ModelServer at [^:]+:(\d+)")
_REST_PORT_LINE = re.compile(r"Exporting HTTP/REST API at:[^:]+:(\d+)")
_VERSION_DIR = re.compile(r"[0-9]+")  # ASCII only, as the server reads it: str.isdigit() also takes '²'


# ------------------------------------------------------------------------------------------ small utils
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mib(pid: int) -> float:
    """Resident memory of a process, in MiB (0 when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation, as numpy's default; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def shown(value: float, limit: float, digits: int) -> str:
    """`value` with `digits` decimals, or as many more as it takes not to look equal to a `limit` it is not
    (a p50 1.004 ms above in-process is no "+1.00 ms" beside a missed "within 1 ms")."""
    while digits < 6 and value != limit and f"{value:.{digits}f}" == f"{limit:.{digits}f}":
        digits += 1
    return f"{value:.{digits}f}"


def http_json(
    url: str, body: bytes | None = None, timeout: float = 5.0, headers: dict[str, str] | None = None
) -> tuple[int, object]:
    """GET (or POST `body`) and decode the JSON answer; returns (status, document or text)."""
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def console_scripts_env() -> dict[str, str]:
    """The environment for child processes: quiet TensorFlow, the venv's bin first on PATH."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --------------------------------------------------------------------------------------- processes
class Process:
    """A server started as a child process (own session), its output in a log file."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None):
        self.name, self.argv = name, argv
        self.log_path = Path(log_dir) / f"{name}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0  # earlier runs' lines
        self._log = self.log_path.open("ab")
        self._log.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
        self._log.flush()
        self.popen = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env or console_scripts_env(),
            cwd=REPO_ROOT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        """What this process wrote (the log file is appended to: earlier runs' lines stay before it)."""
        with self.log_path.open("rb") as log:
            log.seek(self._log_start)
            return log.read().decode(errors="replace")

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_until(self, ready: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Poll `ready()` until true; a child that exits or a timeout is a RuntimeError with the log tail.

        On a timeout the child is stopped first: a caller that gives up on it never leaks it (or its port).
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                self.stop()  # reaps it and closes the log
                raise RuntimeError(
                    f"{self.name} exited ({self.popen.returncode}) before {what}:\n{self.log_tail()}"
                )
            try:
                if ready():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name}: no {what} within {timeout_s:.0f} s, stopped:\n{self.log_tail()}")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        if self.alive():
            self.popen.send_signal(signum)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, wait, then SIGKILL to its process group (a gunicorn's workers too); the exit code."""
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)  # its own session: the group is its, not ours
            except ProcessLookupError:
                pass
            self.popen.wait(10)
        self._log.close()
        return self.popen.returncode


def bench_script(name: str, script: str, args: Sequence[str], log_dir: Path) -> Process:
    """One of bench/'s helper scripts (e.g. grpc_echo.py) run by this Python as a child process."""
    return Process(name, [sys.executable, str(Path(__file__).parent / script), *args], log_dir)


class ModelServerProcess(Process):
    """`digits-serve` on free ports (read back from its start-up log lines)."""

    def __init__(
        self,
        name: str,
        model_base: Path,
        log_dir: Path,
        *,
        model_name: str = "mnist",
        batching_file: Path | None = None,
        poll_s: float = 1.0,
        extra: Sequence[str] = (),
        grpc_port: int = 0,
        rest_port: int | None = None,
    ):
        rest_port = rest_port or free_port()  # --rest_api_port=0 means "REST off", as in TF Serving
        argv = [
            sys.executable,
            "-m",
            "serving.cli",
            f"--port={grpc_port}",
            f"--rest_api_port={rest_port}",
            "--host=127.0.0.1",
            f"--model_name={model_name}",
            f"--model_base_path={model_base}",
            f"--file_system_poll_wait_seconds={poll_s}",
            *extra,
        ]
        if batching_file is not None:
            argv += ["--enable_batching", f"--batching_parameters_file={batching_file}"]
        super().__init__(name, argv, log_dir)
        self.model_name = model_name
        self.grpc_port: int | None = None
        self.rest_port: int | None = None

    def wait_ready(self, timeout_s: float = 120.0) -> ModelServerProcess:
        """Block until both ports are open and the model is AVAILABLE."""

        def ready() -> bool:
            text = self.log_text()
            grpc_match, rest_match = _GRPC_PORT_LINE.findall(text), _REST_PORT_LINE.findall(text)
            if not grpc_match or not rest_match:
                return False
            self.grpc_port, self.rest_port = int(grpc_match[-1]), int(rest_match[-1])
            status, _ = http_json(f"{self.rest_url}/v2/health/ready", timeout=2)
            return status == 200

        self.wait_until(ready, timeout_s, "ready model server")
        return self

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def model_status(self) -> list[dict]:
        """The REST model-status entries ([] when the model is unknown)."""
        status, doc = http_json(f"{self.rest_url}/v1/models/{self.model_name}", timeout=5)
        return doc.get("model_version_status", []) if status == 200 and isinstance(doc, dict) else []


def wait_http_ok(url: str, proc: Process, timeout_s: float = 60.0) -> None:
    """Block until GET `url` answers 200."""
    proc.wait_until(lambda: http_json(url, timeout=2)[0] == 200, timeout_s, f"200 from {url}")


def mnist_data_dir(parser: argparse.ArgumentParser, data_dir: Path) -> Path:
    """`--data-dir` made absolute (children run in the repository root); a usage error without mnist.npz."""
    data_dir = Path(data_dir).resolve()
    if not (data_dir / "mnist.npz").is_file():
        parser.error(f"--data-dir {data_dir} holds no mnist.npz (`make data-mnist` fetches it)")
    return data_dir


def ensure_model(
    model_base: Path | None,
    cache_dir: Path,
    *,
    model_name: str = "mnist",
    epochs: int = 2,
    data_dir: Path | None = None,
) -> Path:
    """A model base path with at least one version: the given one, or one trained once into `cache_dir`.

    The path comes back absolute: the servers run in the repository root, not in the caller's directory.
    """
    if model_base is not None:
        base = Path(model_base).resolve()
        if not base.is_dir() or not _version_dirs(base):
            raise SystemExit(f"{base} holds no numbered version directory")
        return base
    base = cache_dir / "models" / model_name
    if base.is_dir() and any((p / "saved_model.pb").is_file() for p in _version_dirs(base)):
        return base
    print(f"training a model for the benchmark (seed-best, {epochs} epochs) into {base} ...", flush=True)
    argv = [
        sys.executable,
        "-m",
        "trainer.cli",  # digits-train, from this checkout (run in the repository root)
        "train",
        "--preset",
        "seed-best",
        "--epochs",
        str(epochs),
        "--models-dir",
        str(cache_dir / "models"),
        "--model-name",
        model_name,
        "--reports-dir",
        str(cache_dir / "train-reports"),
    ]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    done = subprocess.run(argv, env=console_scripts_env(), cwd=REPO_ROOT)
    if done.returncode != 0:
        raise SystemExit(f"training the benchmark's model failed: digits-train exited {done.returncode}")
    return base


def latest_version_dir(model_base: Path) -> Path:
    """The highest numbered version directory under a model base path."""
    return max(_version_dirs(Path(model_base)), key=lambda p: int(p.name))


def _version_dirs(model_base: Path) -> list[Path]:
    """The entries under a model base path named as versions (ASCII digits)."""
    return [p for p in model_base.iterdir() if _VERSION_DIR.fullmatch(p.name)]


# -------------------------------------------------------------------------------------- load workers
@dataclass(frozen=True)
class LoadJob:
    """What every client thread of one measurement sends.

    kind "grpc": `payloads` are serialized PredictRequests sent to `target` (host:port) raw, so the client
    processes need neither TensorFlow nor protobuf parsing. kind "http": `payloads` are POST bodies for
    http://`target``path` with `content_type`. Each thread cycles through the payloads from its own offset.
    """

    kind: str
    target: str
    payloads: tuple[bytes, ...]
    path: str = PREDICT_METHOD
    content_type: str = "application/json"
    duration_s: float = 3.0
    requests_per_client: int = 10**9
    timeout_s: float = 30.0
    warmup_requests: int = 5  # per client, not timed


@dataclass
class LoadResult:
    """Every client's latencies and failures for one measurement."""

    clients: int
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    warmup_ok: int = 0  # untimed warm-up requests answered (before `started`)
    started: float = float("inf")
    ended: float = 0.0
    client_starts: list[float] = field(default_factory=list)  # when each client's clock started

    @property
    def ok(self) -> int:
        return len(self.latencies_s)

    @property
    def wall_s(self) -> float:
        return max(self.ended - self.started, 1e-9)

    @property
    def rps(self) -> float:
        return self.ok / self.wall_s

    @property
    def start_spread_s(self) -> float:
        """Seconds between the first and the last client starting its clock (0 for one client)."""
        return max(self.client_starts) - min(self.client_starts) if self.client_starts else 0.0

    def p(self, q: float) -> float:
        """Latency percentile in ms."""
        return 1000 * percentile(self.latencies_s, q)

    def merge(self, part: dict) -> None:
        self.latencies_s.extend(part["latencies"])
        self.errors += part["errors"]
        self.warmup_ok += part["warmup_ok"]
        self.client_starts.extend(part["starts"])
        self.error_samples.extend(part["samples"][: max(0, 5 - len(self.error_samples))])
        if part["latencies"] or part["errors"]:
            self.started, self.ended = min(self.started, part["started"]), max(self.ended, part["ended"])

    def summary(self) -> dict:
        return {
            "clients": self.clients,
            "requests": self.ok,
            "warmup_requests": self.warmup_ok,
            "errors": self.errors,
            "wall_s": round(self.wall_s, 3),
            "start_spread_ms": round(1000 * self.start_spread_s, 1),
            "rps": round(self.rps, 1),
            "p50_ms": round(self.p(50), 3),
            "p99_ms": round(self.p(99), 3),
            "error_samples": self.error_samples,
        }


def _grpc_caller(job: LoadJob) -> Callable[[bytes], None]:
    import grpc

    # A channel (and so a TCP connection) per client, as separate client programs would have.
    channel = grpc.insecure_channel(
        job.target,
        options=[("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 2**31 - 1)],
    )
    method = channel.unary_unary(job.path)  # bytes in, bytes out: no serialization cost in the client
    return lambda payload: method(payload, timeout=job.timeout_s)


def _http_caller(job: LoadJob) -> Callable[[bytes], None]:
    import http.client

    host, port = job.target.rsplit(":", 1)
    state = {"conn": None}

    def call(payload: bytes) -> None:
        if state["conn"] is None:
            state["conn"] = http.client.HTTPConnection(host, int(port), timeout=job.timeout_s)
        conn = state["conn"]
        try:
            conn.request("POST", job.path, body=payload, headers={"Content-Type": job.content_type})
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            state["conn"] = None
            raise
        if response.will_close:
            conn.close()
            state["conn"] = None
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {body[:200]!r}")

    return call


def _client_thread(job: LoadJob, offset: int, warmed, go: threading.Event, out: dict, lock) -> None:
    """One client: connect and warm up, wait for every client of the measurement to be ready, then time."""
    payloads = job.payloads
    try:
        caller = _grpc_caller(job) if job.kind == "grpc" else _http_caller(job)
    except Exception as error:  # noqa: BLE001 -- a client that cannot start fails its requests, not the run
        caller = None
        with lock:
            out["errors"] += 1
            out["samples"].append(f"client: {error}"[:300])
    for i in range(job.warmup_requests if caller else 0):  # connect and warm up before the clock starts
        try:
            caller(payloads[(offset + i) % len(payloads)])
        except Exception as error:  # noqa: BLE001 -- reported as a failed request, never a dead worker
            with lock:
                out["errors"] += 1
                out["samples"].append(f"warmup: {error}"[:300])
        else:
            with lock:
                out["warmup_ok"] += 1
    warmed.wait()
    go.wait()  # set when every client in every process has warmed up (or the measurement is called off)
    if caller is None or out["aborted"]:
        return
    latencies, errors, samples = [], 0, []
    started = time.monotonic()
    deadline = started + job.duration_s
    i = offset
    while time.monotonic() < deadline and len(latencies) + errors < job.requests_per_client:
        began = time.perf_counter()
        try:
            caller(payloads[i % len(payloads)])
            latencies.append(time.perf_counter() - began)
        except Exception as error:  # noqa: BLE001 -- counted, and a few kept to show
            errors += 1
            if len(samples) < 3:
                samples.append(str(error).replace("\n", " ")[:300])
        i += 1
    ended = time.monotonic()
    with lock:
        out["latencies"].extend(latencies)
        out["errors"] += errors
        out["samples"].extend(samples)
        out["starts"].append(started)
        out["started"] = min(out["started"], started)
        out["ended"] = max(out["ended"], ended)


def _worker_main(index: int, jobs, results) -> None:
    """One client process: run each job with its share of client threads, report the merged numbers.

    For each job it reports ("ready", index) once its clients have warmed up, waits for "go" (sent when
    every process is ready, so that no client is timed while another still connects), then reports
    ("done", index, numbers). None instead of "go" calls the measurement off; None as a job ends it.
    """
    while True:
        item = jobs.get()
        if item is None:
            return
        job, threads, first_offset = item
        out = {"latencies": [], "errors": 0, "warmup_ok": 0, "samples": [], "starts": [],
               "started": float("inf"), "ended": 0.0, "aborted": False}
        lock = threading.Lock()
        warmed, go = threading.Barrier(threads + 1), threading.Event()
        workers = [
            threading.Thread(target=_client_thread, args=(job, first_offset + t, warmed, go, out, lock))
            for t in range(threads)
        ]
        for worker in workers:
            worker.start()
        warmed.wait()  # every client of this process connected and warmed up
        results.put(("ready", index, None))
        out["aborted"] = jobs.get() != "go"
        go.set()
        for worker in workers:
            worker.join()
        if out["aborted"]:
            return
        results.put(("done", index, out))


class LoadPool:
    """A fixed set of spawned client processes that run load jobs (clients spread over processes)."""

    def __init__(self, processes: int = 8):
        ctx = mp.get_context("spawn")
        self._jobs = [ctx.Queue() for _ in range(processes)]
        self._results = ctx.Queue()
        self._procs = [
            ctx.Process(target=_worker_main, args=(i, self._jobs[i], self._results), daemon=True)
            for i in range(processes)
        ]
        for proc in self._procs:
            proc.start()

    def run(self, job: LoadJob, clients: int) -> LoadResult:
        """`clients` concurrent clients (each its own connection), spread over the processes, until done.

        Every client's clock starts together, once all of them have connected and warmed up: the span
        measured holds the timed requests of every client and nothing else. A process that does not
        report in time is a RuntimeError, never a hang.
        """
        n = len(self._procs)
        shares = [clients // n + (1 if i < clients % n else 0) for i in range(n)]
        busy = [i for i, share in enumerate(shares) if share]
        offset = 0
        for i in busy:
            self._jobs[i].put((job, shares[i], offset))
            offset += shares[i] * 7919  # different images per client
        warm_up_s = (job.warmup_requests + 1) * job.timeout_s + 60
        self._collect("ready", busy, warm_up_s)
        for i in busy:
            self._jobs[i].put("go")
        result = LoadResult(clients)
        for part in self._collect("done", busy, job.duration_s + job.timeout_s + 60):
            result.merge(part)
        return result

    def _collect(self, kind: str, busy: list[int], timeout_s: float) -> list:
        """A report of `kind` from each of the `busy` processes within `timeout_s`, else a RuntimeError.

        A process that died (it never reports) is an error at once, not after the whole timeout.
        """
        deadline = time.monotonic() + timeout_s
        parts = []
        while len(parts) < len(busy):
            try:
                got, index, part = self._results.get(timeout=1.0)
            except queue.Empty:
                procs = [(i, self._procs[i]) for i in busy]
                dead = [f"{i} (exit {proc.exitcode})" for i, proc in procs if not proc.is_alive()]
                if dead:
                    raise RuntimeError(f"client process {', '.join(dead)} died before its {kind!r}") from None
                if time.monotonic() > deadline:
                    missing = len(busy) - len(parts)
                    raise RuntimeError(
                        f"{missing} of {len(busy)} client processes sent no {kind!r} within {timeout_s:.0f} s"
                    ) from None
                continue
            if got != kind:
                raise RuntimeError(f"client process {index} sent {got!r}, expected {kind!r}")
            parts.append(part)
        return parts

    def close(self) -> None:
        for jobs in self._jobs:
            jobs.put(None)  # calls off a measurement waiting for "go", then ends the process
            jobs.put(None)
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()

    def __enter__(self) -> LoadPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------------------------ request bodies
def predict_request_bytes(image, model_name: str) -> bytes:
    """A serialized PredictRequest for one uint8 [28, 28] image (imports TensorFlow: parent only)."""
    from tensorflow_serving.apis import predict_pb2

    from client.contract import INPUT_NAME, SIGNATURE_NAME
    from client.grpc_transport import ndarray_to_proto

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = SIGNATURE_NAME
    request.inputs[INPUT_NAME].CopyFrom(ndarray_to_proto(image[None]))
    return request.SerializeToString()


def rest_predict_body(image) -> bytes:
    """TF Serving REST row-format body for one uint8 [28, 28] image."""
    return json.dumps({"instances": [image.tolist()]}, separators=(",", ":")).encode()
