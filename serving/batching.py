"""Server-side batching: merge concurrent requests into one model call, split the rows back to callers.

TF Serving's semantics (SharedBatchScheduler + BatchingSession):
- `max_batch_size` bounds one request (larger: INVALID_ARGUMENT "Task size N is larger than maximum input
  batch size M") and, without large-batch splitting, one batch.
- With `enable_large_batch_splitting`, a request fills the open batch's free rows and the rest goes into
  new batches of at most `max_execution_batch_size` rows; the caller gets its rows back in order.
- A batch runs when full or `batch_timeout_micros` after it opened; `max_enqueued_batches` bounds the
  batches waiting (more: UNAVAILABLE "The batch scheduling queue to which this task was submitted is
  full"); at most `num_batch_threads` batches run at once, over every model and version together.
- A short batch is padded to the next `allowed_batch_sizes` entry with copies of a real row.
- A request whose caller gave up (its deadline passed) is taken out of the queue and never run.
Requests of one queue (one version's signature) merge only when their inputs agree on dtype and every
dimension after the batch dimension; others wait in their own batch, so `pad_variable_length_inputs` is
never needed (TF Serving without it fails such a batch).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from serving.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    ServingError,
    Unavailable,
)
from serving.metrics import DEFAULT_BATCH_THREAD_POOL

log = logging.getLogger(__name__)

RunFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
OnBatch = Callable[[int, int, list[float]], None]  # (rows, rows after padding, each request's queue time)


@dataclass(frozen=True)
class BatchingConfig:
    """TF Serving's BatchingParameters (defaults as TF Serving's)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = 2
    allowed_batch_sizes: tuple[int, ...] = ()
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int | None = None  # with splitting; None: max_batch_size
    thread_pool_name: str = DEFAULT_BATCH_THREAD_POOL

    @property
    def execution_batch_size(self) -> int:
        """The most rows one model call gets."""
        if self.enable_large_batch_splitting and self.max_execution_batch_size:
            return self.max_execution_batch_size
        return self.max_batch_size

    @classmethod
    def from_proto(cls, params, default_threads: int) -> BatchingConfig:
        """Build from a parsed BatchingParameters message (unset wrapper fields keep the defaults)."""

        def value(field: str, default):
            return getattr(params, field).value if params.HasField(field) else default

        return cls(
            max_batch_size=value("max_batch_size", cls.max_batch_size),
            batch_timeout_micros=value("batch_timeout_micros", cls.batch_timeout_micros),
            max_enqueued_batches=value("max_enqueued_batches", cls.max_enqueued_batches),
            num_batch_threads=value("num_batch_threads", default_threads),
            allowed_batch_sizes=tuple(params.allowed_batch_sizes),
            enable_large_batch_splitting=value("enable_large_batch_splitting", False),
            max_execution_batch_size=value("max_execution_batch_size", None),
            thread_pool_name=value("thread_pool_name", "") or DEFAULT_BATCH_THREAD_POOL,
        )


class _Task:
    """One caller's request; with large-batch splitting its rows may travel in several pieces."""

    __slots__ = (
        "inputs",
        "size",
        "done",
        "outputs",
        "error",
        "abandoned",
        "enqueued_at",
        "_parts",
        "_rows",
        "_lock",
    )

    def __init__(self, inputs: dict[str, np.ndarray], size: int):
        self.inputs, self.size = inputs, size
        self.done = threading.Event()
        self.outputs: dict[str, np.ndarray] | None = None
        self.error: Exception | None = None
        self.abandoned = False
        self.enqueued_at = time.monotonic()
        self._parts: dict[int, dict[str, np.ndarray]] = {}
        self._rows = 0
        self._lock = threading.Lock()

    def piece_done(self, start: int, rows: int, outputs: dict[str, np.ndarray]) -> None:
        """Rows [start, start + rows) are answered; the last piece puts the caller's answer together."""
        with self._lock:
            if self.done.is_set():
                return
            self._parts[start] = outputs
            self._rows += rows
            if self._rows < self.size:
                return
            parts = [self._parts[k] for k in sorted(self._parts)]
            self.outputs = parts[0] if len(parts) == 1 else _concat_rows(parts)
            self.done.set()

    def fail(self, error: Exception) -> None:
        with self._lock:
            if not self.done.is_set():
                self.error = error
                self.done.set()


