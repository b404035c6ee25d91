"""Prometheus metrics with TF Serving's series names, rendered as text at /monitoring/prometheus/metrics."""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

# TF Serving's request_latency buckets: 10 us * 1.8^i, 33 buckets (values in microseconds).
LATENCY_BUCKETS_US = tuple(10 * 1.8**i for i in range(33))


class _Histogram:
    __slots__ = ("counts", "total", "count")

    def __init__(self):
        self.counts = [0] * len(LATENCY_BUCKETS_US)
        self.total, self.count = 0.0, 0

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(LATENCY_BUCKETS_US, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.count += 1


def _labels(**labels: str) -> str:
    escaped = (
        f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in labels.items()
    )
    return "{" + ",".join(escaped) + "}"


class Metrics:
    """Thread-safe counters and latency histograms for requests, model loads and batches."""

    def __init__(self):
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str], int] = defaultdict(int)
        self._latency: dict[tuple[str, str, str], _Histogram] = defaultdict(_Histogram)
        self._loads: dict[tuple[str, str], int] = defaultdict(int)
        self._batches: dict[str, int] = defaultdict(int)
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

    def record_request(self, model: str, api: str, entrypoint: str, ok: bool, seconds: float) -> None:
        """Count a request (every outcome) and its latency (successes only, as TF Serving)."""
        with self._lock:
            self._requests[(model, "OK" if ok else "ERROR")] += 1
            if ok:
                self._latency[(model, api, entrypoint)].observe(seconds * 1e6)

    def record_load(self, model_path: str, status: str) -> None:
        """Count a SavedModel load attempt (status: success or error)."""
        with self._lock:
            self._loads[(model_path, status)] += 1

    def record_batch(self, size: int, padded: int) -> None:
        """Count merged batches, their rows and their padding."""
        with self._lock:
            self._batches["batches"] += 1
            self._batches["rows"] += size
            self._batches["padding"] += padded - size

    def render(self) -> str:
        """The Prometheus text exposition of every series."""
        lines = ["# TYPE :tensorflow:serving:request_count counter"]
        with self._lock:
            for (model, status), value in sorted(self._requests.items()):
                lines.append(
                    f":tensorflow:serving:request_count{_labels(model_name=model, status=status)} {value}"
                )
            lines.append("# TYPE :tensorflow:serving:request_latency histogram")
            for (model, api, entry), hist in sorted(self._latency.items()):
                base = {"model_name": model, "API": api, "entrypoint": entry}
                cumulative = 0
                for bound, count in zip(LATENCY_BUCKETS_US, hist.counts, strict=True):
                    cumulative += count
                    lines.append(
                        f":tensorflow:serving:request_latency_bucket{_labels(**base, le=f'{bound:.6g}')} "
                        f"{cumulative}"
                    )
                lines.append(
                    f":tensorflow:serving:request_latency_bucket{_labels(**base, le='+Inf')} {hist.count}"
                )
                lines.append(f":tensorflow:serving:request_latency_sum{_labels(**base)} {hist.total:.3f}")
                lines.append(f":tensorflow:serving:request_latency_count{_labels(**base)} {hist.count}")
            lines.append("# TYPE :tensorflow:cc:saved_model:load_attempt_count counter")
            for (path, status), value in sorted(self._loads.items()):
                lines.append(
                    f":tensorflow:cc:saved_model:load_attempt_count"
                    f"{_labels(model_path=path, status=status)} {value}"
                )
            lines.append("# TYPE :digits:serving:requests_in_flight gauge")  # ours, not TF Serving's
            lines.append(f":digits:serving:requests_in_flight {self._in_flight}")
            lines.append("# TYPE :tensorflow:serving:batching_session:batch_count counter")
            for name, value in sorted(self._batches.items()):
                lines.append(f":tensorflow:serving:batching_session:{name}_total {value}")
        return "\n".join(lines) + "\n"
