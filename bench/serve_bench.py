"""Serving benchmark (`make bench-serve`): in-process limit, digits-serve, gateway, naive baseline, eval.

Everything is measured side by side in one run on this machine, over loopback, so the ratios are fair:
clients run in separate processes (spawned, without TensorFlow) with one connection each, sending
pre-encoded single-image requests. Prints a table with each target and whether it was met, and writes
the numbers as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import common

from client import arguments, contract

BATCHING_FILE = common.REPO_ROOT / "serving" / "config" / "batching.config"
CONCURRENCIES = (1, 8, 32)
EVAL_SETTINGS = ((1000, 2), (500, 4), (2000, 2))  # (batch size, concurrency) tried for digits-eval


@dataclass(frozen=True)
class BenchConfig:
    """How long and how much to measure."""

    duration_s: float = 4.0  # per load measurement
    latency_requests: int = 2000  # cap for the concurrency-1 latency runs
    inprocess_calls: int = 500
    eval_settings: tuple[tuple[int, int], ...] = EVAL_SETTINGS
    processes: int = 8  # client processes (clients are spread over them)

    @classmethod
    def quick(cls) -> BenchConfig:
        return cls(duration_s=1.5, latency_requests=400, inprocess_calls=150, eval_settings=EVAL_SETTINGS[:1])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--model-base",
        type=Path,
        help="model base path with numbered versions (default: train one into bench/results)",
    )
    parser.add_argument("--model-name", default="mnist", help="the served model's name (default mnist)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=contract.data_dir(),
        help="folder with mnist.npz (default: $DIGITS_DATA_DIR or data)",
    )
    parser.add_argument("--quick", action="store_true", help="short measurements (about a minute)")
    parser.add_argument(
        "--duration", type=arguments.positive_float, help="seconds per load measurement (> 0)"
    )
    parser.add_argument("--out", type=Path, help="JSON results file (default bench/results/serve_bench.json)")
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra digits-serve flag for both servers (repeatable), e.g. --server-arg=--grpc_max_threads=4",
    )
    return parser


# ------------------------------------------------------------------------------------------ in-process
def measure_in_process(version_dir: Path, images, calls: int) -> dict:
    """The limit: the SavedModel signature called in this process, 1 image and in batches."""
    import tensorflow as tf

    from client.contract import INPUT_NAME, SIGNATURE_NAME

    signature = tf.saved_model.load(str(version_dir)).signatures[SIGNATURE_NAME]
    one = images[:1]
    for _ in range(20):
        signature(**{INPUT_NAME: tf.constant(one)})
    latencies = []
    for i in range(calls):
        began = time.perf_counter()
        out = signature(**{INPUT_NAME: tf.constant(images[i % len(images)][None])})
        {k: v.numpy() for k, v in out.items()}
        latencies.append(time.perf_counter() - began)
    batched = {}
    for size in (100, 1000):
        signature(**{INPUT_NAME: tf.constant(images[:size])})
        began, done = time.perf_counter(), 0
        while time.perf_counter() - began < 1.0:
            out = signature(**{INPUT_NAME: tf.constant(images[done % 5000 : done % 5000 + size])})
            out["classes"].numpy()
            done += size
        batched[size] = done / (time.perf_counter() - began)
    return {
        "p50_ms": 1000 * common.percentile(latencies, 50),
        "p99_ms": 1000 * common.percentile(latencies, 99),
        "batched_images_per_s": batched,
    }


def predict_in_process(version_dir: Path, images, batch: int = 1000):
    """Classes for every image, and the wall time of the signature calls (best of two passes)."""
    import numpy as np
    import tensorflow as tf

    from client.contract import INPUT_NAME, OUTPUT_CLASSES, SIGNATURE_NAME

    signature = tf.saved_model.load(str(version_dir)).signatures[SIGNATURE_NAME]
    best, classes = float("inf"), None
    for _ in range(2):
        began = time.perf_counter()
        parts = [
            signature(**{INPUT_NAME: tf.constant(images[i : i + batch])})[OUTPUT_CLASSES].numpy()
            for i in range(0, len(images), batch)
        ]
        best = min(best, time.perf_counter() - began)
        classes = np.concatenate(parts)
    return classes, best


# ------------------------------------------------------------------------------------------- helpers
def png_upload(image) -> bytes:
    """A test digit as a user would upload it: dark ink on white paper, 112x112 PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(255 - image).resize((112, 112), Image.Resampling.BILINEAR).save(buffer, format="PNG")
    return buffer.getvalue()


