"""Run a labelled set through the model server (bounded concurrency, one client) and score the answers."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np

from client.datasets import LabelledImages
from client.model_client import ModelClient
from client.stats import Interval, confusion_matrix, wilson_interval


@dataclass(frozen=True)
class EvalRun:
    """The server's answers for every image, and how long the requests took."""

    classes: np.ndarray  # int64 [N]
    probabilities: np.ndarray  # float32 [N, NUM_CLASSES]
    latencies_s: np.ndarray  # float64 [requests]
    wall_s: float
    model_name: str
    model_version: int | None


@dataclass(frozen=True)
class ClassScores:
    """Precision, recall and F1 of one class."""

    name: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Scores:
    """Everything the report says about one evaluation."""

    images: int
    accuracy: Interval
    errors: int
    per_class: list[ClassScores]
    confusion: np.ndarray  # int64 [true, predicted]
    latency_ms: dict[str, float]  # p50, p95, p99, mean, per request
    throughput: float  # images per second, wall clock


def predict_all(
    client: ModelClient,
    images: np.ndarray,
    batch_size: int,
    concurrency: int,
    *,
    version: int | None = None,
    label: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EvalRun:
    """Predict `images` in requests of `batch_size`, at most `concurrency` in flight, in order."""
    total = len(images)
    classes = np.empty(total, dtype=np.int64)
    probabilities: np.ndarray | None = None
    latencies: list[float] = []
    served: tuple[str, int | None] = (client.config.model_name, version)

    def timed(start: int):
        began = time.perf_counter()
        answer = client.predict(images[start : start + batch_size], version=version, label=label)
        return start, answer, time.perf_counter() - began

    started = time.perf_counter()
    done_images = 0
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="eval") as pool:
        pending: set[Future] = set()
        starts = iter(range(0, total, batch_size))
        while True:
            for start in starts:
                pending.add(pool.submit(timed, start))
                if len(pending) >= concurrency:
                    break
            if not pending:
                break
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                try:
                    start, answer, latency = future.result()
                except BaseException:
                    for other in pending:
                        other.cancel()
                    raise
                if probabilities is None:
                    probabilities = np.empty((total, answer.probabilities.shape[1]), dtype=np.float32)
                stop = start + len(answer.classes)
                classes[start:stop] = answer.classes
                probabilities[start:stop] = answer.probabilities
                latencies.append(latency)
                served = (answer.model_name, answer.model_version)
                done_images += len(answer.classes)
                if progress:
                    progress(done_images, total)
    wall = time.perf_counter() - started
    assert probabilities is not None
    return EvalRun(classes, probabilities, np.asarray(latencies), wall, served[0], served[1])


def score(run: EvalRun, data: LabelledImages) -> Scores:
    """Accuracy with its 95% Wilson interval, per-class precision/recall/F1, confusion, latency."""
    n_classes = len(data.class_names)
    if run.probabilities.shape[1] != n_classes:
        raise ValueError(f"the model answers {run.probabilities.shape[1]} classes, the data has {n_classes}")
    cm = confusion_matrix(data.labels, run.classes, n_classes)
    correct = int(np.trace(cm))
    per_class = []
    for k, name in enumerate(data.class_names):
        predicted, actual = int(cm[:, k].sum()), int(cm[k].sum())
        precision = cm[k, k] / predicted if predicted else 0.0
        recall = cm[k, k] / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class.append(ClassScores(name, float(precision), float(recall), float(f1), actual))
    ms = 1000 * run.latencies_s
    return Scores(
        images=len(data.labels),
        accuracy=wilson_interval(correct, len(data.labels)),
        errors=len(data.labels) - correct,
        per_class=per_class,
        confusion=cm,
        latency_ms={
            "p50": float(np.percentile(ms, 50)),
            "p95": float(np.percentile(ms, 95)),
            "p99": float(np.percentile(ms, 99)),
            "mean": float(ms.mean()),
        },
        throughput=len(data.labels) / run.wall_s if run.wall_s > 0 else float("inf"),
    )


class ProgressBar:
    """A one-line progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self, label: str, width: int = 30, stream=None) -> None:
        self.label, self.width = label, width
        self.stream = stream or sys.stderr
        self.started = time.perf_counter()
        self.last_drawn = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - self.last_drawn < 0.1:
            return
        self.last_drawn = now
        filled = int(self.width * done / total) if total else self.width
        rate = done / (now - self.started) if now > self.started else 0.0
        bar = "#" * filled + "." * (self.width - filled)
        end = "\n" if done >= total else ""
        self.stream.write(f"\r{self.label} [{bar}] {done}/{total} images, {rate:,.0f} img/s{end}")
        self.stream.flush()
