"""Rebuild an exported version as a Keras model again: from its model card's config and its weights.

The SavedModel holds the weights but not the Keras objects; the model card says which presets built
them. Rebuilding lets a finished export be scored, probed or combined into an ensemble without training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from client.contract import INPUT_NAME, OUTPUT_CLASSES, OUTPUT_PROBABILITIES, SIGNATURE_NAME
from trainer.ensemble import average_models, member_preset
from trainer.export import ASSETS_EXTRA, MODEL_CARD_FILE, check_export, read_model_card
from trainer.model import build_model
from trainer.presets import Preset
from trainer.tta import serving_network

MEMBER_CONFIGS = "member_configs"  # model-card key: each member's preset, for ensembles
_CHECK_IMAGES = np.random.default_rng(0).integers(0, 256, size=(8, 28, 28), dtype=np.uint8)


class RestoreError(ValueError):
    """An export that cannot be rebuilt: missing, without a usable model card, or not what it says."""


@dataclass(frozen=True)
class RestoredModel:
    """An exported version as Keras objects: the served model and, for an ensemble, its members."""

    model: keras.Model
    members: tuple[keras.Model, ...]  # (model,) for a single network; each as served (trainer/tta.py)
    member_presets: tuple[Preset, ...]  # the recipe of each member (its own seed and validation split)
    card: dict[str, Any]


def member_presets(card: dict[str, Any]) -> tuple[Preset, ...]:
    """Each member's preset, from a model card (an ensemble lists them or derives them by seed)."""
    if MEMBER_CONFIGS in card:
        return tuple(Preset.from_dict(config) for config in card[MEMBER_CONFIGS])
    preset = Preset.from_dict(card["config"])
    if preset.train.members == 1:
        return (preset,)
    return tuple(member_preset(preset, index) for index in range(preset.train.members))


def restore_model(version_dir: str | Path) -> RestoredModel:
    """The Keras model exported in `version_dir`, checked to reproduce the SavedModel's outputs."""
    version_dir = Path(version_dir)
    if not (version_dir / ASSETS_EXTRA / MODEL_CARD_FILE).is_file():
        raise RestoreError(f"{version_dir}: not an exported version (no {ASSETS_EXTRA}/{MODEL_CARD_FILE})")
    try:
        card = read_model_card(version_dir)
        if not isinstance(card, dict):
            raise TypeError(f"a JSON {type(card).__name__}, not an object")
        presets = member_presets(card)
    except OSError as exc:
        raise RestoreError(f"{version_dir}: its model card cannot be read ({exc})") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise RestoreError(f"{version_dir}: the model card does not describe the network ({exc})") from None
    if not presets:
        raise RestoreError(f"{version_dir}: the model card lists no network ({MEMBER_CONFIGS} is empty)")
    try:
        members = tuple(serving_network(preset.model, build_model(preset.model)) for preset in presets)
    except (KeyError, TypeError, ValueError) as exc:  # e.g. unknown layer defaults, a crop larger than 28
        raise RestoreError(f"{version_dir}: the model card describes a network that cannot be built ({exc})"
                           ) from None
    model = average_models(members) if len(members) > 1 else members[0]

    try:
        exported = tf.saved_model.load(str(version_dir)).variables
    except (OSError, ValueError, tf.errors.OpError) as exc:
        raise RestoreError(f"{version_dir}: the SavedModel does not load: {exc}") from None
    shapes = [tuple(v.shape) for v in exported], [tuple(v.shape) for v in model.variables]
    if shapes[0] != shapes[1]:
        raise RestoreError(
            f"{version_dir}: its weights do not fit the network its model card describes "
            f"({len(shapes[0])} exported variables, {len(shapes[1])} rebuilt)"
        )
    for source, target in zip(exported, model.variables, strict=True):
        target.assign(source.numpy())
    try:
        check_export(version_dir, model, _CHECK_IMAGES)
    except RuntimeError as exc:
        raise RestoreError(f"{version_dir}: the rebuilt network does not match the export: {exc}") from None
    except (KeyError, TypeError, ValueError, tf.errors.OpError) as exc:  # no such signature, input or output
        raise RestoreError(
            f"{version_dir}: the export does not serve the '{SIGNATURE_NAME}' signature (uint8 "
            f"'{INPUT_NAME}' [N, 28, 28] in, '{OUTPUT_PROBABILITIES}' and '{OUTPUT_CLASSES}' out): "
            f"{type(exc).__name__}: {exc}"
        ) from None
    return RestoredModel(model=model, members=members, member_presets=presets, card=card)
