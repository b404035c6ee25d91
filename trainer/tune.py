"""`digits-train tune`: Bayesian hyperparameter search with KerasTuner, selected on validation only.

Each trial is a two-block CNN (the tutorial's layout) built from a Preset, so the winner is an
ordinary preset that `train_model` re-trains with several seeds; only then is the test set scored.
Each trial is scored as `train_model` chooses an epoch: on the validation accuracy of the model it would
serve (mirror-averaged on Fashion-MNIST, trainer/tta.py), so the search ranks what gets re-trained.
The search lives in a KerasTuner project directory and resumes from it (`overwrite=False`).
"""

from __future__ import annotations

import csv
import fcntl
import json
import math
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import keras_tuner
import matplotlib
import numpy as np

from client.plots import save_figure
from trainer.augment import augment_policy, with_augmentation
from trainer.data import Dataset
from trainer.model import build_model, compile_model, model_input_array
from trainer.presets import ConvLayer, ModelConfig, Preset, TrainConfig
from trainer.train import (
    SERVED_VAL,
    ServedValidation,
    TrainResult,
    limit_indices,
    stratified_split,
    train_model,
)
from trainer.tta import for_dataset, serving_network

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

OBJECTIVE = "val_accuracy"  # KerasTuner's name for a trial's score, whatever `trial_scoring` it is
PROJECT_NAME = "digits"
SETTINGS_FILE = "search_settings.json"  # in the project folder: what its trials were scored under
LOCK_FILE = "search.lock"
SEARCH_SEED = 42
SETTINGS_BEFORE_RECORDED = {"scoring": "plain"}  # what a project made before a setting was recorded had


class TuneError(Exception):
    """A tuner project that cannot be resumed as asked."""


@dataclass(frozen=True)
class TuneConfig:
    """What to search and for how long."""

    budget_minutes: float = 30.0  # then no trial starts, and one running stops (unless a run's first)
    max_trials: int = 200
    max_epochs: int = 8
    seeds: int = 3  # re-training runs of the best trial, scored on test
    val_size: int = 5_000
    limit_train: int | None = None  # train on a random subset (smoke runs)
    initial_random_trials: int = 8  # random trials before the Gaussian process takes over


def search_settings(cfg: TuneConfig, dataset: str) -> dict[str, Any]:
    """What a trial's score depends on besides its hyperparameters: a resumed search must keep all of it."""
    return {
        "dataset": dataset,
        "val_size": cfg.val_size,
        "limit_train": cfg.limit_train,
        "max_epochs": cfg.max_epochs,  # KerasTuner reloads the saved search space, not a new one
        "initial_random_trials": cfg.initial_random_trials,  # reloaded too
        "scoring": trial_scoring(dataset),  # plain and mirror-averaged scores do not compare
    }


def trial_scoring(dataset: str) -> str:
    """The validation accuracy a trial on `dataset` is scored on, as served: "mirror-averaged" or "plain".

    A trial's preset leaves mirror averaging to the dataset (trainer/tta.py), as `train_model` does.
    """
    served = for_dataset(preset_from_values(search_space(1).values), dataset).model
    return "mirror-averaged" if served.mirror_average else "plain"


def check_settings(directory: Path, settings: dict[str, Any]) -> None:
    """Record `settings` in a new project; refuse one whose trials were scored under other settings."""
    path = directory / PROJECT_NAME / SETTINGS_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=2) + "\n")
        return
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TuneError(f"{directory}: {path.name} cannot be read ({exc})") from exc
    saved = {**SETTINGS_BEFORE_RECORDED, **saved}
    changed = [f"{name} {saved.get(name)} (now {value})" for name, value in settings.items()
               if saved.get(name) != value]
    if changed:
        raise TuneError(
            f"{directory} holds a search scored with other settings: {', '.join(changed)}; new trials "
            "would not compare with its trials. Resume with the same settings, or pass another --directory"
        )


@contextmanager
def project_lock(directory: Path) -> Iterator[None]:
    """Hold `directory`'s project for this process (released when it ends, however it ends)."""
    path = directory / PROJECT_NAME / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TuneError(f"{directory} is in use by another digits-train tune; wait for it, or pass "
                            "another --directory") from None
        yield


