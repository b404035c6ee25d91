"""Server-side batching: merge concurrent requests into one model call, split the rows back to callers."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from serving.errors import DeadlineExceeded, InvalidArgument, ServingError, Unavailable

log = logging.getLogger(__name__)

RunFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
OnBatch = Callable[[int, int, list[float]], None]  # (rows, rows after padding, each request's queue time)


@dataclass(frozen=True)
class BatchingConfig:
    """TF Serving's BatchingParameters that this scheduler honours (defaults as TF Serving's)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = 2
    allowed_batch_sizes: tuple[int, ...] = ()

    @classmethod
    def from_proto(cls, params, default_threads: int) -> BatchingConfig:
        """Build from a parsed BatchingParameters message (unset wrapper fields keep the defaults)."""

        def value(field: str, default: int) -> int:
            return getattr(params, field).value if params.HasField(field) else default

        return cls(
            max_batch_size=value("max_batch_size", cls.max_batch_size),
            batch_timeout_micros=value("batch_timeout_micros", cls.batch_timeout_micros),
            max_enqueued_batches=value("max_enqueued_batches", cls.max_enqueued_batches),
            num_batch_threads=value("num_batch_threads", default_threads),
            allowed_batch_sizes=tuple(params.allowed_batch_sizes),
        )


class _Task:
    __slots__ = ("inputs", "size", "done", "outputs", "error", "enqueued_at")

    def __init__(self, inputs: dict[str, np.ndarray], size: int):
        self.inputs, self.size = inputs, size
        self.done = threading.Event()
        self.outputs: dict[str, np.ndarray] | None = None
        self.error: Exception | None = None
        self.enqueued_at = time.monotonic()


class _Batch:
    __slots__ = ("key", "tasks", "size", "opened_at", "closed")

    def __init__(self, key: tuple, opened_at: float):
        self.key, self.tasks, self.size, self.opened_at, self.closed = key, [], 0, opened_at, False


class BatchQueue:
    """One queue per (servable, signature); each of `num_batch_threads` workers runs one merged batch."""

    def __init__(
        self,
        run_fn: RunFn,
        config: BatchingConfig,
        name: str = "batch",
        on_batch: OnBatch | None = None,
    ):
        self._run_fn, self._config = run_fn, config
        self._timeout_s = config.batch_timeout_micros / 1e6
        self._on_batch = on_batch
        self._cond = threading.Condition()
        self._batches: deque[_Batch] = deque()
        self._stopping = False
        self._workers = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(max(1, config.num_batch_threads))
        ]
        for worker in self._workers:
            worker.start()

    def run(self, inputs: dict[str, np.ndarray], timeout: float | None = None) -> dict[str, np.ndarray]:
        """Enqueue one request (all inputs share dim 0) and wait for its own rows of every output."""
        size = next(iter(inputs.values())).shape[0]
        if size > self._config.max_batch_size:
            raise InvalidArgument(
                f"Task size {size} is larger than maximum input batch size {self._config.max_batch_size}"
            )
        # Requests merge only when every input agrees on dtype and the dims after the batch dim.
        key = tuple((alias, value.dtype.str, value.shape[1:]) for alias, value in sorted(inputs.items()))
        task = _Task(inputs, size)
        with self._cond:
            if self._stopping:
                raise Unavailable("Server is shutting down")
            if self._enqueue(task, key):
                self._cond.notify()
        if not task.done.wait(timeout):
            raise DeadlineExceeded("Deadline exceeded while waiting in the batch queue")
        if task.error is not None:
            raise task.error
        return task.outputs

    def _enqueue(self, task: _Task, key: tuple) -> bool:
        """Add the task to the open batch (or a new one); True when a worker has something new to do.

        A task that merely joins the open batch changes nothing a waiting worker acts on (it already
        waits for that batch's timeout), so it wakes nobody: one thread switch less per request.
        """
        current = self._batches[-1] if self._batches and not self._batches[-1].closed else None
        changed = current is None
        if current is not None and (
            current.key != key or current.size + task.size > self._config.max_batch_size
        ):
            current.closed, current, changed = True, None, True
        if current is None:
            if len(self._batches) >= self._config.max_enqueued_batches:
                raise Unavailable("The batch scheduling queue to which this task was submitted is full")
            current = _Batch(key, time.monotonic())
            self._batches.append(current)
        current.tasks.append(task)
        current.size += task.size
        if current.size >= self._config.max_batch_size:
            current.closed, changed = True, True
        return changed

    def stop(self) -> None:
        """Finish the queued batches, then end the worker threads."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for worker in self._workers:
            worker.join(timeout=30)

    def _next_batch(self) -> _Batch | None:
        with self._cond:
            while True:
                if self._batches:
                    batch = self._batches[0]
                    wait = batch.opened_at + self._timeout_s - time.monotonic()
                    if batch.closed or wait <= 0 or self._stopping:
                        self._batches.popleft()
                        batch.closed = True
                        return batch
                    self._cond.wait(wait)
                elif self._stopping:
                    return None
                else:
                    self._cond.wait()

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._process(batch)

    def _process(self, batch: _Batch) -> None:
        tasks = batch.tasks
        try:
            outputs = self._run_merged(tasks, batch.size)
        except ServingError as error:
            for task in tasks:
                task.error = error
                task.done.set()
            return
        except Exception as error:  # noqa: BLE001 -- never leave a caller waiting
            log.exception("batch failed")
            for task in tasks:
                task.error = ServingError(f"batch failed: {error}")
                task.done.set()
            return
        offset = 0
        for task in tasks:
            task.outputs = {alias: value[offset : offset + task.size] for alias, value in outputs.items()}
            offset += task.size
            task.done.set()

    def _run_merged(self, tasks: list[_Task], size: int) -> dict[str, np.ndarray]:
        padded = self._padded_size(size)
        if self._on_batch is not None:
            now = time.monotonic()
            self._on_batch(size, padded, [now - task.enqueued_at for task in tasks])
        if len(tasks) == 1 and padded == size:
            return self._run_fn(tasks[0].inputs)
        merged = {}
        for alias in tasks[0].inputs:
            parts = [task.inputs[alias] for task in tasks]
            if padded > size:  # pad with copies of the first row, as TF Serving's batching session does
                parts.append(np.repeat(parts[0][:1], padded - size, axis=0))
            merged[alias] = np.concatenate(parts, axis=0)
        outputs = self._run_fn(merged)
        if any(value.ndim == 0 or value.shape[0] != padded for value in outputs.values()):
            # Outputs without a batch dimension cannot be split: answer each request on its own.
            return _concat_rows([self._run_fn(task.inputs) for task in tasks])
        return {alias: value[:size] for alias, value in outputs.items()}

    def _padded_size(self, size: int) -> int:
        for allowed in self._config.allowed_batch_sizes:
            if allowed >= size:
                return allowed
        return size


def _concat_rows(results: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {alias: np.concatenate([r[alias] for r in results], axis=0) for alias in results[0]}
