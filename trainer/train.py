"""Train a preset: stratified validation hold-out, best epoch by validation accuracy, honest test report."""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from client.contract import IMAGE_SIZE
from client.stats import Interval, wilson_interval
from trainer.augment import AugmentationOff, training_augmentation, with_augmentation
from trainer.data import Dataset
from trainer.model import build_model, compile_model, model_input_array
from trainer.precision import dtype_policy, processor, resolve_precision
from trainer.presets import ModelConfig, Preset
from trainer.tta import for_dataset, serving_network

PREDICT_BATCH = 1_000
SERVED_VAL = "val_served_accuracy"  # history key: validation accuracy of a mirror-averaged model
AVERAGED_VAL = "val_averaged_accuracy"  # history key: validation accuracy with the averaged weights
HEARTBEAT_SECONDS = 60.0  # a line this often while an epoch runs, so a slow epoch is not minutes of silence


@dataclass(frozen=True)
class Split:
    """Indices into the 60k training images: what the model fits and what selects the epoch."""

    train: np.ndarray
    val: np.ndarray


@dataclass(frozen=True)
class TrainResult:
    """A trained model (best-epoch weights) and everything the report and model card need."""

    model: keras.Model
    preset: Preset
    dataset: str
    history: dict[str, list[float]]
    best_epoch: int  # 1-based
    val_accuracy: float | None  # None: trained with no validation hold-out (val_size 0)
    test_accuracy: Interval
    test_errors: int
    test_predictions: np.ndarray  # int [10000] predicted classes on the test set
    train_size: int
    val_size: int
    seconds: float
    epoch_seconds: list[float] = field(default_factory=list)
    epoch_cpu_seconds: list[float] = field(default_factory=list)  # this process's CPU time (all threads)
    processor: dict[str, Any] | None = None  # the one that trained it (trainer/precision.py); None: unknown

    @property
    def params(self) -> int:
        """Number of model parameters."""
        return self.model.count_params()


def stratified_split(labels: np.ndarray, val_size: int, seed: int) -> Split:
    """A seeded hold-out of `val_size` indices with the same class proportions as `labels`.

    `val_size` 0 holds nothing out: every index is for training and none validates.
    """
    labels = np.asarray(labels)
    if not 0 <= val_size < len(labels):
        raise ValueError(f"val_size must be between 0 and {len(labels) - 1}, got {val_size}")
    if val_size == 0:
        return Split(train=np.arange(len(labels)), val=np.array([], dtype=np.int64))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    # Largest-remainder rounding so the per-class quotas add up to exactly val_size.
    exact = counts * val_size / len(labels)
    quotas = np.floor(exact).astype(int)
    quotas[np.argsort(quotas - exact)[: val_size - quotas.sum()]] += 1
    val = np.concatenate(
        [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quotas, strict=True)]
    )
    val = np.sort(val)
    train = np.setdiff1d(np.arange(len(labels)), val, assume_unique=True)
    return Split(train=train, val=val)