@dataclass(frozen=True)
class TrialRow:
    """One finished trial: its hyperparameters and what it scored on validation."""

    trial_id: str
    status: str
    val_accuracy: float | None
    best_epoch: int | None
    seconds: float | None
    values: dict[str, Any]


def search_space(max_epochs: int) -> keras_tuner.HyperParameters:
    """The tutorial's knobs (filters, kernels, dense units, dropout, batch, rate, epochs) plus modern ones."""
    hp = keras_tuner.HyperParameters()
    hp.Int("conv1_filters", 8, 48, step=8, default=16)
    hp.Int("conv2_filters", 16, 96, step=16, default=32)
    hp.Choice("kernel_size", [3, 4, 5], default=4)
    hp.Choice("dense_units", [50, 100, 200], default=100)
    hp.Float("dropout", 0.0, 0.5, step=0.1, default=0.4)
    hp.Choice("batch_size", [50, 100, 200, 400], default=200)
    hp.Choice("optimizer", ["rmsprop", "adam", "adamw"], default="rmsprop")
    hp.Float("learning_rate", 1e-4, 3e-2, sampling="log", default=1e-3)
    hp.Int("epochs", 1, max_epochs, default=max_epochs)
    # Beyond the tutorial.
    hp.Boolean("batch_norm", default=False)
    hp.Choice("schedule", ["constant", "onecycle", "exponential"], default="constant")
    hp.Choice("label_smoothing", [0.0, 0.05, 0.1], default=0.0)
    hp.Float("augment", 0.0, 1.0, step=0.25, default=0.0)
    return hp


def preset_from_values(values: dict[str, Any], name: str = "tuned") -> Preset:
    """The preset a trial's hyperparameter values describe."""
    bn = bool(values["batch_norm"])
    model = ModelConfig(
        conv_layers=(
            ConvLayer(int(values["conv1_filters"]), int(values["kernel_size"]), pool_size=2, batch_norm=bn),
            ConvLayer(int(values["conv2_filters"]), int(values["kernel_size"]), pool_size=2, batch_norm=bn),
        ),
        dense_units=(int(values["dense_units"]),),
        dropout=float(values["dropout"]),
        dense_batch_norm=bn,
    )
    train = TrainConfig(
        epochs=int(values["epochs"]),
        batch_size=int(values["batch_size"]),
        optimizer=str(values["optimizer"]),
        learning_rate=float(values["learning_rate"]),
        schedule=str(values["schedule"]),
        label_smoothing=float(values["label_smoothing"]),
        augment=float(values["augment"]),
        weight_decay=1e-4 if values["optimizer"] == "adamw" else 0.0,
    )
    return Preset(name=name, description="best trial of digits-train tune", model=model, train=train)


class BudgetSpent(BaseException):
    """The budget ran out mid-trial: no Exception, so KerasTuner keeps the trial to run again on resume."""


class Deadline(keras.callbacks.Callback):
    """Stops a fit at the first batch that ends past `deadline` (time.monotonic)."""

    def __init__(self, deadline: float) -> None:
        super().__init__()
        self.deadline = deadline

    def on_train_batch_end(self, batch, logs=None) -> None:
        if time.monotonic() >= self.deadline:
            raise BudgetSpent


