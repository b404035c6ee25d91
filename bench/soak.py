"""Soak test (`make soak`): digits-serve keeps answering right through hot-swaps, corrupt versions, restarts.

16 gRPC clients send a steady stream of single-image requests whose right answers are known (the
in-process predictions of each version), while the test
  1. drops a new version into the base path (copied to a hidden temp dir, then renamed),
  2. drops two corrupt versions in (truncated saved_model.pb; no variables/), then removes them,
  3. disconnects clients mid-request (REST and gRPC), and
  4. sends SIGTERM to the server and restarts it on the same ports.
It reports requests sent, failed and wrong, the server's resident memory along the way, and exits
non-zero if any check fails. The memory check compares the server's resident memory at the middle of the
stream (or, if steps 1-3 took longer, after them) with its memory after the rest of the stream (as many
requests again); a stream cut short by --time-limit leaves it unchecked, which fails. Loopback only;
bounded by --requests and --time-limit. Writes a JSON summary, and keeps the logs, under bench/results/.

Version 2 is the same network reading mirrored images: a different model (its answers differ on most
images), so an answer from the wrong version is caught as wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import common

from client import arguments, contract

CLIENTS = 16
# How a stopping (or stopped) server turns away a call sent after SIGTERM: gRPC cancels calls that
# arrive during its graceful stop, and refuses connections once it is gone. Either is retried.
REFUSALS = ("UNAVAILABLE", "CANCELLED")
# Messages of gRPC failures that never reached a server (nothing listening, or it refused new calls).
NOT_ACCEPTED = (
    "failed to connect",
    "connection refused",
    "connections to all backends failing",
    "server is shutting down",
    "failed to pick subchannel",
    "dns resolution failed",
)


@dataclass(frozen=True)
class SoakConfig:
    """How big and how long."""

    requests: int = 100_000  # the steady stream's size; RSS is compared in the middle and at the end
    time_limit_s: float = 900.0
    poll_s: float = 1.0  # digits-serve --file_system_poll_wait_seconds
    disconnects: int = 200  # abandoned requests per protocol
    batching: bool = True
    swap_slack_s: float = 0.5  # allowed beyond poll + load for a new version to answer


@dataclass
class Tally:
    """What the client threads saw, shared under a lock."""

    sent: int = 0
    ok: int = 0
    wrong: int = 0
    failed: int = 0  # failures that are bugs: outside a client's restart window, or reached a server
    accepted_then_failed: int = 0
    refused_while_down: int = 0  # not accepted: sent in the restart window (retried)
    refusals: dict[str, int] = field(default_factory=dict)  # gRPC code -> count, while restarting
    versions: dict[int, int] = field(default_factory=dict)
    first_seen: dict[int, float] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, sample: str) -> None:
        if len(self.samples) < 10:
            self.samples.append(sample[:300])


class Stream:
    """The 16 client threads and the answers they must get."""

    def __init__(self, target: str, images, expected: dict[int, tuple], model_name: str):
        from tensorflow_serving.apis import predict_pb2

        from client.contract import INPUT_NAME, SIGNATURE_NAME
        from client.grpc_transport import ndarray_to_proto

        self.target, self.images, self.expected = target, images, expected
        self.requests = []
        for image in images:
            request = predict_pb2.PredictRequest()
            request.model_spec.name, request.model_spec.signature_name = model_name, SIGNATURE_NAME
            request.inputs[INPUT_NAME].CopyFrom(ndarray_to_proto(image[None]))
            self.requests.append(request)
        self.tally = Tally()
        self.stop = threading.Event()
        # The restart window is per client: from SIGTERM until that client is first answered by the
        # restarted server. A channel whose connection attempts were refused while the server was down
        # keeps failing calls fast ("failed to connect", with the last attempt's error) until its
        # reconnect backoff (up to 500 ms + jitter) runs out, so other clients are served again first.
        self.sigterm_at: float | None = None  # monotonic time of SIGTERM (None before it)
        self.restarted_at: float | None = None  # when the restarted server was ready
        self.reconnecting: set[int] = set()  # clients not yet answered by the restarted server
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(CLIENTS)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            if thread.ident is not None:  # started
                thread.join(timeout=60)

    def _client(self, index: int) -> None:
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        channel = grpc.insecure_channel(
            self.target,
            options=[
                ("grpc.use_local_subchannel_pool", 1),  # each client its own connection
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 500),
            ],
        )
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        rng = random.Random(index)
        while not self.stop.is_set():
            i = rng.randrange(len(self.requests))
            began = time.monotonic()
            with self.tally.lock:
                self.tally.sent += 1
            try:
                response = stub.Predict(self.requests[i], timeout=30)
            except grpc.RpcError as error:
                self._failed(error, began, index)
                time.sleep(0.1)  # a client backing off before it retries
                continue
            self._check(response, i, began, index)
        channel.close()

    def _failed(self, error, began: float, client: int) -> None:
        detail = f"{error.code().name}: {error.details()}"
        reached = not any(text in detail.lower() for text in NOT_ACCEPTED)
        tally = self.tally
        with tally.lock:
            restarted = self.restarted_at is not None and began >= self.restarted_at
            if client not in self.reconnecting:  # before SIGTERM, or answered since the restart
                tally.failed += 1
                tally.note(f"failed outside a restart: {detail}")
            elif began < self.sigterm_at and reached:
                tally.accepted_then_failed += 1
                tally.note(f"accepted before SIGTERM, then failed: {detail}")
            elif reached and (restarted or error.code().name not in REFUSALS):
                # sent to the restarted (ready) server, or an error other than a refusal: a failure
                tally.failed += 1
                tally.note(f"failed during the restart: {detail}")
            else:
                tally.refused_while_down += 1
                tally.refusals[error.code().name] = tally.refusals.get(error.code().name, 0) + 1

    def _check(self, response, i: int, began: float, client: int) -> None:
        import numpy as np

        from client.contract import OUTPUT_CLASSES, OUTPUT_PROBABILITIES
        from client.grpc_transport import proto_to_ndarray

        version = response.model_spec.version.value
        want = self.expected.get(version)
        right = False
        if want is not None:
            probabilities = proto_to_ndarray(response.outputs[OUTPUT_PROBABILITIES])[0]
            classes = proto_to_ndarray(response.outputs[OUTPUT_CLASSES])
            right = int(classes[0]) == int(want[1][i]) and np.allclose(probabilities, want[0][i], atol=1e-4)
        tally = self.tally
        with tally.lock:
            tally.ok += 1
            tally.versions[version] = tally.versions.get(version, 0) + 1
            tally.first_seen.setdefault(version, time.monotonic())
            if self.restarted_at is not None and began >= self.restarted_at:
                self.reconnecting.discard(client)  # sent after the restart and answered: back
            if not right:
                tally.wrong += 1
                tally.note(f"wrong answer for image {i} from version {version}")

    def wait_ok(self, count: int, deadline: float) -> bool:
        """Wait until `count` requests have succeeded (False at the deadline)."""
        while self.tally.ok < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def sigterm(self) -> None:
        """Open every client's restart window; call just before sending SIGTERM."""
        with self.tally.lock:
            self.sigterm_at, self.restarted_at = time.monotonic(), None
            self.reconnecting = set(range(CLIENTS))

    def restarted(self) -> None:
        """The restarted server is ready: each client's window closes once it is answered again."""
        with self.tally.lock:
            self.restarted_at = time.monotonic()

    def wait_reconnected(self, deadline: float) -> bool:
        """Wait until every client has been answered by the restarted server (False at the deadline)."""
        while self.reconnecting:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