def limit_indices(indices: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """A seeded random subset of `limit` indices (all of them when limit is None or larger)."""
    if limit is None or limit >= len(indices):
        return indices
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    return np.sort(np.random.default_rng(seed).choice(indices, size=limit, replace=False))


def predict_probabilities(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """The softmax [N,10] `model` gives each uint8 [N,28,28] image."""
    return model.predict(model_input_array(images), batch_size=PREDICT_BATCH, verbose=0)


def predict_classes(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """The class `model` predicts for each uint8 [N,28,28] image."""
    return predict_probabilities(model, images).argmax(axis=1)


def score_predictions(predictions: np.ndarray, labels: np.ndarray) -> tuple[Interval, int]:
    """Accuracy of `predictions` against `labels` with its 95% Wilson interval, and the error count."""
    correct = int(np.sum(predictions == labels))
    return wilson_interval(correct, len(labels)), len(labels) - correct


def distribution_scope() -> contextlib.AbstractContextManager:
    """Build and compile in this: MirroredStrategy across several GPUs, else the default (GPU or CPU).

    On a Keras backend other than TensorFlow, nothing: the backend places the work itself.
    """
    if keras.backend.backend() != "tensorflow":
        return contextlib.nullcontext()
    import tensorflow as tf

    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy().scope()
    return tf.distribute.get_strategy().scope()


class ServedValidation(keras.callbacks.Callback):
    """Log `key` each epoch: the validation accuracy of the served model as its weights are right now."""

    def __init__(self, served: keras.Model, images: np.ndarray, labels: np.ndarray, key: str) -> None:
        super().__init__()
        self.served, self.images, self.labels, self.key = served, images, labels, key

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            predicted = self.served.predict(self.images, batch_size=PREDICT_BATCH, verbose=0).argmax(axis=1)
            logs[self.key] = float(np.mean(predicted == self.labels))


class KeepBestEpoch(keras.callbacks.Callback):
    """Remember the weights of the epoch with the best validation accuracy and restore them at the end."""

    def __init__(self, monitor: str = "val_accuracy") -> None:
        super().__init__()
        self.monitor = monitor
        self.best_accuracy = -1.0
        self.best_epoch = 0
        self._best_weights: list[np.ndarray] | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        if self.monitor not in logs:  # else no epoch is kept and the last one is exported as "epoch 0"
            raise KeyError(f"the epoch is chosen on {self.monitor!r}, which epoch {epoch + 1} did not log "
                           f"(it logged {', '.join(sorted(logs)) or 'nothing'})")
        accuracy = float(logs[self.monitor])
        if accuracy > self.best_accuracy:
            self.best_accuracy, self.best_epoch = accuracy, epoch + 1
            self._best_weights = self.model.get_weights()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._best_weights is not None:
            self.model.set_weights(self._best_weights)


class EpochProgress(keras.callbacks.Callback):
    """One console line per epoch: metrics, seconds, and a star on a new best validation accuracy; and,
    while an epoch runs longer than `heartbeat` seconds, a line each `heartbeat` seconds saying it runs
    (an epoch of `resnet` takes minutes on a CPU). Call `stop` if `fit` ends without ending its epoch."""

    def __init__(
        self, epochs: int, log: Callable[[str], None], monitor: str = "val_accuracy",
        heartbeat: float = HEARTBEAT_SECONDS,
    ) -> None:
        super().__init__()
        self.epochs, self.log, self.monitor, self.heartbeat = epochs, log, monitor, heartbeat
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []
        self._best = -1.0
        self._start = self._cpu_start = 0.0
        self._running: threading.Event | None = None  # set when the running epoch ends
        self._lock = threading.Lock()  # once `stop` returns, no line of the epoch it stopped follows

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start, self._cpu_start = time.perf_counter(), time.process_time()
        self.stop()
        self._running = threading.Event()
        threading.Thread(target=self._beat, args=(epoch, self._running, self._start), daemon=True).start()

    def _beat(self, epoch: int, ended: threading.Event, start: float) -> None:
        while not ended.wait(self.heartbeat):
            with self._lock:
                if not ended.is_set():
                    self.log(f"  epoch {epoch + 1}/{self.epochs} running: "
                             f"{time.perf_counter() - start:.0f}s so far")

    def stop(self) -> None:
        """No more lines for the running epoch (`on_epoch_end` calls this; so does a fit that failed)."""
        with self._lock:
            if self._running is not None:
                self._running.set()
                self._running = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.stop()
        logs = logs or {}
        self.seconds.append(time.perf_counter() - self._start)
        self.cpu_seconds.append(time.process_time() - self._cpu_start)
        nan = float("nan")
        line = (f"epoch {epoch + 1:>3}/{self.epochs}  loss {logs.get('loss', nan):.4f}  "
                f"acc {logs.get('accuracy', nan):.4f}")
        if "val_accuracy" in logs:  # absent when nothing is held out
            line += f"  val_loss {logs.get('val_loss', nan):.4f}  val_acc {logs['val_accuracy']:.4f}"
        if SERVED_VAL in logs:  # the served model differs from the network
            line += f"  val_acc served {logs[SERVED_VAL]:.4f}"
        if AVERAGED_VAL in logs:  # the weights served are an average of the trained ones
            line += f"  val_acc averaged {logs[AVERAGED_VAL]:.4f}"
        star = ""
        if self.monitor in logs:  # the star follows what chooses the epoch
            val = float(logs[self.monitor])
            star = " *" if val > self._best else ""
            self._best = max(self._best, val)
        self.log(f"{line}  {self.seconds[-1]:.1f}s{star}")


class WeightTwin(keras.callbacks.Callback):
    """Copy the trained network's weights into its float32 twin (trainer/precision.py) after every epoch.

    Put it first among the callbacks, so the twin is current before anything validates it, and call
    `sync` once more after `fit`, once every callback's `on_train_end` has set the weights to keep.
    """

    def __init__(self, network: keras.Model, twin: keras.Model) -> None:
        super().__init__()
        self.network, self.twin = network, twin

    def sync(self) -> None:
        self.twin.set_weights(self.network.get_weights())

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.sync()


def _describe_crop(model_cfg: ModelConfig) -> str:
    """The run header's words for the network's crop-and-zoom, if it has one."""
    centre, window = model_cfg.centre_crop, model_cfg.train_crop
    if not centre:
        return ""
    served = f"the centre {centre}x{centre} zoomed to {IMAGE_SIZE}x{IMAGE_SIZE}"
    return f", {window}x{window} crops at random in training, {served} served" if window else f", {served}"


def train_model(
    preset: Preset,
    dataset: Dataset,
    limit_train: int | None = None,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Fit `preset` on the training split, keep the best epoch by validation accuracy, score on test once.

    With `val_size` 0 it fits all the training images for the preset's epochs and keeps the last one:
    the final fit of a recipe whose epochs were chosen on a hold-out before. The returned model is what
    gets served: mirror-averaged where the preset or the dataset says so (trainer/tta.py), with averaged
    weights where the preset asks for them (trainer/averaging.py), and that is what the epoch is chosen
    on, too. A preset trained in bfloat16 serves a float32 twin with the trained weights
    (trainer/precision.py).
    """
    preset = for_dataset(preset, dataset.name)  # the model card records whether it is mirror-averaged
    cfg = preset.train
    keras.utils.set_random_seed(cfg.seed)
    split = stratified_split(dataset.y_train, cfg.val_size, cfg.seed)
    train_idx = limit_indices(split.train, limit_train, cfg.seed)
    x_train = model_input_array(dataset.x_train[train_idx])
    y_train = dataset.y_train[train_idx]
    validate = split.val.size > 0  # val_size 0: nothing held out, nothing to choose with
    validation = None
    if validate:
        validation = (model_input_array(dataset.x_train[split.val]), dataset.y_train[split.val])

    augmentation = training_augmentation(dataset.name, cfg)
    if cfg.clean_epochs and not augmentation.changes_images:  # nothing to switch off; the card says so
        preset = preset.with_overrides(clean_epochs=0)
        cfg = preset.train
    if cfg.clean_epochs >= cfg.epochs:
        raise ValueError(f"clean_epochs {cfg.clean_epochs} leaves none of the {cfg.epochs} epochs augmented")
    precision = resolve_precision(cfg.precision)
    if precision != cfg.precision:  # "auto" settled: the model card records what ran
        preset = preset.with_overrides(precision=precision)
        cfg = preset.train
    bfloat16 = precision == "bfloat16"
    if bfloat16 and cfg.weight_average:
        raise ValueError("weight averaging trains in float32 only: use precision float32 with weight_average")
    with distribution_scope():
        with dtype_policy(precision):
            network = build_model(preset.model)
        # Augmentation wraps the network for fit only; `model` (what gets exported) never contains it.
        fit_model = with_augmentation(network, augmentation, seed=cfg.seed, gated=cfg.clean_epochs > 0)
        compile_model(fit_model, cfg, steps_per_epoch=math.ceil(len(train_idx) / cfg.batch_size))
        twin = build_model(preset.model) if bfloat16 else network  # float32: what is scored and served
    model = serving_network(preset.model, twin)
    log(
        f"{preset.name}: {model.count_params():,} params, {len(train_idx):,} train / {len(split.val):,} val "
        f"images of {dataset.name}, batch {cfg.batch_size}, {cfg.epochs} epochs"
        + (", mixed bfloat16 training (served in float32)" if bfloat16 else "")
        + (f", augmentation {augmentation.describe()}" if augmentation.changes_images
           else ", no augmentation")
        + (f" (off for the last {cfg.clean_epochs})" if cfg.clean_epochs else "")
        + _describe_crop(preset.model)
    )
    mirrored, averaged = preset.model.mirror_average, cfg.weight_average > 0
    served_differs = model is not network  # mirror-averaged, or a float32 twin of a bfloat16 network
    monitor = AVERAGED_VAL if averaged else SERVED_VAL if served_differs else "val_accuracy"
    best, progress = KeepBestEpoch(monitor), EpochProgress(cfg.epochs, log, monitor)
    callbacks = [best, progress] if validate else [progress]
    if validate and averaged:  # scores the average, which the callback before it lends the network
        callbacks.insert(0, ServedValidation(model, *validation, key=AVERAGED_VAL))
    if averaged:
        from trainer.averaging import WeightAverage  # TensorFlow only: a tf.function after every batch

        callbacks.insert(0, WeightAverage(network, cfg.weight_average))
    if validate and served_differs:  # scores the training weights, before any average replaces them
        callbacks.insert(0, ServedValidation(model, *validation, key=SERVED_VAL))
    if cfg.clean_epochs:
        clean_from = cfg.epochs - cfg.clean_epochs + 1
        callbacks.insert(0, AugmentationOff(fit_model.get_layer("gate"), clean_from, log))
    twin_weights = WeightTwin(network, twin) if bfloat16 else None
    if twin_weights:  # first: the twin is current before anything scores it
        callbacks.insert(0, twin_weights)
    start = time.perf_counter()
    try:
        history = fit_model.fit(
            x_train,
            y_train,
            validation_data=validation,
            batch_size=cfg.batch_size,
            epochs=cfg.epochs,
            shuffle=True,
            verbose=0,
            callbacks=callbacks,
        )
    finally:  # a fit stopped mid-epoch (Ctrl-C, an error) leaves no line saying the epoch still runs
        progress.stop()
    if twin_weights:  # the weights KeepBestEpoch restored at the end
        twin_weights.sync()
    seconds = time.perf_counter() - start
    best_epoch, val_accuracy = (best.best_epoch, best.best_accuracy) if validate else (cfg.epochs, None)

    # The test set is touched once, after every choice is made.
    predictions = predict_classes(model, dataset.x_test)
    test_accuracy, errors = score_predictions(predictions, dataset.y_test)
    served = (" mirror-averaged" if mirrored else "") + (" weight-averaged" if averaged else "") + (
        " float32" if bfloat16 else "")
    kept = f"best epoch {best_epoch} (val_acc{served} {val_accuracy:.4f})" if validate else (
        f"last epoch {best_epoch} kept (no validation hold-out)")
    log(f"{kept}; test accuracy{served} {test_accuracy}, {errors} errors; trained in {seconds:.1f}s")
    return TrainResult(
        model=model,
        preset=preset,
        dataset=dataset.name,
        history={key: [float(v) for v in values] for key, values in history.history.items()},
        best_epoch=best_epoch,
        val_accuracy=val_accuracy,
        test_accuracy=test_accuracy,
        test_errors=errors,
        test_predictions=predictions,
        train_size=len(train_idx),
        val_size=len(split.val),
        seconds=seconds,
        epoch_seconds=progress.seconds,
        epoch_cpu_seconds=progress.cpu_seconds,
        processor=processor(),
    )
