"""Pair models on the same test images by the images each gets wrong (McNemar's exact test).

The test set is fixed, so the indices of the test images a model misclassifies are all a paired
comparison needs: a model card lists them (`metrics.test_error_indices`), and a list kept anywhere
(a results page, another machine) still pairs a model whose export is gone. An export whose card
predates the list is scored on its test set instead.

Models trained beside the same validation split (the same seed and size) pair on it too: each export is
scored on the images it held out, the split that chose its epoch, so two candidates can be told apart
without touching the test set.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from client.stats import McNemarResult, mcnemar_from_counts

ERROR_INDICES = "test_error_indices"  # the model card's metrics key


class PairingError(ValueError):
    """A source that names no test errors, or two sources not scored on the same test images."""


@dataclass(frozen=True)
class Misclassified:
    """The test images one model gets wrong, and what they were drawn from."""

    source: str
    indices: frozenset[int]
    dataset: str | None = None  # None: a bare list, which names no dataset
    test_sha256: tuple[str | None, str | None] = (None, None)  # of x_test and y_test, where the card has them
    test_images: int | None = None
    held_out: str | None = None  # for validation errors: the split their indices (into x_train) come from


@dataclass(frozen=True)
class PairedErrors:
    """Two models on the same images (test, or one validation split): the images only one of them gets
    right, and those both miss."""

    new: Misclassified
    old: Misclassified

    @property
    def only_new_right(self) -> int:
        return len(self.old.indices - self.new.indices)

    @property
    def only_old_right(self) -> int:
        return len(self.new.indices - self.old.indices)

    @property
    def both_wrong(self) -> int:
        return len(self.new.indices & self.old.indices)

    def mcnemar(self) -> McNemarResult:
        return mcnemar_from_counts(self.only_new_right, self.only_old_right)


def error_indices(predictions: np.ndarray, labels: np.ndarray) -> list[int]:
    """Indices of the images whose prediction is not their label, ascending."""
    return np.flatnonzero(np.asarray(predictions) != np.asarray(labels)).tolist()


def read_test_errors(
    source: str | Path, score_export: Callable[[Path], list[int]] | None = None
) -> Misclassified:
    """The test errors `source` names: a run's report folder or its model_card.json, an exported
    version, or a JSON list of indices. An export whose card has no list is scored by `score_export`."""
    path = Path(source)
    card_path, is_export = _card_path(path)
    try:
        data = json.loads(card_path.read_text())
    except (OSError, ValueError) as exc:
        raise PairingError(f"{source}: no readable model card or list of indices ({exc})") from None
    if isinstance(data, list):
        return Misclassified(str(source), _checked_indices(source, data))
    if not isinstance(data, dict):
        raise PairingError(f"{source}: neither a model card nor a list of indices")
    dataset, metrics = (_section(data, key) for key in ("dataset", "metrics"))
    listed = metrics.get(ERROR_INDICES)
    if listed is None:
        if score_export is None or not is_export:
            raise PairingError(f"{source}: its model card lists no {ERROR_INDICES} (written before they "
                               "were); pass its exported version, which is then scored on the test set")
        listed = score_export(path)
    checksums = _section(dataset, "sha256")
    test_images = dataset.get("test_images") if type(dataset.get("test_images")) is int else None
    return Misclassified(
        str(source), _checked_indices(source, listed, test_images), dataset=dataset.get("name"),
        test_sha256=(checksums.get("x_test"), checksums.get("y_test")), test_images=test_images,
    )


def pair(new: Misclassified, old: Misclassified) -> PairedErrors:
    """`new` against `old`, refused unless both can have been scored on the same test images (or, for
    validation errors, on the same held-out training images)."""
    if new.held_out != old.held_out:
        raise PairingError(f"{new.source} was scored on {_scored_on(new)}, {old.source} on "
                           f"{_scored_on(old)}: not the same images")
    if new.dataset and old.dataset and new.dataset != old.dataset:
        raise PairingError(f"{new.source} was scored on {new.dataset!r}, {old.source} on {old.dataset!r}")
    if None not in (*new.test_sha256, *old.test_sha256) and new.test_sha256 != old.test_sha256:
        raise PairingError(f"{new.source} and {old.source} were scored on different test arrays (sha256)")
    for one, other in ((new, old), (old, new)):
        if one.test_images and other.indices and max(other.indices) >= one.test_images:
            raise PairingError(f"{other.source} lists test image {max(other.indices)}; "
                               f"{one.source} was scored on {one.test_images}")
    return PairedErrors(new, old)


def _scored_on(errors: Misclassified) -> str:
    return f"its validation split ({errors.held_out})" if errors.held_out else "the test set"


def pooled(pairs: Sequence[PairedErrors]) -> McNemarResult:
    """One exact test on the discordant images of several pairs added together."""
    return mcnemar_from_counts(sum(p.only_new_right for p in pairs), sum(p.only_old_right for p in pairs))


def describe(paired: PairedErrors) -> str:
    """One line: both error counts, the discordant images and the exact p."""
    return (f"{len(paired.new.indices)} errors against {len(paired.old.indices)}: "
            f"{describe_test(paired.mcnemar(), paired.both_wrong)}")


def describe_test(test: McNemarResult, both_wrong: int | None = None) -> str:
    """The discordant images (and those both get wrong, where known) and the exact p, in words."""
    both = "" if both_wrong is None else f", both wrong on {both_wrong}"
    return (f"only the first right on {test.only_a_correct}, only the second on {test.only_b_correct}{both}; "
            f"exact McNemar p = {test.p_value:.3g}")


def _card_path(path: Path) -> tuple[Path, bool]:
    """Where a source's JSON lies (the file itself, a report folder's card, or an export's card), and
    whether the source is an export."""
    if not path.is_dir():
        return path, False
    from trainer.export import ASSETS_EXTRA, MODEL_CARD_FILE  # TensorFlow: only for a folder

    if (path / MODEL_CARD_FILE).is_file():
        return path / MODEL_CARD_FILE, False
    return path / ASSETS_EXTRA / MODEL_CARD_FILE, True


def _section(card: dict[str, Any], key: str) -> dict[str, Any]:
    """card[key] where it is a mapping, else an empty one: a hand-edited card may hold anything."""
    value = card.get(key)
    return value if isinstance(value, dict) else {}


def _checked_indices(source: Any, values: Any, test_images: int | None = None) -> frozenset[int]:
    """The indices as a set, refused unless they are distinct integers on the test set."""
    integers = isinstance(values, list) and all(type(v) is int for v in values)  # not bool, not float
    if not integers:
        raise PairingError(f"{source}: {ERROR_INDICES} must be a list of integers")
    indices = frozenset(values)
    if len(indices) != len(values):
        raise PairingError(f"{source}: an index is listed twice")
    if indices and min(indices) < 0:
        raise PairingError(f"{source}: a test image's index cannot be negative")
    if test_images is not None and indices and max(indices) >= test_images:
        raise PairingError(f"{source}: index {max(indices)} is past its {test_images} test images")
    return indices


def scored_export(data_dir: str | Path, log: Callable[[str], None] = print) -> Callable[[Path], list[int]]:
    """A `score_export` for `read_test_errors`: rebuild the export and score it on its dataset's test set
    in `data_dir`, refused if those are not the arrays it was trained on."""

    def score(version_dir: Path) -> list[int]:
        from trainer.train import predict_classes

        restored, dataset = _restored_with_its_data(version_dir, data_dir)
        log(f"{version_dir}: its card lists no test errors; scoring it on the {dataset.name} test set")
        return error_indices(predict_classes(restored.model, dataset.x_test), dataset.y_test)

    return score


def _restored_with_its_data(version_dir: Path, data_dir: str | Path):
    """The export rebuilt, and the dataset in `data_dir` it was trained on (refused if the arrays differ)."""
    from trainer.combine import check_same_data
    from trainer.data import load_dataset
    from trainer.restore import RestoreError, restore_model

    try:
        restored = restore_model(version_dir)
        dataset = load_dataset(restored.card["dataset"]["name"], data_dir)
        check_same_data(version_dir, restored.card, dataset.name, dataset.checksums())
    except (RestoreError, KeyError, TypeError) as exc:
        raise PairingError(f"{version_dir}: cannot be scored ({exc})") from None
    return restored, dataset


def read_validation_errors(
    version_dir: str | Path, data_dir: str | Path, log: Callable[[str], None] = print
) -> Misclassified:
    """The images of its own validation split an export gets wrong, as indices into the training set:
    the split is rebuilt from the seed and size in its model card, on the arrays in `data_dir`."""
    from trainer.train import predict_classes, stratified_split

    version_dir = Path(version_dir)
    if not (version_dir.is_dir() and _card_path(version_dir)[1]):
        raise PairingError(f"{version_dir}: validation errors are scored, so pass an exported version "
                           "(e.g. models/mnist/3), not a report or a list")
    restored, dataset = _restored_with_its_data(version_dir, data_dir)
    splits = {(p.train.seed, p.train.val_size) for p in restored.member_presets}
    if len(splits) > 1:
        raise PairingError(f"{version_dir}: its members held out different images; it has no one "
                           "validation split")
    ((seed, val_size),) = splits
    if not val_size:
        raise PairingError(f"{version_dir}: trained on every training image; it has no validation split")
    held_out = f"{val_size:,} images with seed {seed}"
    log(f"{version_dir}: scoring it on its validation split ({held_out} of {dataset.name})")
    val = stratified_split(dataset.y_train, val_size, seed).val
    wrong = val[error_indices(predict_classes(restored.model, dataset.x_train[val]), dataset.y_train[val])]
    return Misclassified(str(version_dir), frozenset(wrong.tolist()), dataset=dataset.name, held_out=held_out)