# ----------------------------------------------------------------------------------------- the model
def mirrored_version(source: Path, destination: Path) -> None:
    """Save a second, different model: the source's signature applied to left-right mirrored images."""
    import tensorflow as tf

    from client.contract import IMAGE_SIZE, INPUT_NAME, SIGNATURE_NAME

    inner = tf.saved_model.load(str(source))

    class Mirrored(tf.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner

        @tf.function(
            input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE], tf.uint8, name=INPUT_NAME)]
        )
        def serve(self, images):
            return self.inner.signatures[SIGNATURE_NAME](**{INPUT_NAME: tf.reverse(images, axis=[2])})

    module = Mirrored()
    tf.saved_model.save(module, str(destination), signatures={SIGNATURE_NAME: module.serve})


def predictions(version_dir: Path, images) -> tuple:
    """In-process (probabilities [N,10], classes [N]) of one version: the right answers."""
    import tensorflow as tf

    from client.contract import INPUT_NAME, OUTPUT_CLASSES, OUTPUT_PROBABILITIES, SIGNATURE_NAME

    out = tf.saved_model.load(str(version_dir)).signatures[SIGNATURE_NAME](
        **{INPUT_NAME: tf.constant(images)}
    )
    return out[OUTPUT_PROBABILITIES].numpy(), out[OUTPUT_CLASSES].numpy()