class _Piece:
    """Rows [start, start + size) of a task, as one batch carries them."""

    __slots__ = ("task", "start", "size")

    def __init__(self, task: _Task, start: int, size: int):
        self.task, self.start, self.size = task, start, size

    def inputs(self) -> dict[str, np.ndarray]:
        if self.start == 0 and self.size == self.task.size:
            return self.task.inputs
        end = self.start + self.size
        return {alias: value[self.start : end] for alias, value in self.task.inputs.items()}


class _Batch:
    __slots__ = ("key", "pieces", "size", "opened_at", "closed")

    def __init__(self, key: tuple, opened_at: float):
        self.key, self.pieces, self.size, self.opened_at, self.closed = key, [], 0, opened_at, False


class BatchQueue:
    """One queue per (servable, signature); its workers run merged batches.

    `slots`, shared by every queue of the server, bounds how many batches run at once over all of them
    (TF Serving's one SharedBatchScheduler with `num_batch_threads` threads).
    """

    def __init__(
        self,
        run_fn: RunFn,
        config: BatchingConfig,
        name: str = "batch",
        on_batch: OnBatch | None = None,
        slots: threading.Semaphore | None = None,
    ):
        self._run_fn, self._config = run_fn, config
        self._limit = config.execution_batch_size
        self._timeout_s = config.batch_timeout_micros / 1e6
        self._on_batch = on_batch
        self._slots = slots
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
        if size == 0:
            return self._run_fn(inputs)  # nothing to merge; the model says what zero rows give
        # Requests merge only when every input agrees on dtype and the dims after the batch dim.
        key = tuple((alias, value.dtype.str, value.shape[1:]) for alias, value in sorted(inputs.items()))
        task = _Task(inputs, size)
        with self._cond:
            if self._stopping:
                # The version is being unloaded while this request holds it: answer it without batching.
                stopping = True
            else:
                stopping = False
                woken = self._enqueue(task, key)
                if woken:
                    self._cond.notify(woken)
        if stopping:
            return self._run_fn(inputs)
        if not task.done.wait(timeout):
            self._withdraw(task)
            if not (task.done.is_set() and task.error is None):
                raise DeadlineExceeded("Deadline exceeded while waiting in the batch queue")
        if task.error is not None:
            raise task.error
        return task.outputs

    def _enqueue(self, task: _Task, key: tuple) -> int:
        """Place the task's rows in the open batch and new ones; returns how many workers to wake.

        Nothing changes when the queue has no room (UNAVAILABLE). A task that merely joins the open batch
        changes nothing a waiting worker acts on (it already waits for that batch's timeout), so it wakes
        nobody: one thread switch less per request.
        """
        last = self._batches[-1] if self._batches else None
        current = last if last is not None and not last.closed and last.key == key else None
        room = self._limit - current.size if current is not None else 0
        if self._config.enable_large_batch_splitting:
            first = min(task.size, room)
            new_batches = math.ceil((task.size - first) / self._limit)
        else:
            first = task.size if task.size <= room else 0
            new_batches = 0 if first else 1
        if new_batches and len(self._batches) + new_batches > self._config.max_enqueued_batches:
            raise Unavailable("The batch scheduling queue to which this task was submitted is full")
        woken = 0
        if last is not None and not last.closed and (current is None or first < task.size):
            last.closed = True  # a new batch follows it: it waits for nothing more
            woken += 1
        start = 0
        if first:
            current.pieces.append(_Piece(task, 0, first))
            current.size += first
            start = first
            if current.size >= self._limit:
                current.closed = True
                woken += 1
        now = time.monotonic()
        while start < task.size:
            batch = _Batch(key, now)
            rows = min(self._limit, task.size - start)
            batch.pieces.append(_Piece(task, start, rows))
            batch.size = rows
            start += rows
            batch.closed = batch.size >= self._limit
            self._batches.append(batch)
            woken += 1
        return woken

    def _withdraw(self, task: _Task) -> None:
        """Take a task whose caller stopped waiting out of the batches not yet running."""
        task.abandoned = True
        with self._cond:
            for batch in list(self._batches):
                kept = [piece for piece in batch.pieces if piece.task is not task]
                if len(kept) != len(batch.pieces):
                    batch.pieces = kept
                    batch.size = sum(piece.size for piece in kept)
                    if not kept:
                        self._batches.remove(batch)

    def stop(self) -> None:
        """Finish the queued batches, then end the worker threads; later requests run unbatched."""
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
            if self._slots is None:
                self._process(batch)
            else:
                with self._slots:
                    self._process(batch)

    def _process(self, batch: _Batch) -> None:
        pieces = [p for p in batch.pieces if not p.task.abandoned and not p.task.done.is_set()]
        if not pieces:
            return  # every caller gave up (or failed on another piece): run nothing
        size = sum(piece.size for piece in pieces)
        try:
            answers = self._run_merged(pieces, size)
        except ServingError as error:
            for piece in pieces:
                piece.task.fail(error)
            return
        except Exception as error:  # noqa: BLE001 -- never leave a caller waiting
            log.exception("batch failed")
            for piece in pieces:
                piece.task.fail(ServingError(f"batch failed: {error}"))
            return
        for piece, answer in zip(pieces, answers, strict=True):
            try:
                piece.task.piece_done(piece.start, piece.size, answer)
            except Exception as error:  # noqa: BLE001 -- e.g. pieces whose outputs cannot be joined
                log.exception("joining a split request's outputs failed")
                piece.task.fail(Internal(f"cannot join the outputs of a split request: {error}"))

    def _run_merged(self, pieces: list[_Piece], size: int) -> list[dict[str, np.ndarray]]:
        """Run the pieces as one model call; each piece's own output rows, in order."""
        padded = self._padded_size(size)
        if self._on_batch is not None:
            now = time.monotonic()
            self._on_batch(size, padded, [now - piece.task.enqueued_at for piece in pieces])
        if len(pieces) == 1 and padded == size:
            return [self._run_fn(pieces[0].inputs())]  # nothing to merge or split
        merged = {}
        for alias in pieces[0].task.inputs:
            parts = [piece.inputs()[alias] for piece in pieces]
            if padded > size:  # pad with copies of a real row, as TF Serving's batching session does
                parts.append(np.repeat(parts[0][:1], padded - size, axis=0))
            merged[alias] = np.concatenate(parts, axis=0)
        outputs = self._run_fn(merged)
        if all(value.ndim > 0 and value.shape[0] == padded for value in outputs.values()):
            answers, offset = [], 0
            for piece in pieces:
                end = offset + piece.size
                answers.append({alias: value[offset:end] for alias, value in outputs.items()})
                offset = end
            return answers
        # Outputs without a batch dimension cannot be split: answer each whole request on its own.
        if any(piece.size != piece.task.size for piece in pieces):
            raise FailedPrecondition(
                "Batched output tensor's 0th dimension does not equal the sum of the 0th dimension sizes "
                "of the input tensors"
            )
        return [self._run_fn(piece.inputs()) for piece in pieces]

    def _padded_size(self, size: int) -> int:
        for allowed in self._config.allowed_batch_sizes:
            if allowed >= size:
                return allowed
        return size


def _concat_rows(results: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {alias: np.concatenate([r[alias] for r in results], axis=0) for alias in results[0]}
