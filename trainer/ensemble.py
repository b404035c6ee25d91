"""Ensembles: several members trained with different seeds, averaged inside one Keras graph.

The averaged model is an ordinary Keras model with the same input and output as one member, so the
usual export (trainer/export.py) gives one SavedModel with the standard signature.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import keras
import numpy as np

from trainer.data import Dataset
from trainer.member_store import MemberStore, MemberStoreError
from trainer.model import MODEL_INPUT_SHAPE
from trainer.precision import shared_processor
from trainer.presets import Preset
from trainer.train import TrainResult, predict_classes, score_predictions, train_model


@dataclass(frozen=True)
class EnsembleResult:
    """The averaged model's result (what gets exported) and each member's own result."""

    combined: TrainResult
    members: tuple[TrainResult, ...]


def average_models(members: Sequence[keras.Model], name: str = "ensemble") -> keras.Model:
    """One model whose output is the mean of the members' softmax outputs: float [N,28,28,1] -> [N,10]."""
    if not members:
        raise ValueError("an ensemble needs at least one member")
    inputs = keras.Input(shape=MODEL_INPUT_SHAPE, name="pixels")
    # Wrap each member so the top-level layer names are unique even when the members share one name.
    wrapped = [
        keras.Sequential([keras.Input(MODEL_INPUT_SHAPE), member], name=f"member_{index}")
        for index, member in enumerate(members)
    ]
    outputs = [member(inputs) for member in wrapped]
    averaged = keras.layers.Average(name="probabilities")(outputs) if len(outputs) > 1 else outputs[0]
    return keras.Model(inputs, averaged, name=name)


def mean_val_accuracy(accuracies: Sequence[float | None]) -> float | None:
    """The members' mean validation accuracy, each on its own split; None if any member held nothing out."""
    if not accuracies or any(accuracy is None for accuracy in accuracies):
        return None
    return float(np.mean(accuracies))


def member_preset(preset: Preset, index: int) -> Preset:
    """Member `index` of an ensemble preset: its own seed, hence its own weights, shuffles and val split."""
    return replace(preset, train=replace(preset.train, seed=preset.train.seed + index, members=1))


def train_ensemble(
    preset: Preset,
    dataset: Dataset,
    limit_train: int | None = None,
    log: Callable[[str], None] = print,
    store: MemberStore | None = None,
) -> EnsembleResult:
    """Train `preset.train.members` members (each keeps its best validation epoch), then average them.

    With a `store`, each member is saved as it finishes, and members saved there by an earlier run of
    the same recipe on the same data are reused instead of trained again; a saved member that cannot be
    reused (damaged, or not scoring what its record says) is trained again, said in the log, and replaced.
    """
    count = preset.train.members
    members = []
    for index in range(count):
        recipe = member_preset(preset, index)
        damaged = False
        try:
            saved = store.load(recipe, dataset, limit_train) if store else None
        except MemberStoreError as exc:
            log(f"ensemble member {index + 1}/{count}: seed {recipe.train.seed}: the saved member cannot be "
                f"reused: {exc}; training it again")
            saved, damaged = None, True
        if saved is not None:
            log(
                f"ensemble member {index + 1}/{count}: seed {recipe.train.seed} reused from "
                f"{store.folder(recipe, dataset, limit_train)} (test accuracy {saved.test_accuracy}, "
                f"{saved.test_errors} errors)"
            )
            members.append(saved)
            continue
        log(f"ensemble member {index + 1}/{count}")
        member = train_model(recipe, dataset, limit_train=limit_train, log=log)
        if store:
            folder = store.save(recipe, member, dataset, limit_train, replace_damaged=damaged)
            log(f"member {'replaced' if damaged else 'saved'} in {folder}")
        members.append(member)
    model = average_models([member.model for member in members], name=f"{preset.name.replace('-', '_')}")

    # Scored on test once, after every member made its own choices on its own validation split.
    predictions = predict_classes(model, dataset.x_test)
    accuracy, errors = score_predictions(predictions, dataset.y_test)
    singles = ", ".join(f"{m.test_accuracy.value:.2%}" for m in members)
    log(f"ensemble of {count}: test accuracy {accuracy} ({errors} errors); members alone {singles}")
    first = members[0]
    combined = replace(
        first,
        model=model,
        preset=preset.with_model(mirror_average=first.preset.model.mirror_average),  # as the members serve
        val_accuracy=mean_val_accuracy([m.val_accuracy for m in members]),
        test_accuracy=accuracy,
        test_errors=errors,
        test_predictions=predictions,
        seconds=sum(m.seconds for m in members),
        epoch_seconds=[s for m in members for s in m.epoch_seconds],
        epoch_cpu_seconds=[s for m in members for s in m.epoch_cpu_seconds],
        processor=shared_processor([m.processor for m in members]),
    )
    return EnsembleResult(combined=combined, members=tuple(members))
