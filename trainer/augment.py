"""Training-only data augmentation: random rotation, zoom and shift as Keras preprocessing layers.

The augmenter wraps the network for `fit` only; the network that gets exported never contains it,
so the serving graph is exactly the deterministic classifier.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from trainer.model import MODEL_INPUT_SHAPE


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation ranges at strength 1.0 (Deotte's MNIST recipe); `strength` scales all of them."""

    rotation_degrees: float = 10.0
    zoom: float = 0.10  # +-10% scale
    shift: float = 0.10  # +-10% of the image size, in each direction
    strength: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 2.0:
            raise ValueError(f"augmentation strength must be in [0, 2], got {self.strength}")


def build_augmenter(cfg: AugmentConfig, seed: int | None = None) -> keras.Sequential:
    """Random rotation, zoom and shift of float [N,28,28,1] images; identity when not training."""
    s = cfg.strength
    # Background is 0 (ink bright on dark), so pad with a constant 0, never by reflection.
    fill = {"fill_mode": "constant", "fill_value": 0.0, "seed": seed}
    return keras.Sequential(
        [
            keras.Input(shape=MODEL_INPUT_SHAPE),
            keras.layers.RandomRotation(s * cfg.rotation_degrees / 360.0, **fill),
            keras.layers.RandomZoom(s * cfg.zoom, **fill),
            keras.layers.RandomTranslation(s * cfg.shift, s * cfg.shift, **fill),
        ],
        name="augment",
    )


def with_augmentation(model: keras.Model, strength: float, seed: int | None = None) -> keras.Model:
    """`model` behind a training-only augmenter (weights shared); `model` itself when strength is 0."""
    if strength <= 0:
        return model
    augmenter = build_augmenter(AugmentConfig(strength=strength), seed=seed)
    inputs = keras.Input(shape=MODEL_INPUT_SHAPE, name="pixels")
    return keras.Model(inputs, model(augmenter(inputs)), name=f"{model.name}_augmented")
