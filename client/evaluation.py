"""Run a labelled set through the model server (bounded concurrency, one client) and score the answers."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np

from client.datasets import LabelledImages
from client.errors import ServerError
from client.model_client import ModelClient, Prediction
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
    """Precision, recall and F1 of one class; None where the data cannot tell (nothing to divide by)."""

    name: str
    precision: float | None  # None: no image was predicted as this class
    recall: float | None  # None: no image of this class in the data
    f1: float | None  # None: neither (the class was never there, never predicted)
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
                    width = None if probabilities is None else probabilities.shape[1]
                    _check_answer(answer, min(batch_size, total - start), width)
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
                if answer.model_version is not None and served[1] not in (None, answer.model_version):
                    for other in pending:
                        other.cancel()
                    raise ServerError(
                        f"the server answered with version {served[1]}, then {answer.model_version}: a new "
                        "version was loaded during the evaluation, and the scores would mix two models; "
                        "pin one version"
                    )
                served = (answer.model_name, answer.model_version)
                done_images += len(answer.classes)
                if progress:
                    progress(done_images, total)
    wall = time.perf_counter() - started
    assert probabilities is not None
    return EvalRun(classes, probabilities, np.asarray(latencies), wall, served[0], served[1])


def _check_answer(answer: Prediction, asked: int, width: int | None) -> None:
    """Refuse an answer that does not give one class and one row of probabilities per image asked, or
    whose rows are not as wide as the answers before it: scoring it would count images never answered."""
    classes, probabilities = np.shape(answer.classes), np.shape(answer.probabilities)
    if classes != (asked,) or len(probabilities) != 2 or probabilities[0] != asked:
        raise ServerError(
            f"the model answered {asked} images with classes of shape {list(classes)} and probabilities "
            f"of shape {list(probabilities)}, not [{asked}] and [{asked}, classes]"
        )
    if width is not None and probabilities[1] != width:
        raise ServerError(f"the model answered {probabilities[1]} probabilities per image, {width} before")


def score(run: EvalRun, data: LabelledImages) -> Scores:
    """Accuracy with its 95% Wilson interval, per-class precision/recall/F1, confusion, latency.

    A class with no images has no recall, one never predicted no precision: those are None, not 0.
    """
    n_classes = len(data.class_names)
    if run.probabilities.shape[1] != n_classes:
        raise ValueError(f"the model answers {run.probabilities.shape[1]} classes, the data has {n_classes}")
    outside = run.classes[(run.classes < 0) | (run.classes >= n_classes)]
    if outside.size:
        raise ValueError(f"the model answers class {int(outside[0])}, outside the data's 0..{n_classes - 1}")
    cm = confusion_matrix(data.labels, run.classes, n_classes)
    correct = int(np.trace(cm))
    per_class = []
    for k, name in enumerate(data.class_names):
        hits, predicted, actual = int(cm[k, k]), int(cm[:, k].sum()), int(cm[k].sum())
        precision = hits / predicted if predicted else None
        recall = hits / actual if actual else None
        f1 = 2 * hits / (predicted + actual) if predicted + actual else None  # 2TP / (2TP + FP + FN)
        per_class.append(ClassScores(name, precision, recall, f1, actual))
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
    """Progress on stderr. On a terminal one line, redrawn at most ten times a second; elsewhere (a log
    file, a CI job) a line at each further tenth of the work, so a long run does not flood the log.
    The last call (done == total) always prints, and ends the line."""

    def __init__(
        self, label: str, width: int = 30, stream=None, *, tty: bool | None = None, unit: str = "images"
    ) -> None:
        self.label, self.width, self.unit = label, width, unit
        self.stream = stream or sys.stderr
        self.tty = _is_terminal(self.stream) if tty is None else tty
        self.started = time.perf_counter()
        self.last_drawn = 0.0
        self.tenths_shown = 0
        self.line_open = False  # a terminal line drawn without its newline yet

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        finished = done >= total
        if self.tty:
            if not finished and now - self.last_drawn < 0.1:
                return
        else:
            tenths = 10 * done // total if total else 10
            if not finished and tenths <= self.tenths_shown:
                return
            self.tenths_shown = tenths
        self.last_drawn = now
        filled = min(self.width, self.width * done // total) if total else self.width
        rate = done / (now - self.started) if now > self.started else 0.0
        bar = "#" * filled + "." * (self.width - filled)
        text = f"{self.label} [{bar}] {done}/{total} {self.unit}, {rate:,.0f} {self.unit}/s"
        if self.tty:
            self.stream.write(f"\r{text}" + ("\n" if finished else ""))
            self.line_open = not finished
        else:
            self.stream.write(f"{text}\n")
        self.stream.flush()

    def close(self) -> None:
        """End a line left open by a run that stopped part way, so what is printed next (its error)
        starts on a line of its own."""
        if self.line_open:
            self.stream.write("\n")
            self.stream.flush()
            self.line_open = False


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