class DigitsTuner(keras_tuner.BayesianOptimization):
    """Bayesian optimisation over `search_space`; each trial fits a preset and reports its best val epoch."""

    def __init__(
        self, cfg: TuneConfig, directory: Path, dataset: str = "mnist", log: Callable[[str], None] = print
    ) -> None:
        super().__init__(
            hypermodel=None,
            objective=keras_tuner.Objective(OBJECTIVE, direction="max"),
            max_trials=cfg.max_trials,
            num_initial_points=cfg.initial_random_trials,
            hyperparameters=search_space(cfg.max_epochs),
            tune_new_entries=False,
            seed=SEARCH_SEED,
            directory=str(directory),
            project_name=PROJECT_NAME,
            overwrite=False,  # resume: finished trials are reloaded, not re-run
        )
        self.cfg, self.dataset, self.log = cfg, dataset, log
        self.deadline = time.monotonic() + 60.0 * cfg.budget_minutes
        self.stop_said = False
        self.finished_here = 0  # trials this run finished

    def pre_create_trial(self) -> None:
        # Out of time: cap max_trials at the trials done, so the oracle answers STOPPED.
        out_of_time = time.monotonic() >= self.deadline
        done = len(self.oracle.trials)
        self.oracle.max_trials = done if out_of_time else self.cfg.max_trials
        if (out_of_time or done >= self.cfg.max_trials) and not self.stop_said:
            self.stop_said = True
            self.log(f"budget of {self.cfg.budget_minutes:g} min spent: no new trial starts" if out_of_time
                     else f"{done} trials in the project: --max-trials {self.cfg.max_trials} reached")

    def run_trial(self, trial, x_train, y_train, x_val, y_val, **_) -> dict[str, float]:
        """Fit the trial's preset; the objective is its best validation accuracy over the epochs.

        As `train_model` chooses an epoch: the accuracy of the model it serves (mirror-averaged or not).
        """
        preset = for_dataset(preset_from_values(trial.hyperparameters.values), self.dataset)
        cfg = preset.train
        self.log(f"trial {trial.trial_id} ({int(trial.trial_id) + 1} of up to {self.cfg.max_trials}): "
                 f"fitting {cfg.epochs} epoch(s) of batch {cfg.batch_size}")
        keras.utils.set_random_seed(SEARCH_SEED)
        model = build_model(preset.model)
        served = serving_network(preset.model, model)
        fit_model = with_augmentation(model, augment_policy(self.dataset, cfg.augment), seed=SEARCH_SEED)
        compile_model(fit_model, cfg, steps_per_epoch=math.ceil(len(x_train) / cfg.batch_size))
        # The budget stops a trial mid-fit, but never a run's first: every run gets a trial further.
        callbacks: list[keras.callbacks.Callback] = [Deadline(self.deadline)] if self.finished_here else []
        monitor, scored = OBJECTIVE, ""
        if served is not model:  # mirror-averaged: scored on what is served, as train_model scores it
            callbacks.insert(0, ServedValidation(served, x_val, y_val, key=SERVED_VAL))
            monitor, scored = SERVED_VAL, " mirror-averaged"
        start = time.perf_counter()
        history = fit_model.fit(
            x_train, y_train, validation_data=(x_val, y_val), batch_size=cfg.batch_size,
            epochs=cfg.epochs, verbose=0, callbacks=callbacks,
        ).history
        seconds = time.perf_counter() - start
        val = [float(v) if math.isfinite(v) else 0.0 for v in history[monitor]]
        best = int(np.argmax(val))
        knobs = " ".join(f"{name}={_short(v)}" for name, v in trial.hyperparameters.values.items())
        self.log(f"trial {trial.trial_id}: val_acc{scored} {val[best]:.4f} (epoch {best + 1}) {seconds:.0f}s "
                 f"{knobs}")
        self.finished_here += 1
        return {OBJECTIVE: val[best], "best_epoch": float(best + 1), "seconds": seconds}


def run_search(
    dataset: Dataset, cfg: TuneConfig, directory: str | Path, log: Callable[[str], None] = print
) -> list[TrialRow]:
    """Search until the budget or max_trials runs out (resuming `directory`); all trials, best first.

    Raises TuneError for a project searched with other data or search-space settings, damaged, or in use.
    """
    directory = Path(directory)
    with project_lock(directory):  # two searches in one project would clobber each other's trials
        return _search(dataset, cfg, directory, log)


