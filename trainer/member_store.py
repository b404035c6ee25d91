"""Finished ensemble members kept on disk, so that an interrupted ensemble resumes where it stopped.

`--preset ensemble` trains six networks one after the other: hours on a laptop CPU. Each member is
saved as it finishes, in `<root>/<recipe>-<data>-<key>/seed-<S>/` (root: `models/.members` by
default): its weights and a record of its recipe, data and scores. A rerun of the same recipe on the
same data reuses the members it finds there and trains only the rest. Another recipe, training subset
or dataset hashes to another folder, so a member is never reused for a recipe it was not trained with. A
member that is there but damaged (unreadable, truncated, or not scoring what its record says) is trained
again, with a message naming its folder, and the new one replaces it.

`train` of one network keeps it the same way, in `<models>/.unexported/`, only when its export fails (a
full disk): the same command again exports it instead of training, then removes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras

from trainer.data import Dataset
from trainer.model import build_model
from trainer.precision import resolve_precision
from trainer.presets import Preset
from trainer.train import TrainResult, predict_classes, score_predictions
from trainer.tta import serving_network

MEMBERS_FOLDER = ".members"  # under the models directory: kept with the models, served by no server
UNEXPORTED_FOLDER = ".unexported"  # under the models directory: a network whose export failed
MEMBER_WEIGHTS = "member.weights.h5"
MEMBER_RECORD = "member.json"


class MemberStoreError(ValueError):
    """A saved member that cannot be reused: unreadable, damaged, or not what its record says."""


@dataclass(frozen=True)
class MemberStore:
    """Where trained networks are kept (an ensemble's members; a network whose export failed): one
    folder per recipe and data, one per seed in it."""

    root: Path

    def folder(self, member: Preset, dataset: Dataset, limit_train: int | None) -> Path:
        """The folder of the member trained with `member`'s recipe and seed on this data.

        Keyed on the precision that trains here: "auto" is bfloat16 on some machines and float32 on
        others, and a member trained in one is not the recipe the other asks for."""
        member = settled_precision(member)
        preset = replace(member, train=replace(member.train, seed=0)).to_dict()  # seeds share it
        if preset["train"]["precision"] == "float32":  # as every member saved before the field existed
            del preset["train"]["precision"]
        recipe = {
            "preset": preset,
            "dataset": dataset.name,
            "sha256": dataset.checksums(),
            "limit_train": limit_train,
        }
        key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
        return self.root / f"{member.name}-{dataset.name}-{key}" / f"seed-{member.train.seed}"

    def load(self, member: Preset, dataset: Dataset, limit_train: int | None) -> TrainResult | None:
        """The saved member for this recipe, seed and data, rebuilt and re-scored; None if none is saved.

        Raises MemberStoreError, naming the folder, for a member that is there but cannot be trusted."""
        folder = self.folder(member, dataset, limit_train)
        if not folder.is_dir():
            return None
        try:
            record = json.loads((folder / MEMBER_RECORD).read_text())
            if not isinstance(record, dict):
                raise MemberStoreError("its record is not a JSON object")
            # Compared as presets, so a record from before a field existed reads as that field's default;
            # with the precision the member trained in, which "auto" settled when it was trained.
            preset = Preset.from_dict(record["preset"])
            requested = Preset.from_dict(record["requested"]).with_overrides(precision=preset.train.precision)
            if requested != settled_precision(member) or record["dataset"] != dataset.name:
                raise MemberStoreError("its record names another recipe or dataset")
            model = serving_network(preset.model, build_model(preset.model))
            model.load_weights(folder / MEMBER_WEIGHTS)
            predictions = predict_classes(model, dataset.x_test)
            accuracy, errors = score_predictions(predictions, dataset.y_test)
            if errors != record["test_errors"]:
                raise MemberStoreError(
                    f"its weights give {errors} test errors, its record says {record['test_errors']}"
                )
            return TrainResult(
                model=model,
                preset=preset,
                dataset=dataset.name,
                history=dict(record["history"]),
                best_epoch=int(record["best_epoch"]),
                val_accuracy=record["val_accuracy"],
                test_accuracy=accuracy,
                test_errors=errors,
                test_predictions=predictions,
                train_size=int(record["train_size"]),
                val_size=int(record["val_size"]),
                seconds=float(record["seconds"]),
                epoch_seconds=list(record["epoch_seconds"]),
                epoch_cpu_seconds=list(record.get("epoch_cpu_seconds", [])),  # absent from older records
                processor=record.get("processor"),  # absent from older records: not known
            )
        except MemberStoreError as exc:
            raise MemberStoreError(f"{folder}: {exc}") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise MemberStoreError(f"{folder}: cannot be reused ({type(exc).__name__}: {exc})") from None

    def save(
        self, member: Preset, result: TrainResult, dataset: Dataset, limit_train: int | None,
        replace_damaged: bool = False,
    ) -> Path:
        """Keep a finished member: written beside its folder and renamed into place, so a member that
        is there is whole. A member already there is kept (another run saved it first), unless
        `replace_damaged` says it is one `load` refused: that one is swapped out for this one."""
        folder = self.folder(member, dataset, limit_train)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        try:  # an error writing (a full disk) or moving a damaged one aside is raised
            result.model.save_weights(tmp / MEMBER_WEIGHTS)
            (tmp / MEMBER_RECORD).write_text(json.dumps(_record(member, result), indent=2) + "\n")
            os.chmod(tmp, 0o755)  # mkdtemp makes 0700
            if replace_damaged and folder.exists():
                # Renamed aside first (an atomic step), so the folder is never half old, half new.
                aside = Path(tempfile.mkdtemp(prefix=f".{folder.name}-damaged-", dir=folder.parent))
                os.rename(folder, aside / folder.name)
                shutil.rmtree(aside, ignore_errors=True)
            try:
                os.rename(tmp, folder)
            except OSError:
                if not folder.is_dir():  # else another run saved this member first: theirs is kept
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return folder

    def discard(self, member: Preset, dataset: Dataset, limit_train: int | None) -> None:
        """Remove the member's folder, and the recipe's folder and the root if that leaves them empty."""
        folder = self.folder(member, dataset, limit_train)
        shutil.rmtree(folder, ignore_errors=True)
        for empty in (folder.parent, self.root):
            try:
                empty.rmdir()
            except OSError:  # not empty, or gone
                break


def settled_precision(member: Preset) -> Preset:
    """`member` with its precision as it trains on this machine ("auto" settled, trainer/precision.py)."""
    return member.with_overrides(precision=resolve_precision(member.train.precision))


def _record(member: Preset, result: TrainResult) -> dict[str, Any]:
    """What a saved member needs besides its weights: what was asked, what was built, how it scored."""
    return {
        "requested": member.to_dict(),
        "preset": result.preset.to_dict(),
        "dataset": result.dataset,
        "keras_version": keras.__version__,
        "best_epoch": result.best_epoch,
        "val_accuracy": result.val_accuracy,
        "test_errors": result.test_errors,
        "train_size": result.train_size,
        "val_size": result.val_size,
        "seconds": result.seconds,
        "epoch_seconds": result.epoch_seconds,
        "epoch_cpu_seconds": result.epoch_cpu_seconds,
        "processor": result.processor,
        "history": result.history,
    }
