"""Combine finished exports into one ensemble SavedModel, without training anything again.

Members trained one at a time (on different machines, on different days, or by `train --preset
ensemble`) are rebuilt from their exports, averaged inside one graph like `train_ensemble` does, and
scored on the test set. Each member keeps the epoch its own validation split chose (the last one, for a
member fit on all 60,000 images with no hold-out).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np

from trainer.data import Dataset
from trainer.ensemble import average_models, mean_val_accuracy
from trainer.precision import shared_processor
from trainer.presets import Preset
from trainer.restore import MEMBER_CONFIGS, RestoreError, restore_model
from trainer.train import (
    TrainResult,
    predict_classes,
    predict_probabilities,
    score_predictions,
    stratified_split,
)

COMBINED_PRESET = "combined"


@dataclass(frozen=True)
class MemberScore:
    """One member of a combined ensemble: where it came from and how it does alone."""

    source: str  # the version directory it was rebuilt from
    preset: Preset
    val_accuracy: float | None  # on the member's own validation split; None if it had none
    test_accuracy: float
    test_errors: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary for the model card."""
        return {
            "source": self.source, "preset": self.preset.name, "seed": self.preset.train.seed,
            "epochs": self.preset.train.epochs, "val_accuracy": self.val_accuracy,
            "test_accuracy": self.test_accuracy, "test_errors": self.test_errors,
        }


@dataclass(frozen=True)
class CombineResult:
    """The averaged model (as a TrainResult, for the usual report and export) and its members."""

    combined: TrainResult
    members: tuple[MemberScore, ...]
    errors_by_size: tuple[int, ...]  # test errors of the first k members averaged, k = 1..N
    shared_errors: np.ndarray  # [N, N] shared_error_ratios of the members' test errors

    def card_fields(self) -> dict[str, Any]:
        """What a combined model card adds: each member's recipe (to rebuild it), its scores, the curve."""
        return {
            MEMBER_CONFIGS: [member.preset.to_dict() for member in self.members],
            "members": [member.to_dict() for member in self.members],
            "test_errors_by_members": list(self.errors_by_size),
            "shared_errors": np.round(self.shared_errors, 4).tolist(),
        }


def errors_as_members_are_added(probabilities: Sequence[np.ndarray], labels: np.ndarray) -> tuple[int, ...]:
    """Test errors of the mean softmax of the first k members, for k = 1..N, in the order given."""
    running = np.zeros_like(probabilities[0], dtype=np.float64)
    errors = []
    for count, member in enumerate(probabilities, start=1):
        running += member
        errors.append(int(np.sum((running / count).argmax(axis=1) != labels)))
    return tuple(errors)


def shared_error_ratios(wrong: Sequence[np.ndarray]) -> np.ndarray:
    """For each pair of members (boolean masks of the test images each gets wrong), the images both get
    wrong over the geometric mean of their error counts: 1 if they fail on the same images, 0 if on
    none in common. Members that fail together gain little from being averaged."""
    masks = np.asarray(wrong, dtype=np.float64)
    both = masks @ masks.T
    scale = np.sqrt(np.outer(np.diag(both), np.diag(both)))
    return np.divide(both, scale, out=np.zeros_like(both), where=scale > 0)


def mean_over_pairs(ratios: np.ndarray) -> float:
    """The mean of a symmetric pair-by-pair matrix, diagonal left out."""
    return float(ratios[np.triu_indices(len(ratios), k=1)].mean())