def _search(dataset: Dataset, cfg: TuneConfig, directory: Path, log: Callable[[str], None]) -> list[TrialRow]:
    check_settings(directory, search_settings(cfg, dataset.name))
    split = stratified_split(dataset.y_train, cfg.val_size, SEARCH_SEED)
    train_idx = limit_indices(split.train, cfg.limit_train, SEARCH_SEED)
    x_train = model_input_array(dataset.x_train[train_idx])
    x_val = model_input_array(dataset.x_train[split.val])
    try:
        tuner = DigitsTuner(cfg, directory, dataset.name, log)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:  # cut short mid-write, or edited
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise TuneError(
            f"{directory}: its KerasTuner project cannot be reloaded ({reason}); pass another --directory, "
            "or remove this one to start over"
        ) from exc
    statuses = [trial.status for trial in tuner.oracle.trials.values()]
    if statuses:
        interrupted = statuses.count("RUNNING")  # KerasTuner runs these again before any new trial
        log(f"resuming {directory}: {statuses.count('COMPLETED')} trials finished"
            + (f", {interrupted} interrupted (run again first)" if interrupted else ""))
    log(
        f"searching for up to {cfg.budget_minutes:g} min / {cfg.max_trials} trials on {len(train_idx):,} "
        f"train / {len(split.val):,} val images of {dataset.name}"
    )
    # verbose=0: our one line per trial replaces KerasTuner's tables.
    try:
        tuner.search(x_train, dataset.y_train[train_idx], x_val, dataset.y_train[split.val], verbose=0)
    except BudgetSpent:
        cut = ", ".join(trial.trial_id for trial in tuner.oracle.ongoing_trials.values())
        log(f"budget of {cfg.budget_minutes:g} min spent: trial {cut} stopped mid-fit; a resume runs it "
            "again first")
    return trial_rows(tuner)


def trial_rows(tuner: keras_tuner.Tuner) -> list[TrialRow]:
    """Every trial of the tuner's oracle, best validation accuracy first (failed ones last)."""
    rows = []
    for trial in tuner.oracle.trials.values():
        metrics = trial.metrics

        def best(name: str, metrics=metrics) -> float | None:
            return float(metrics.get_last_value(name)) if metrics.exists(name) else None

        epoch = best("best_epoch")
        rows.append(
            TrialRow(
                trial_id=trial.trial_id,
                status="INTERRUPTED" if trial.status == "RUNNING" else str(trial.status),  # none runs now
                val_accuracy=best(OBJECTIVE),
                best_epoch=int(epoch) if epoch is not None else None,
                seconds=best("seconds"),
                values=dict(trial.hyperparameters.values),
            )
        )
    return sorted(rows, key=lambda r: (r.val_accuracy is None, -(r.val_accuracy or 0.0), r.trial_id))


def write_trials_csv(rows: list[TrialRow], path: Path, scoring: str) -> Path:
    """One line per trial: id, status, val accuracy and its scoring, best epoch, seconds, hyperparameters."""
    names = sorted({name for row in rows for name in row.values})
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["trial", "status", OBJECTIVE, "scoring", "best_epoch", "seconds", *names])
        for row in rows:
            writer.writerow(
                [row.trial_id, row.status, row.val_accuracy, scoring, row.best_epoch, row.seconds]
                + [row.values.get(name) for name in names]
            )
    return path


def trials_markdown(rows: list[TrialRow], limit: int = 20) -> str:
    """The best `limit` trials as a markdown table, saying so when there are more."""
    names = sorted({name for row in rows for name in row.values})
    lines = [
        "| trial | val acc | best epoch | s | " + " | ".join(names) + " |",
        "|---|---:|---:|---:|" + "---|" * len(names),
    ]
    for row in rows[:limit]:
        val = f"{100 * row.val_accuracy:.2f}%" if row.val_accuracy is not None else row.status
        seconds = f"{row.seconds:.0f}" if row.seconds is not None else "-"
        lines.append(
            f"| {row.trial_id} | {val} | {row.best_epoch or '-'} | {seconds} | "
            + " | ".join(_short(row.values.get(name)) for name in names)
            + " |"
        )
    if len(rows) > limit:  # the CSV has them all
        lines += ["", f"The best {limit} of {len(rows)} trials; tune_trials.csv lists every one."]
    return "\n".join(lines) + "\n"