def check_answers(target: str, images, expected_classes, model_name: str) -> int:
    """How many of `images` the server (via our gRPC client) classifies unlike the in-process call."""
    from client.model_client import ClientConfig, connect

    with connect(ClientConfig(target, protocol="grpc", model_name=model_name)) as client:
        got = client.predict(images).classes
    return int((got != expected_classes).sum())


def grpc_threads(server_args: list[str]) -> int:
    """digits-serve's gRPC worker threads: --grpc_max_threads among `server_args`, else its default."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--grpc_max_threads", type=int, default=4 * (os.cpu_count() or 1))
    return parser.parse_known_args(server_args)[0].grpc_max_threads


def start_echo_server(
    target: str, request: bytes, log_dir: Path, threads: int
) -> tuple[common.Process, str]:
    """bench/grpc_echo.py answering with digits-serve's own response bytes to `request`, and its target.

    `threads`: digits-serve's gRPC worker threads, so that the two differ in what they do, not their pool.
    """
    import grpc

    with grpc.insecure_channel(target) as channel:
        response = channel.unary_unary(common.PREDICT_METHOD)(request, timeout=30)
    response_file = log_dir / "echo_response.bin"
    response_file.write_bytes(response)
    port = common.free_port()
    args = ["--port", str(port), "--response", str(response_file), "--max-threads", str(threads)]
    echo = common.bench_script("grpc-echo", "grpc_echo.py", args, log_dir)
    echo_target = f"127.0.0.1:{port}"

    def answers() -> bool:
        with grpc.insecure_channel(echo_target) as channel:
            try:
                return channel.unary_unary(common.PREDICT_METHOD)(request, timeout=2) == response
            except grpc.RpcError:  # not listening yet
                return False

    echo.wait_until(answers, 60, "an answer on its port")
    return echo, echo_target


def run_eval(
    target: str, model_name: str, data_dir: Path, batch: int, concurrency: int, report_dir: Path
) -> dict:
    """`digits-eval` over gRPC on the 10,000 test images; its own report.json gives wall time and accuracy."""
    argv = [
        sys.executable,
        "-m",
        "client.evaluate",  # digits-eval, from this checkout (run in the repository root)
        "--target",
        target,
        "--protocol",
        "grpc",
        "--model-name",
        model_name,
        "--data-dir",
        str(data_dir),
        "--batch-size",
        str(batch),
        "--concurrency",
        str(concurrency),
        "--report",
        str(report_dir),
    ]
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=common.console_scripts_env(),
        cwd=common.REPO_ROOT,
        timeout=300,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"digits-eval failed ({proc.returncode}): {proc.stderr[-800:]}")
    report = json.loads((report_dir / "report.json").read_text())
    return {
        "batch_size": batch,
        "concurrency": concurrency,
        "wall_s": report["wall_s"],
        "images_per_s": report["throughput_images_per_s"],
        "errors": report["errors"],
        "images": report["images"],
    }


# ----------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    """Run every measurement, print the table and the targets, write the JSON; 0 when all targets are met."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.data_dir = common.mnist_data_dir(parser, args.data_dir)
    config = BenchConfig.quick() if args.quick else BenchConfig()
    if args.duration is not None:
        config = BenchConfig(**{**asdict(config), "duration_s": args.duration})
    results_dir = common.RESULTS_DIR
    out = args.out or results_dir / "serve_bench.json"
    out.unlink(missing_ok=True)  # a run that stops early must not leave an older run's numbers behind
    run_dir = results_dir / "serve_bench_run"
    run_dir.mkdir(parents=True, exist_ok=True)
    base = common.ensure_model(
        args.model_base, results_dir, model_name=args.model_name, data_dir=args.data_dir
    )
    version_dir = common.latest_version_dir(base)

    import numpy as np

    with np.load(args.data_dir / "mnist.npz") as archive:
        images, labels = archive["x_test"], archive["y_test"].astype(np.int64)

    started = time.monotonic()
    load_before = os.getloadavg()[0]  # other work on the machine skews throughput (not CPU per request)
    procs: list[common.Process] = []
    try:
        log_dir = run_dir / "logs"
        # Each process joins `procs` as it starts, so that a failure in the next start stops it too.
        off = common.ModelServerProcess(
            "serve-batching-off", base, log_dir, model_name=args.model_name, extra=args.server_arg
        )
        procs.append(off)
        on = common.ModelServerProcess(
            "serve-batching-on",
            base,
            log_dir,
            model_name=args.model_name,
            batching_file=BATCHING_FILE,
            extra=args.server_arg,
        )
        procs.append(on)
        naive_port = common.free_port()
        naive_args = ["--model-dir", str(version_dir), "--port", str(naive_port)]
        naive = common.bench_script("naive-flask", "naive_flask.py", naive_args, log_dir)
        procs.append(naive)
        off.wait_ready()
        gateway_port = common.free_port()
        gateway_env = {
            **common.console_scripts_env(),
            "DIGITS_MODEL_SERVER": off.grpc_target,
            "DIGITS_PROTOCOL": "grpc",
            "DIGITS_MODEL_NAME": args.model_name,
        }
        gateway = common.Process(
            "gateway",
            [
                str(Path(sys.executable).parent / "gunicorn"),
                "--bind",
                f"127.0.0.1:{gateway_port}",
                "--workers",
                "1",
                "--threads",
                "4",
                "client.gateway:create_app()",
            ],
            log_dir,
            env=gateway_env,
        )
        procs.append(gateway)
        on.wait_ready()
        common.wait_http_ok(f"http://127.0.0.1:{naive_port}/healthz", naive, 120)
        common.wait_http_ok(f"http://127.0.0.1:{gateway_port}/readyz", gateway, 120)
        print(f"servers ready in {time.monotonic() - started:.0f} s; measuring ...", flush=True)

        results: dict = {
            "config": asdict(config),
            "model": str(version_dir),
            "cpus": os.cpu_count(),
            "server_args": args.server_arg,
        }
        results["in_process"] = measure_in_process(version_dir, images, config.inprocess_calls)
        request = common.predict_request_bytes(images[0], args.model_name)
        threads = grpc_threads(args.server_arg)
        echo, echo_target = start_echo_server(off.grpc_target, request, log_dir, threads)
        procs.append(echo)
        expected, inproc_eval_s = predict_in_process(version_dir, images)
        sample = np.arange(0, len(images), 97)
        results["wrong_answers"] = {
            name: check_answers(p.grpc_target, images[sample], expected[sample], args.model_name)
            for name, p in (("off", off), ("on", on))
        }

        grpc_payloads = tuple(common.predict_request_bytes(images[i], args.model_name) for i in range(256))
        rest_payloads = tuple(common.rest_predict_body(images[i]) for i in range(256))
        rest_path = f"/v1/models/{args.model_name}:predict"
        serving: dict = {}
        with common.LoadPool(config.processes) as pool:
            for mode, server in (("off", off), ("on", on)):
                for protocol in ("grpc", "rest"):
                    for clients in CONCURRENCIES:
                        job = (
                            common.LoadJob("grpc", server.grpc_target, grpc_payloads)
                            if protocol == "grpc"
                            else common.LoadJob(
                                "http", f"127.0.0.1:{server.rest_port}", rest_payloads, path=rest_path
                            )
                        )
                        job = _bounded(job, config, clients)
                        cpu_before = common.cpu_seconds(server.pid)
                        outcome = pool.run(job, clients)
                        result = outcome.summary()
                        # CPU per request is the server's cost, whatever else runs on the machine. The
                        # reading spans the clients' warm-up requests too, so they count as served.
                        used = common.cpu_seconds(server.pid) - cpu_before
                        served = outcome.ok + outcome.warmup_ok
                        result["server_cpu_us_per_req"] = round(1e6 * used / max(served, 1))
                        serving[f"{protocol}/batching-{mode}/c{clients}"] = result
                        _progress(f"digits-serve {protocol} batching {mode} c={clients}", result)
            results["digits_serve"] = serving
            ceiling = {}
            for clients in (1, 32):
                job = _bounded(common.LoadJob("grpc", echo_target, grpc_payloads), config, clients)
                ceiling[f"c{clients}"] = pool.run(job, clients).summary()
                _progress(f"bare gRPC server, canned answer c={clients}", ceiling[f"c{clients}"])
            results["transport_ceiling"] = ceiling
            png = tuple(png_upload(images[i]) for i in range(32))
            gw_job = _bounded(
                common.LoadJob(
                    "http", f"127.0.0.1:{gateway_port}", png, path="/v1/predict", content_type="image/png"
                ),
                config,
                1,
            )
            results["gateway"] = pool.run(gw_job, 1).summary()
            _progress("gateway PNG upload c=1", results["gateway"])
            naive_results = {}
            for clients in (1, 32):
                job = common.LoadJob(
                    "http",
                    f"127.0.0.1:{naive_port}",
                    rest_payloads,
                    path=rest_path,
                    duration_s=config.duration_s,
                    timeout_s=60,
                )
                naive_results[f"c{clients}"] = pool.run(job, clients).summary()
                _progress(f"naive Flask + model.predict c={clients}", naive_results[f"c{clients}"])
            results["naive"] = naive_results

        evals = [
            run_eval(
                off.grpc_target, args.model_name, args.data_dir, batch, conc, run_dir / f"eval-{batch}-{conc}"
            )
            for batch, conc in config.eval_settings
        ]
        best_eval = min(evals, key=lambda e: e["wall_s"])
        inproc_errors = int((expected != labels).sum())
        results["eval"] = {
            "runs": evals,
            "best": best_eval,
            "in_process_wall_s": inproc_eval_s,
            "in_process_errors": inproc_errors,
        }
        results["server_rss_mib"] = {"off": common.rss_mib(off.pid), "on": common.rss_mib(on.pid)}
    finally:
        for proc in reversed(procs):
            proc.stop()
    results["wall_s"] = round(time.monotonic() - started, 1)
    results["load_average"] = (load_before, os.getloadavg()[0])
    results["targets"] = targets(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")  # first: the numbers outlive a bug in the table
    print(render(results))
    print(f"\nresults: {out}   logs: {run_dir / 'logs'}")
    return 0 if all(t["met"] for t in results["targets"]) else 1


def _bounded(job: common.LoadJob, config: BenchConfig, clients: int) -> common.LoadJob:
    """The job with the run's duration and, at concurrency 1, a request cap."""
    cap = config.latency_requests if clients == 1 else 10**9
    return replace(job, duration_s=config.duration_s, requests_per_client=cap)


def _progress(what: str, result: dict) -> None:
    cpu = (
        f"  server CPU {result['server_cpu_us_per_req']} us/req" if "server_cpu_us_per_req" in result else ""
    )
    print(
        f"  {what:<42} {result['rps']:>8.0f} req/s  p50 {result['p50_ms']:7.2f} ms  "
        f"p99 {result['p99_ms']:7.2f} ms  errors {result['errors']}{cpu}",
        flush=True,
    )


def targets(results: dict) -> list[dict]:
    """The issue's targets, each with the measured values and whether it was met.

    A target whose measurement answered no request is missed, with that as its reason (never a ratio
    divided by zero, which would lose the whole run's JSON); so is a ratio whose baseline (the divisor)
    failed requests: req/s counts answers only, so a failing baseline would make the ratio look better.
    """
    inproc = results["in_process"]["p50_ms"]
    serving = results["digits_serve"]
    grpc1, rest1 = serving["grpc/batching-off/c1"], serving["rest/batching-off/c1"]
    grpc_p50, rest_p50 = grpc1["p50_ms"], rest1["p50_ms"]
    on32, off32 = serving["grpc/batching-on/c32"]["rps"], serving["grpc/batching-off/c32"]["rps"]
    naive = max(r["rps"] for r in results["naive"].values())
    ceiling32 = results["transport_ceiling"]["c32"]["rps"]
    evals = results["eval"]
    eval_ratio = evals["best"]["wall_s"] / evals["in_process_wall_s"]
    errors = sum(r["errors"] for r in serving.values()) + results["gateway"]["errors"]
    off32_failed = serving["grpc/batching-off/c32"]["errors"]
    naive_failed = sum(r["errors"] for r in results["naive"].values())
    unmeasured = {
        "grpc": _unanswered(("gRPC batching off c1", grpc1["requests"])),
        "rest": _unanswered(("REST batching off c1", rest1["requests"])),
        "batching": _unanswered(("gRPC batching on c32", on32), ("gRPC batching off c32", off32))
        or _failed_baseline("gRPC batching off c32", off32_failed),
        "naive": _unanswered(("gRPC batching on c32", on32), ("naive Flask", naive))
        or _failed_baseline("naive Flask", naive_failed),
    }
    return [
        {
            "target": "gRPC single-image p50 within 1 ms of in-process",
            "measured": unmeasured["grpc"]
            or f"{grpc_p50:.2f} ms vs {inproc:.2f} ms (+{common.shown(grpc_p50 - inproc, 1.0, 2)} ms)",
            "met": not unmeasured["grpc"] and grpc_p50 - inproc <= 1.0,
        },
        {
            "target": "REST single-image p50 within 2 ms of in-process",
            "measured": unmeasured["rest"]
            or f"{rest_p50:.2f} ms vs {inproc:.2f} ms (+{common.shown(rest_p50 - inproc, 2.0, 2)} ms)",
            "met": not unmeasured["rest"] and rest_p50 - inproc <= 2.0,
        },
        {
            "target": "32 gRPC clients: batching on >= 5x batching off",
            "measured": unmeasured["batching"]
            or f"{on32:.0f} vs {off32:.0f} req/s ({common.shown(on32 / off32, 5.0, 1)}x); a bare Python gRPC "
            f"server with a canned answer, same clients: {ceiling32:.0f} req/s = {ceiling32 / off32:.1f}x "
            "batching off",
            "met": not unmeasured["batching"] and on32 >= 5 * off32,
        },
        {
            "target": "32 gRPC clients, batching on >= 50x naive Flask",
            "measured": unmeasured["naive"]
            or f"{on32:.0f} vs {naive:.1f} req/s ({common.shown(on32 / naive, 50.0, 0)}x)",
            "met": not unmeasured["naive"] and on32 >= 50 * naive,
        },
        {
            "target": "10k eval via gRPC within 2x of in-process predict",
            "measured": f"{evals['best']['wall_s']:.2f} s vs {evals['in_process_wall_s']:.2f} s "
            f"({common.shown(eval_ratio, 2.0, 2)}x)",
            "met": eval_ratio <= 2.0,
        },
        {
            "target": "every answer right, no failed request",
            "measured": f"{sum(results['wrong_answers'].values())} wrong of sampled, {errors} failed, "
            f"eval errors {evals['best']['errors']} vs in-process {evals['in_process_errors']}",
            "met": (
                sum(results["wrong_answers"].values()) == 0
                and errors == 0
                and all(e["errors"] == evals["in_process_errors"] for e in evals["runs"])
            ),
        },
    ]


def _unanswered(*arms: tuple[str, float]) -> str:
    """Why a comparison was not measured: the arms (name, req/s or requests) that answered nothing, or ""."""
    empty = [name for name, value in arms if not value > 0]  # `not >`: NaN is empty too
    return f"not measured: {' and '.join(empty)} answered no request" if empty else ""


def _failed_baseline(name: str, failed: int) -> str:
    """Why a ratio over a baseline that failed requests is no measurement (its req/s counts answers only,
    so its failures would flatter the ratio), or ""."""
    return f"not measured: {name} failed {failed} requests, which would flatter the ratio" if failed else ""


def render(results: dict) -> str:
    """The results as a plain-text table."""
    ip = results["in_process"]
    lines = [
        "",
        f"serving benchmark ({results['cpus']} CPUs, model {results['model']}, {results['wall_s']} s, "
        f"load average {results['load_average'][0]:.1f} -> {results['load_average'][1]:.1f})",
        "",
        f"{'measurement':<44}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'server CPU us/req':>19}",
        f"{'in-process signature call, 1 image':<44}{1000 / ip['p50_ms']:>10.0f}{ip['p50_ms']:>10.2f}"
        f"{ip['p99_ms']:>10.2f}",
    ]
    for size, rate in ip["batched_images_per_s"].items():
        lines.append(f"{f'in-process, batches of {size} (images/s)':<44}{rate:>10.0f}")
    for key, r in results["digits_serve"].items():
        protocol, mode, clients = key.split("/")
        lines.append(
            f"{f'digits-serve {protocol} {mode} {clients}':<44}{r['rps']:>10.0f}{r['p50_ms']:>10.2f}"
            f"{r['p99_ms']:>10.2f}{r['server_cpu_us_per_req']:>19}"
        )
    for key, r in results["transport_ceiling"].items():
        lines.append(
            f"{f'bare gRPC server, canned answer {key}':<44}{r['rps']:>10.0f}{r['p50_ms']:>10.2f}"
            f"{r['p99_ms']:>10.2f}"
        )
    g = results["gateway"]
    lines.append(
        f"{'gateway PNG upload (gRPC behind) c1':<44}{g['rps']:>10.0f}{g['p50_ms']:>10.2f}"
        f"{g['p99_ms']:>10.2f}"
    )
    for key, r in results["naive"].items():
        lines.append(
            f"{f'naive Flask + model.predict {key}':<44}{r['rps']:>10.1f}{r['p50_ms']:>10.2f}"
            f"{r['p99_ms']:>10.2f}"
        )
    ev = results["eval"]
    for run in ev["runs"]:
        name = f"digits-eval 10k, batch {run['batch_size']} x{run['concurrency']} (images/s)"
        lines.append(f"{name:<44}{run['images_per_s']:>10.0f}   wall {run['wall_s']:.2f} s")
    lines.append(
        f"{'in-process predict 10k (images/s)':<44}{10000 / ev['in_process_wall_s']:>10.0f}   "
        f"wall {ev['in_process_wall_s']:.2f} s"
    )
    lines += ["", "targets:"]
    for t in results["targets"]:
        lines.append(f"  [{'met' if t['met'] else 'MISSED'}] {t['target']}: {t['measured']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