def combine_exports(
    version_dirs: Sequence[str | Path], dataset: Dataset, log: Callable[[str], None] = print
) -> CombineResult:
    """Average the networks exported in `version_dirs` (an ensemble brings all its members)."""
    paths = [Path(d) for d in version_dirs]
    if len({p.resolve() for p in paths}) != len(paths):
        raise RestoreError("the same version directory is listed twice")
    restored = [restore_model(path) for path in paths]
    checksums = dataset.checksums()  # hashes 55 MB: once, not per source
    for path, export in zip(paths, restored, strict=True):
        check_same_data(path, export.card, dataset.name, checksums)
    sources = [(str(path), model, preset)
               for path, export in zip(paths, restored, strict=True)
               for model, preset in zip(export.members, export.member_presets, strict=True)]
    if len(sources) < 2:
        raise RestoreError(f"an ensemble needs at least two members; {paths[0]} holds one network")
    check_distinct_networks(sources)

    members, member_probabilities, member_wrong = [], [], []
    for index, (source, model, preset) in enumerate(sources, start=1):
        val = _own_split_accuracy(model, preset, dataset)
        member_probabilities.append(predict_probabilities(model, dataset.x_test))
        member_wrong.append(member_probabilities[-1].argmax(axis=1) != dataset.y_test)
        wrong = int(member_wrong[-1].sum())
        test = 1 - wrong / len(dataset.y_test)
        members.append(MemberScore(source, preset, val_accuracy=val, test_accuracy=test, test_errors=wrong))
        val_text = "no hold-out" if val is None else f"val_acc {val:.4f} (own split)"
        log(f"member {index}/{len(sources)} from {source}: seed {preset.train.seed}, "
            f"{preset.train.epochs} epochs, {val_text}, test {test:.2%}")

    model = average_models([model for _, model, _ in sources], name=COMBINED_PRESET)
    # The graph averages the members' softmax, so their predictions above already give its own.
    predictions = np.mean(member_probabilities, axis=0).argmax(axis=1)
    accuracy, errors = score_predictions(predictions, dataset.y_test)
    errors_by_size = errors_as_members_are_added(member_probabilities, dataset.y_test)
    by_size = ", ".join(f"{k}: {e}" for k, e in enumerate(errors_by_size, start=1))
    log(f"test errors of the first k members averaged: {by_size}")
    shared = shared_error_ratios(member_wrong)
    log(f"errors two members share, on average over the pairs: {mean_over_pairs(shared):.2f} "
        "(1: the same images, 0: none in common; each pair in the model card)")
    log(f"ensemble of {len(sources)}: test accuracy {accuracy} ({errors} errors)")

    first = sources[0][2]
    preset = Preset(
        name=COMBINED_PRESET,
        description=f"softmax average of {len(sources)} networks from {', '.join(map(str, paths))}",
        model=first.model,
        train=replace(first.train, members=len(sources)),
        tags=("ensemble",),
    )
    cards = [export.card for export in restored]
    result = TrainResult(
        model=model,
        preset=preset,
        dataset=dataset.name,
        history={},  # nothing was trained here; each member's curves are in its own report
        best_epoch=0,
        val_accuracy=mean_val_accuracy([m.val_accuracy for m in members]),
        test_accuracy=accuracy,
        test_errors=errors,
        test_predictions=predictions,
        train_size=cards[0].get("dataset", {}).get("train_images", 0),
        val_size=first.train.val_size,
        seconds=float(sum(card.get("training_seconds", 0.0) for card in cards)),
        processor=shared_processor([card.get("processor") for card in cards]),
    )
    return CombineResult(
        combined=result, members=tuple(members), errors_by_size=errors_by_size, shared_errors=shared
    )


def weights_fingerprint(model: keras.Model) -> str:
    """sha256 of every weight's shape and values: equal for the same network, wherever it was exported."""
    digest = hashlib.sha256()
    for weight in model.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        digest.update(repr((value.shape, value.dtype.str)).encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def check_distinct_networks(sources: Sequence[tuple[str, keras.Model, Preset]]) -> None:
    """Refuse one network given twice (a copied export, or a version and an ensemble that holds it):
    averaged with itself it would only weigh twice, and the card would count it as two members."""
    seen: dict[str, tuple[int, str]] = {}
    for index, (source, model, preset) in enumerate(sources, start=1):
        fingerprint = weights_fingerprint(model)
        if fingerprint in seen:
            first_index, first_source = seen[fingerprint]
            where = source if source == first_source else f"{first_source} and {source}"
            raise RestoreError(
                f"members {first_index} and {index} (from {where}, seed {preset.train.seed}) are the same "
                "network: averaging a network with itself adds nothing but weight; give each one once"
            )
        seen[fingerprint] = (index, source)


def _own_split_accuracy(model: keras.Model, preset: Preset, dataset: Dataset) -> float | None:
    """Accuracy on the validation split the member was trained beside; None if it was fit on all 60k."""
    if not preset.train.val_size:
        return None
    split = stratified_split(dataset.y_train, preset.train.val_size, preset.train.seed)
    return float(np.mean(predict_classes(model, dataset.x_train[split.val]) == dataset.y_train[split.val]))


def check_same_data(path: Path, card: dict[str, Any], name: str, checksums: dict[str, str]) -> None:
    """Members are scored on the dataset `name`: refuse exports that were trained on something else."""
    trained_on = card.get("dataset")
    if not isinstance(trained_on, dict):
        raise RestoreError(f"{path}: its model card does not say which data it was trained on")
    if trained_on.get("name") != name:
        raise RestoreError(f"{path} was trained on {trained_on.get('name')!r}, not {name!r}")
    if "sha256" not in trained_on:  # every card since the first has them: this one was edited or made by hand
        raise RestoreError(f"{path}: its model card records no sha256 of the {name} arrays it was trained on")
    if trained_on["sha256"] != checksums:
        raise RestoreError(f"{path} was trained on different {name} arrays (sha256 differ)")