def plot_trials(rows: list[TrialRow], path: Path) -> Path:
    """Validation error of each trial in run order (log scale, so the good trials stay apart), best so far."""
    ordered = sorted((r for r in rows if r.val_accuracy is not None), key=lambda r: int(r.trial_id))
    ids = [int(r.trial_id) for r in ordered]
    # Floor at 0.01% (one image in 10,000) so a perfect smoke-run score still fits on a log axis.
    error = [max(100 * (1 - r.val_accuracy), 0.01) for r in ordered]
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    ax.scatter(ids, error, s=18, label="trial")
    if error:
        ax.step(ids, np.minimum.accumulate(error), where="post", color="tab:red", label="best so far")
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # one trial: no -0.045 ticks
    ax.set_xlabel("trial")
    ax.set_ylabel("validation error (%, log scale)")
    ax.set_title("digits-train tune: validation error per trial (lower is better)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def retrain_best(
    row: TrialRow, dataset: Dataset, cfg: TuneConfig, log: Callable[[str], None] = print
) -> list[TrainResult]:
    """The best trial re-trained with `cfg.seeds` seeds (each its own val split), each scored on test."""
    preset = preset_from_values(row.values)
    results = []
    for index in range(cfg.seeds):
        seeded = preset.with_overrides(seed=SEARCH_SEED + index, val_size=cfg.val_size)
        results.append(train_model(seeded, dataset, limit_train=cfg.limit_train, log=log))
    return results


def retrain_summary(results: list[TrainResult]) -> dict[str, Any]:
    """Mean and standard deviation of the test accuracy over seeds, plus each run's Wilson interval."""
    values = [r.test_accuracy.value for r in results]
    return {
        "seeds": [r.preset.train.seed for r in results],
        "test_accuracy": values,
        "test_interval_95": [[r.test_accuracy.low, r.test_accuracy.high] for r in results],
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "val_accuracy": [r.val_accuracy for r in results],
        "train_seconds": [r.seconds for r in results],
    }


def write_tune_report(
    rows: list[TrialRow], summary: dict[str, Any] | None, cfg: TuneConfig, run_dir: Path, dataset: str
) -> dict[str, Path]:
    """tune_trials.csv, tune_trials.md, tune_trials.png and best_trial.json in run_dir.

    `summary` None: the re-training of the best trial has not finished (written first, so that an
    interrupted or failed re-training still leaves the search's table and plot).
    """
    best = rows[0]
    preset = preset_from_values(best.values)
    scoring = trial_scoring(dataset)
    paths = {
        "csv": write_trials_csv(rows, run_dir / "tune_trials.csv", scoring),
        "plot": plot_trials(rows, run_dir / "tune_trials.png"),
        "best": run_dir / "best_trial.json",
        "markdown": run_dir / "tune_trials.md",
    }
    paths["best"].write_text(
        json.dumps({"trial": best.trial_id, "scoring": scoring, "values": best.values,
                    "preset": preset.to_dict(), "retrain": summary}, indent=2) + "\n"
    )
    if summary is None:
        retrained = f"- Best trial re-training with {cfg.seeds} seed(s): not finished."
    else:
        mean, std = 100 * summary["mean"], 100 * summary["std"]
        runs = ", ".join(
            f"seed {seed}: {100 * value:.2f}% [{100 * low:.2f}, {100 * high:.2f}]"
            for seed, value, (low, high) in zip(
                summary["seeds"], summary["test_accuracy"], summary["test_interval_95"], strict=True
            )
        )
        retrained = (
            f"- Best trial re-trained with {len(summary['seeds'])} seed(s), test accuracy **{mean:.2f}%"
            + (f" ± {std:.2f}%** (mean ± std)" if len(summary["seeds"]) > 1 else "**")
            + f"; {runs}."
        )
    finished = sum(row.val_accuracy is not None for row in rows)
    text = [
        f"# digits-train tune on {dataset}",
        "",
        f"- {finished} trials finished ({len(rows)} in the project); budget {cfg.budget_minutes:g} min, "
        f"up to {cfg.max_epochs} epochs per trial"
        + (f", {cfg.limit_train:,} training images" if cfg.limit_train else "")
        + f"; selection on a {cfg.val_size:,}-image validation split only.",
        f"- Each trial is scored on its {scoring} validation accuracy, as `digits-train train` chooses the "
        "epoch of what it serves.",
        f"- Best trial {best.trial_id}: validation accuracy {100 * (best.val_accuracy or 0):.2f}%.",
        retrained,
        "",
        trials_markdown(rows),
    ]
    paths["markdown"].write_text("\n".join(text))
    return paths


def _short(value: Any) -> str:
    """Compact table cell for a hyperparameter value."""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
