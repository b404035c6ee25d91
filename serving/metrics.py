"""Prometheus metrics with TF Serving's series names, rendered as text at /monitoring/prometheus/metrics.

Names, labels, label values and buckets follow TF Serving 2.x (`servables/tensorflow/util.cc`,
`saved_model_warmup_util.cc`, `batching/batching_session.cc`, TF's `cc/saved_model/loader.cc`) and its
exporter (`util/prometheus_exporter.cc`): a request's `status` is the canonical code name (`OK`,
`INVALID_ARGUMENT`, `NOT_FOUND`, ...), latencies are in microseconds. Series of our own start with
`:digits:`.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager


def exponential_buckets(scale: float, growth: float, count: int) -> tuple[float, ...]:
    """TF's monitoring::Buckets::Exponential(scale, growth, count) bucket limits (+Inf comes last)."""
    limits, bound = [], float(scale)
    for _ in range(count):
        limits.append(bound)
        bound *= growth
    return tuple(limits)


# request_latency, runtime_latency, model_warmup_latency: 10 us * 1.8^i, 33 buckets (~20 minutes).
LATENCY_BUCKETS_US = exponential_buckets(10, 1.8, 33)
# batching_session/queuing_latency: 100 us * 1.2^i, 52 buckets (~1 second).
QUEUING_BUCKETS_US = exponential_buckets(100, 1.2, 52)
# The thread_pool_name TF Serving gives the batch threads when the parameters file names none.
DEFAULT_BATCH_THREAD_POOL = "model_server_batch_threads"


class _Histogram:
    __slots__ = ("limits", "counts", "total", "count")

    def __init__(self, limits: tuple[float, ...]):
        self.limits = limits
        self.counts = [0] * (len(limits) + 1)  # the last one is +Inf
        self.total, self.count = 0.0, 0

    def observe(self, value: float) -> None:
        # TF's Histogram::Add: the first bucket whose limit is above the value (upper_bound).
        self.counts[bisect.bisect_right(self.limits, value)] += 1
        self.total += value
        self.count += 1

    def render(self, name: str, labels: dict[str, str], lines: list[str]) -> None:
        cumulative = 0
        for bound, count in zip(self.limits, self.counts, strict=False):
            cumulative += count
            lines.append(f"{name}_bucket{_labels(**labels, le=f'{bound:.6g}')} {cumulative}")
        lines.append(f"{name}_bucket{_labels(**labels, le='+Inf')} {self.count}")
        lines.append(f"{name}_sum{_labels(**labels)} {self.total:.3f}")
        lines.append(f"{name}_count{_labels(**labels)} {self.count}")


def _labels(**labels: str) -> str:
    escaped = (
        f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in labels.items()
    )
    return "{" + ",".join(escaped) + "}"


class Metrics:
    """Thread-safe counters and histograms for requests, model loads, warmups and batches."""

    def __init__(self):
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str], int] = defaultdict(int)
        self._latency: dict[tuple[str, str, str], _Histogram] = {}
        self._loads: dict[tuple[str, str], int] = defaultdict(int)
        self._warmup: dict[tuple[str, str], _Histogram] = {}
        self._queuing: dict[str, _Histogram] = {}
        self._batch_runs = 0
        self._batch_rows = 0
        self._batch_padding = 0
        self._in_flight = 0

    @contextmanager
    def in_flight(self) -> Iterator[None]:
        """Count a request as in flight (accepted, not yet answered) while the block runs."""
        with self._lock:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    def record_request(self, model: str, api: str, entrypoint: str, status: str, seconds: float) -> None:
        """Count a request under its canonical status code name; its latency only when `status` is OK."""
        with self._lock:
            self._requests[(model, status)] += 1
            if status == "OK":
                key = (model, api, entrypoint)
                if key not in self._latency:
                    self._latency[key] = _Histogram(LATENCY_BUCKETS_US)
                self._latency[key].observe(seconds * 1e6)

    def record_load(self, model_path: str, ok: bool) -> None:
        """Count a SavedModel load attempt, as TF's loader does (status: success or fail)."""
        with self._lock:
            self._loads[(model_path, "success" if ok else "fail")] += 1

    def record_warmup(self, model_path: str, status: str, seconds: float) -> None:
        """A warmup's wall time; `status` is "OK" or "<CODE>: <message>" (TF's Status::ToString)."""
        with self._lock:
            key = (model_path, status)
            if key not in self._warmup:
                self._warmup[key] = _Histogram(LATENCY_BUCKETS_US)
            self._warmup[key].observe(seconds * 1e6)

    def record_batch(self, size: int, padded: int, queued_seconds: list[float], thread_pool: str) -> None:
        """One merged model run: its rows, its padding and how long each of its requests queued."""
        with self._lock:
            self._batch_runs += 1
            self._batch_rows += size
            self._batch_padding += padded - size
            if thread_pool not in self._queuing:
                self._queuing[thread_pool] = _Histogram(QUEUING_BUCKETS_US)
            for seconds in queued_seconds:
                self._queuing[thread_pool].observe(seconds * 1e6)

    def render(self) -> str:
        """The Prometheus text exposition of every series (each sample under its own # TYPE line)."""
        lines = ["# TYPE :tensorflow:serving:request_count counter"]
        with self._lock:
            for (model, status), value in sorted(self._requests.items()):
                lines.append(
                    f":tensorflow:serving:request_count{_labels(model_name=model, status=status)} {value}"
                )
            lines.append("# TYPE :tensorflow:serving:request_latency histogram")
            for (model, api, entry), hist in sorted(self._latency.items()):
                hist.render(
                    ":tensorflow:serving:request_latency",
                    {"model_name": model, "API": api, "entrypoint": entry},
                    lines,
                )
            lines.append("# TYPE :tensorflow:cc:saved_model:load_attempt_count counter")
            for (path, status), value in sorted(self._loads.items()):
                lines.append(
                    f":tensorflow:cc:saved_model:load_attempt_count"
                    f"{_labels(model_path=path, status=status)} {value}"
                )
            lines.append("# TYPE :tensorflow:serving:model_warmup_latency histogram")
            for (path, status), hist in sorted(self._warmup.items()):
                hist.render(
                    ":tensorflow:serving:model_warmup_latency", {"model_path": path, "status": status}, lines
                )
            lines.append("# TYPE :tensorflow:serving:batching_session:wrapped_run_count counter")
            lines.append(f":tensorflow:serving:batching_session:wrapped_run_count{{}} {self._batch_runs}")
            lines.append("# TYPE :tensorflow:serving:batching_session:queuing_latency histogram")
            for pool, hist in sorted(self._queuing.items()):
                hist.render(
                    ":tensorflow:serving:batching_session:queuing_latency", {"thread_pool_name": pool}, lines
                )
            # Ours, not TF Serving's:
            lines.append("# TYPE :digits:serving:requests_in_flight gauge")
            lines.append(f":digits:serving:requests_in_flight {self._in_flight}")
            lines.append("# TYPE :digits:serving:batching:rows counter")
            lines.append(f":digits:serving:batching:rows {self._batch_rows}")
            lines.append("# TYPE :digits:serving:batching:padding_rows counter")
            lines.append(f":digits:serving:batching:padding_rows {self._batch_padding}")
        return "\n".join(lines) + "\n"
