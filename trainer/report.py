"""Write what a training run produced: history, curves, failures gallery, model card, reproduce table."""

from __future__ import annotations

import json
import platform
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import matplotlib
import numpy as np
import tensorflow as tf

from client.contract import (
    CLASS_NAMES,
    IMAGE_SIZE,
    INPUT_DTYPE,
    INPUT_NAME,
    NUM_CLASSES,
    OUTPUT_CLASSES,
    OUTPUT_PROBABILITIES,
    SIGNATURE_NAME,
)
from client.plots import plot_confusion_matrix, plot_misclassified, save_figure
from client.stats import Interval, confusion_matrix
from trainer.augment import training_augmentation
from trainer.data import Dataset
from trainer.paired import ERROR_INDICES, error_indices
from trainer.precision import accelerator_count
from trainer.presets import Preset
from trainer.train import AVERAGED_VAL, SERVED_VAL, TrainResult
from trainer.tta import describe as describe_tta

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def new_run_dir(reports_dir: str | Path, label: str) -> Path:
    """A fresh reports/<UTC time>-<label>/ directory (suffixed if that name is taken)."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    base = Path(reports_dir) / f"{stamp}-{re.sub(r'[^A-Za-z0-9_.-]', '_', label)}"
    for attempt in range(1000):
        path = base if attempt == 0 else base.with_name(f"{base.name}-{attempt}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a run directory next to {base}")


def model_card(result: TrainResult, dataset: Dataset) -> dict[str, Any]:
    """Everything needed to know what a model is and how good it is, as JSON-ready data."""
    train = result.preset.train
    return {
        "preset": result.preset.name,
        "description": result.preset.description,
        "config": result.preset.to_dict(),
        "augmentation": training_augmentation(dataset.name, train).describe(),  # training only
        "test_time_augmentation": describe_tta(result.preset.model),  # inside the served graph
        "dataset": {
            "name": dataset.name,
            "source": dataset.source,
            "sha256": dataset.checksums(),
            "train_images": result.train_size,
            "val_images": result.val_size,
            "test_images": len(dataset.y_test),
        },
        "metrics": {
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history.get("loss", [])),
            "val_accuracy": result.val_accuracy,
            "test_accuracy": result.test_accuracy.value,
            "test_accuracy_ci95": [result.test_accuracy.low, result.test_accuracy.high],
            "test_errors": result.test_errors,
            # Which images: any later model scored on this test set pairs with this one (trainer/paired.py).
            ERROR_INDICES: error_indices(result.test_predictions, dataset.y_test),
        },
        "params": result.params,
        "training_seconds": round(result.seconds, 2),
        "signature": {
            "name": SIGNATURE_NAME,
            "inputs": {
                INPUT_NAME: {
                    "dtype": INPUT_DTYPE,
                    "shape": [None, IMAGE_SIZE, IMAGE_SIZE],
                    "range": "raw pixels 0..255, ink bright on dark",
                }
            },
            "outputs": {
                OUTPUT_PROBABILITIES: {"dtype": "float32", "shape": [None, NUM_CLASSES]},
                OUTPUT_CLASSES: {"dtype": "int64", "shape": [None]},
            },
        },
        "class_names": list(CLASS_NAMES[dataset.name]),
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "python_version": platform.python_version(),
        "gpus": accelerator_count(),
        "processor": result.processor,  # that trained it; null where members differ or it is not known
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_run_report(
    result: TrainResult, dataset: Dataset, run_dir: Path, card: dict[str, Any] | None = None
) -> dict[str, Path]:
    """history.json, curves.png, misclassified.png, confusion_matrix.png and model_card.json in run_dir.

    `card` is the model card when the caller has built it already (default: `model_card(result, dataset)`).
    A result with no history (an ensemble combined from exports) gets no history or curves.
    """
    names = CLASS_NAMES[dataset.name]
    paths = {}
    if result.history:
        history = {**result.history, "best_epoch": result.best_epoch, "epoch_seconds": result.epoch_seconds}
        paths["history"] = _write_json(run_dir / "history.json", history)
        paths["curves"] = plot_history(
            result.history, result.best_epoch, run_dir / "curves.png", result.preset.name,
            served_curves(result.preset),
        )
    paths |= {
        "misclassified": plot_misclassified(
            dataset.x_test, dataset.y_test, result.test_predictions, names, run_dir / "misclassified.png"
        ),
        "confusion_matrix": plot_confusion_matrix(
            confusion_matrix(dataset.y_test, result.test_predictions, NUM_CLASSES),
            names,
            run_dir / "confusion_matrix.png",
            title=f"{result.preset.name} on the {dataset.name} test set",
        ),
        "model_card": _write_json(run_dir / "model_card.json", card or model_card(result, dataset)),
    }
    return paths


def served_curves(preset: Preset) -> dict[str, str]:
    """What the served model's validation curves measured (trainer/train.py's history keys), in words.

    SERVED_VAL scores the served network with the training weights: mirror-averaged, and/or the float32
    twin of a network trained in bfloat16; AVERAGED_VAL the served network with the averaged weights.
    """
    mirrored = ["mirror-averaged"] if preset.model.mirror_average else []
    twin = ["float32 twin"] if preset.train.precision == "bfloat16" else []
    return {
        SERVED_VAL: ", ".join(mirrored + twin) or "served",
        AVERAGED_VAL: ", ".join(mirrored + ["weight-averaged"]),
    }


def plot_history(
    history: dict[str, list[float]],
    best_epoch: int,
    path: Path,
    title: str = "",
    served: dict[str, str] | None = None,
) -> Path:
    """Train and (when held out) validation accuracy and loss per epoch, the kept epoch marked.

    Validation curves of the served model join the network's, labelled by `served` (history key: what
    was served, from `served_curves`).
    """
    served = served or {SERVED_VAL: "served", AVERAGED_VAL: "weight-averaged"}
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for ax, metric in ((acc_ax, "accuracy"), (loss_ax, "loss")):
        ax.plot(epochs, history.get(metric, []), marker=".", label=f"train {metric}")
        if f"val_{metric}" in history:  # absent when nothing was held out
            ax.plot(epochs, history[f"val_{metric}"], marker=".", label=f"validation {metric}")
        for key, which in served.items():  # where the served model differs from the network
            if metric == "accuracy" and key in history:
                ax.plot(epochs, history[key], marker=".", label=f"validation accuracy, {which}")
        if best_epoch:
            ax.axvline(
                best_epoch, color="grey", linestyle="--", linewidth=1, label=f"kept epoch {best_epoch}"
            )
        if metric == "accuracy" and len(epochs) >= 8:  # zoom on where the epoch is chosen
            late = np.concatenate([line.get_ydata()[len(epochs) // 4:] for line in ax.get_lines()
                                   if len(line.get_ydata()) == len(epochs)])
            margin = 0.1 * (late.max() - late.min()) or 0.001
            ax.set_ylim(late.min() - margin, min(1.0, late.max() + margin))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_errors_by_members(ensemble_errors: Sequence[int], member_errors: Sequence[int], path: Path) -> Path:
    """Test errors of the first k members averaged, against k, beside each member's own errors."""
    sizes = np.arange(1, len(ensemble_errors) + 1)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(sizes, ensemble_errors, marker="o", label="first k members averaged")
    ax.scatter(sizes, member_errors, color="grey", marker="x", label="member k alone")
    ax.set_xlabel("members (k)")
    ax.set_ylabel("test errors")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("ensemble size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


@dataclass(frozen=True)
class ReproduceRow:
    """One line of the reproduce-seed table."""

    preset: str
    params: int
    tutorial_accuracy: float | None
    test_accuracy: Interval
    best_epoch: int
    epochs: int
    train_seconds: float  # model.fit only
    wall_seconds: float  # fit, evaluation and report plots


def reproduce_table(rows: Sequence[ReproduceRow], title: str, notes: Sequence[str] = ()) -> str:
    """The reproduce-seed results as a markdown document."""
    lines = [f"# {title}", ""] + [f"- {note}" for note in notes]
    lines += [
        "",
        "| preset | params | tutorial test acc | our test acc [95% Wilson] | best / epochs | train | wall |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for row in rows:
        tutorial = f"{100 * row.tutorial_accuracy:.2f}%" if row.tutorial_accuracy is not None else "-"
        lines.append(
            f"| {row.preset} | {row.params:,} | {tutorial} | {row.test_accuracy} | "
            f"{row.best_epoch} / {row.epochs} | {row.train_seconds:.0f} s | {row.wall_seconds:.0f} s |"
        )
    return "\n".join(lines) + "\n"


def _write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