def drop_in(source: Path, base: Path, version: int, damage=None) -> float:
    """Copy a version into a hidden temp dir under `base`, optionally damage it, rename it into place."""
    staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=base))
    shutil.copytree(source, staging / "v")
    if damage is not None:
        damage(staging / "v")
    os.rename(staging / "v", base / str(version))
    staging.rmdir()
    return time.monotonic()


def truncate_saved_model(path: Path) -> None:
    pb = path / "saved_model.pb"
    pb.write_bytes(pb.read_bytes()[: pb.stat().st_size // 3])


def remove_variables(path: Path) -> None:
    shutil.rmtree(path / "variables")


# ------------------------------------------------------------------------------------- disconnects
def disconnect_mid_request(
    rest_port: int, grpc_target: str, count: int, request_bytes: bytes, rest_body: bytes
) -> int:
    """Clients that go away mid-request, `count` of each kind; returns how many were made."""
    import grpc

    path = b"/v1/models/mnist:predict"
    made = 0
    for i in range(count):
        with socket.create_connection(("127.0.0.1", rest_port), timeout=5) as sock:
            if i % 2:  # half a body, then gone
                sock.sendall(
                    b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: "
                    + str(len(rest_body)).encode()
                    + b"\r\n\r\n"
                    + rest_body[: len(rest_body) // 2]
                )
            else:  # a whole request, gone before the answer (RST on close)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.sendall(
                    b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: " + str(len(rest_body)).encode() + b"\r\n\r\n" + rest_body
                )
        made += 1
    channel = grpc.insecure_channel(grpc_target)
    method = channel.unary_unary(common.PREDICT_METHOD)
    for i in range(count):
        if i % 2:  # the client's deadline passes mid-call
            try:
                method(request_bytes, timeout=0.0005)
            except grpc.RpcError:
                pass
        else:  # the client cancels
            future = method.future(request_bytes, timeout=10)
            time.sleep(0.0002)
            future.cancel()
        made += 1
    channel.close()
    return made


def thread_count(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# ---------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--requests",
        type=arguments.positive_int,
        help="size of the steady stream (default 100000; --quick 2000); more when steps 1-3 outlast its "
        "first half, so that the memory check spans as many requests again",
    )
    parser.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    parser.add_argument(
        "--time-limit", type=arguments.positive_float, help="seconds before the stream is cut short"
    )
    parser.add_argument(
        "--model-base",
        type=Path,
        help="model base path to take the latest version from (default: trained into bench/results)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=contract.data_dir(),
        help="folder with mnist.npz (default: $DIGITS_DATA_DIR or data)",
    )
    parser.add_argument(
        "--no-batching", action="store_true", help="run digits-serve without --enable_batching"
    )
    parser.add_argument(
        "--swap-slack",
        type=arguments.non_negative_float,
        default=SoakConfig.swap_slack_s,
        help="seconds allowed beyond poll + load time for a new version to answer (default 0.5)",
    )
    parser.add_argument("--out", type=Path, help="JSON summary file (default bench/results/soak.json)")
    return parser


class Checks:
    """Named pass/fail checks, printed as they are decided."""

    def __init__(self):
        self.results: list[tuple[str, bool, str]] = []

    def add(self, name: str, ok: bool, detail: str = "") -> bool:
        self.results.append((name, ok, detail))
        print(f"  [{'ok' if ok else 'FAIL'}] {name}{': ' + detail if detail else ''}", flush=True)
        return ok

    @property
    def all_ok(self) -> bool:
        return all(ok for _, ok, _ in self.results)


def memory_check(mid: tuple[int, float], end: tuple[int, float], span: int) -> tuple[bool, str]:
    """Whether the server's RSS held over `span` requests: `mid` and `end` are (requests answered, MiB).

    Not checked, which fails, when fewer than `span` requests came between the two readings (the stream
    was cut short) or a reading found no server: two readings back to back prove nothing.
    """
    (mid_ok, mid_mib), (end_ok, end_mib) = mid, end
    readings = f"{mid_mib:.0f} MiB at {mid_ok:,} requests, {end_mib:.0f} MiB at {end_ok:,}"
    if mid_mib <= 0 or end_mib <= 0:
        return False, f"not checked: no server to read ({readings})"
    if end_ok - mid_ok < span:
        between = end_ok - mid_ok
        return False, f"not checked: {between:,} of {span:,} requests between the readings ({readings})"
    growth = end_mib - mid_mib
    return growth <= max(32.0, 0.05 * mid_mib), f"{growth:+.0f} MiB: {readings}"


def main(argv: list[str] | None = None) -> int:
    """Run the soak; 0 when every check passed."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.data_dir = common.mnist_data_dir(parser, args.data_dir)
    quick = SoakConfig(requests=2_000, time_limit_s=120, poll_s=0.5, disconnects=40)
    config = quick if args.quick else SoakConfig()
    config = SoakConfig(
        requests=config.requests if args.requests is None else args.requests,
        time_limit_s=config.time_limit_s if args.time_limit is None else args.time_limit,
        poll_s=config.poll_s,
        disconnects=config.disconnects,
        batching=not args.no_batching,
        swap_slack_s=args.swap_slack,
    )
    out = args.out or common.RESULTS_DIR / "soak.json"
    out.unlink(missing_ok=True)  # a run that stops early must not leave an older run's verdict behind
    models = common.ensure_model(args.model_base, common.RESULTS_DIR, data_dir=args.data_dir)
    source = common.latest_version_dir(models)
    started = time.monotonic()
    deadline = started + config.time_limit_s
    common.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="soak-", dir=common.RESULTS_DIR))
    base, staging, log_dir = work / "models" / "mnist", work / "staging", work / "logs"
    base.mkdir(parents=True)
    staging.mkdir()

    import numpy as np

    with np.load(args.data_dir / "mnist.npz") as archive:
        images = archive["x_test"][:512]
    shutil.copytree(source, base / "1")
    mirrored_version(source, staging / "2")
    expected = {1: predictions(base / "1", images), 2: predictions(staging / "2", images)}
    batching = [
        "--enable_batching",
        f"--batching_parameters_file={common.REPO_ROOT / 'serving/config/batching.config'}",
    ]
    ports = {"grpc_port": common.free_port(), "rest_port": common.free_port()}

    def start_server(name: str) -> common.ModelServerProcess:
        return common.ModelServerProcess(
            name, base, log_dir, poll_s=config.poll_s, **ports, extra=batching if config.batching else ()
        ).wait_ready()

    checks = Checks()
    print(
        f"soak: {CLIENTS} gRPC clients, {config.requests:,} requests, poll {config.poll_s} s, "
        f"batching {'on' if config.batching else 'off'}; work dir {work}",
        flush=True,
    )
    stream = Stream(f"127.0.0.1:{ports['grpc_port']}", images, expected, "mnist")
    rss: dict[str, float] = {}
    server = None
    try:
        server = start_server("soak-serve")
        rss["ready"] = common.rss_mib(server.pid)
        stream.start()
        warm = max(200, config.requests // 20)
        stream.wait_ok(warm, deadline)
        rss["warm"] = common.rss_mib(server.pid)
        threads_before = thread_count(server.pid)

        print("1. hot-swap: version 2 dropped in", flush=True)
        dropped = drop_in(staging / "2", base, 2)
        while 2 not in stream.tally.first_seen and time.monotonic() < deadline:
            time.sleep(0.02)
        seen = stream.tally.first_seen.get(2)
        load_s = _load_seconds(server.log_text(), 2)
        delay = (seen - dropped) if seen else float("inf")
        checks.add(
            "new version served within the poll interval (+ its load time)",
            delay <= config.poll_s + load_s + config.swap_slack_s,
            f"{delay:.2f} s after the rename (poll {config.poll_s} s, load {load_s:.2f} s)",
        )
        _wait_state(server, 1, "END", deadline)

        print("2. corrupt versions dropped in", flush=True)
        for version, damage, what in (
            (3, truncate_saved_model, "truncated saved_model.pb"),
            (4, remove_variables, "no variables/"),
        ):
            drop_in(staging / "2", base, version, damage)
            entry = _wait_state(server, version, "END", deadline)
            message = (entry or {}).get("status", {}).get("error_message", "")
            checks.add(
                f"status reports the corrupt version {version} ({what})",
                bool(message),
                message[:120] or "no error in status",
            )
            time.sleep(config.poll_s)
            good = _wait_state(server, 2, "AVAILABLE", deadline)
            checks.add(f"version 2 keeps serving after version {version}", good is not None)
        for version in (3, 4):
            shutil.rmtree(base / str(version))

        print("3. clients disconnecting mid-request", flush=True)
        made = disconnect_mid_request(
            server.rest_port,
            server.grpc_target,
            config.disconnects,
            stream.requests[0].SerializeToString(),
            common.rest_predict_body(images[0]),
        )
        ok_before = stream.tally.ok
        stream.wait_ok(ok_before + 200, deadline)
        settle = time.monotonic() + 10  # connection threads of abandoned requests take a moment to end
        while (threads_after := thread_count(server.pid)) > threads_before + 4 and time.monotonic() < settle:
            time.sleep(0.2)
        status, _ = common.http_json(f"{server.rest_url}/v2/health/ready")
        checks.add(
            "server unaffected by abandoned requests",
            server.alive() and status == 200 and threads_after <= threads_before + 4,
            f"{made} abandoned; threads {threads_before} -> {threads_after}; ready {status}",
        )

        # Memory over the stream's second half, after steps 1-3: when they outlasted the first half, the
        # stream runs on for as many requests again, so that the two readings are never back to back.
        half = config.requests // 2
        stream.wait_ok(half, deadline)
        rss["mid"], mid_ok = common.rss_mib(server.pid), stream.tally.ok
        span = config.requests - half
        if not stream.wait_ok(mid_ok + span, deadline):
            print(f"  time limit: the stream reached {stream.tally.ok:,} of {mid_ok + span:,} requests")
        rss["end"], end_ok = common.rss_mib(server.pid), stream.tally.ok
        held, detail = memory_check((mid_ok, rss["mid"]), (end_ok, rss["end"]), span)
        checks.add(
            "no memory growth in the steady stream",
            held,
            f"RSS {rss['warm']:.0f} MiB after warm-up; {detail}",
        )

        print("4. SIGTERM and restart", flush=True)
        stream.sigterm()
        server.signal(signal.SIGTERM)
        try:
            code = server.popen.wait(60)
        except Exception:  # noqa: BLE001 -- a hang is the failure reported below
            code = None
        stopped_s = time.monotonic() - stream.sigterm_at
        checks.add("SIGTERM: clean exit", code == 0, f"exit {code} after {stopped_s:.1f} s")
        server.stop()
        server = start_server("soak-serve-restarted")
        stream.restarted()
        ready_s = stream.restarted_at - stream.sigterm_at
        back_ok = stream.tally.ok
        back_by = time.monotonic() + 60
        resumed = stream.wait_reconnected(back_by) and stream.wait_ok(back_ok + 200, back_by)
        downtime = time.monotonic() - stream.sigterm_at
        missing = len(stream.reconnecting)
        checks.add(
            "clients served again after the restart",
            resumed,
            f"ready {ready_s:.1f} s from SIGTERM, all {CLIENTS} clients answered after {downtime:.1f} s"
            if resumed
            else f"{missing} of {CLIENTS} clients not answered by the restarted server, {downtime:.1f} s on",
        )
        checks.add(
            "every request accepted before SIGTERM completed",
            stream.tally.accepted_then_failed == 0,
            f"{stream.tally.accepted_then_failed} accepted-then-failed; "
            f"{stream.tally.refused_while_down} sent after SIGTERM and refused (retried: "
            f"{dict(sorted(stream.tally.refusals.items()))})",
        )
    except Exception as error:  # noqa: BLE001 -- a server that would not start (or a bug): a failed soak
        if not isinstance(error, RuntimeError):  # RuntimeErrors carry the server's log tail; others a trace
            traceback.print_exc()
        checks.add("every step ran to its end", False, f"stopped by {type(error).__name__}: {error}")
    finally:
        stream.join()
        if server is not None:
            server.stop()
    tally = stream.tally
    checks.add("no failed request", tally.failed == 0, f"{tally.failed} failed")
    checks.add("no wrong answer", tally.wrong == 0, f"{tally.wrong} wrong")
    print(
        f"\nsent {tally.sent:,}  ok {tally.ok:,}  failed {tally.failed}  wrong {tally.wrong}  "
        f"accepted-then-failed {tally.accepted_then_failed}  "
        f"refused while restarting {tally.refused_while_down}"
    )
    print(f"answers by version: {dict(sorted(tally.versions.items()))}")
    print("server RSS (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in rss.items()))
    for sample in tally.samples:
        print(f"  e.g. {sample}")
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "passed": checks.all_ok,
        "checks": [{"check": name, "ok": ok, "detail": detail} for name, ok, detail in checks.results],
        "config": asdict(config),
        "requests": {
            "sent": tally.sent,
            "ok": tally.ok,
            "failed": tally.failed,
            "wrong": tally.wrong,
            "accepted_then_failed": tally.accepted_then_failed,
            "refused_while_restarting": tally.refused_while_down,
            "refusals": tally.refusals,
        },
        "answers_by_version": {str(k): v for k, v in sorted(tally.versions.items())},
        "server_rss_mib": rss,
        "wall_s": round(time.monotonic() - started, 1),
        "logs": str(log_dir),
    }
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{'PASS' if checks.all_ok else 'FAIL'} in {time.monotonic() - started:.0f} s; logs in {log_dir}")
    print(f"summary: {out}")
    if checks.all_ok:
        shutil.rmtree(work / "models", ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
    return 0 if checks.all_ok else 1


def _load_seconds(log_text: str, version: int) -> float:
    """How long the server said loading `version` took (0 when not logged yet)."""
    import re

    found = re.findall(
        rf"Successfully loaded servable version {{name: \S+ version: {version}}} in ([\d.]+) s", log_text
    )
    return float(found[-1]) if found else 0.0


def _wait_state(server: common.ModelServerProcess, version: int, state: str, deadline: float) -> dict | None:
    """Wait until the REST status shows `version` in `state`; its status entry, or None at the deadline."""
    while time.monotonic() < deadline:
        for entry in server.model_status():
            if str(entry.get("version")) == str(version) and entry.get("state") == state:
                return entry
        time.sleep(0.05)
    return None


if __name__ == "__main__":
    sys.exit(main())
