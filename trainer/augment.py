"""Training-only data augmentation: flips, rotation, zoom, shift, elastic and grid distortion, erasing.

The augmenter wraps the network for `fit` only; the network that gets exported never contains it,
so the serving graph is exactly the deterministic classifier. What suits the data differs: digits
are never mirrored (a mirrored 2 is no digit), clothes are (a mirrored shoe is a shoe). A gate can
switch the augmenter off for the last epochs of a fit (a clean finish on the images as they are).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import keras
import numpy as np

from trainer.cropped_rotation import CroppedRotation
from trainer.grid_distortion import GridDistortion
from trainer.model import MODEL_INPUT_SHAPE
from trainer.presets import TrainConfig

SIMARD_SIGMA = 4.0  # Simard's width of the elastic displacement field for 28x28 digits (trainer/elastic.py)
GRID_CELLS = 4  # cells along each side of the grid distortion's grid


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation ranges at strength 1.0 (Deotte's MNIST recipe); `strength` scales all of them."""

    rotation_degrees: float = 10.0
    rotation_crop: bool = False  # zoom each rotation until its frame fills the image (Augmentor's rotate;
    # trainer/cropped_rotation.py) instead of leaving empty corners
    zoom: float = 0.10  # +-10% scale
    shift: float = 0.10  # +-10% of the image size, in each direction
    horizontal_flip: bool = False  # mirror left-right with probability 1/2 (at any strength > 0)
    elastic: float = 0.0  # alpha of Simard's elastic distortion (trainer/elastic.py; 34: his); 0: none
    elastic_probability: float = 1.0  # share of the training images that get it
    erase: float = 0.0  # probability of random erasing (Zhong et al.): a patch of 2-33% of the image -> noise
    grid: int = 0  # pixels each inner point of a 4x4 grid may move (trainer/grid_distortion.py); 0: none
    strength: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 2.0:
            raise ValueError(f"augmentation strength must be in [0, 2], got {self.strength}")

    def transforms(self) -> list[str]:
        """The transforms applied at this strength, in words; empty when the augmenter is the identity."""
        s = self.strength
        rotation = "cropped rotation" if self.rotation_crop else "rotation"
        ranges = ((rotation, self.rotation_degrees, "°"), ("zoom", self.zoom, ""),
                  ("shift", self.shift, ""))
        flip = ["left-right flip"] if self.horizontal_flip and s > 0 else []
        moves = [f"{name} ±{value * s:.3g}{unit}" for name, value, unit in ranges if value * s]
        alpha = self.elastic * s
        share = f" p={self.elastic_probability:g}" if self.elastic_probability < 1 else ""
        elastic = [f"elastic distortion alpha={alpha:g} sigma={SIMARD_SIGMA:g}{share}"] if alpha else []
        erase = [f"random erasing p={self.erase_probability:g}"] if self.erase_probability else []
        cells = f"{GRID_CELLS}x{GRID_CELLS} cells"
        grid = [f"grid distortion ±{self.grid * s:g} px ({cells})"] if self.grid * s else []
        return flip + elastic + grid + moves + erase

    @property
    def erase_probability(self) -> float:
        """The chance that a training image has a patch erased, at this strength."""
        return min(1.0, self.erase * self.strength)

    @property
    def changes_images(self) -> bool:
        """False when the augmenter would be the identity (strength 0, or no transform enabled)."""
        return bool(self.transforms())

    def describe(self) -> str:
        """What the augmenter does at this strength, for logs and reports ("none" if nothing)."""
        return ", ".join(self.transforms()) or "none"


# Per dataset, chosen on the validation split (docs/results.md, "Augmentation for Fashion-MNIST").
AUGMENT_POLICIES: dict[str, AugmentConfig] = {
    "mnist": AugmentConfig(),
    "fashion_mnist": AugmentConfig(rotation_degrees=0.0, zoom=0.0, shift=0.0, horizontal_flip=True),
}
# Named ones a preset asks for by TrainConfig.augment_policy, whatever the dataset.
NAMED_POLICIES: dict[str, AugmentConfig] = {
    # T. Doucet's random 25x25 crop of a 28x28 digit: up to 1.5 px each way, before a network that zooms
    # into the central 25x25 (ModelConfig.centre_crop); then his 10-degree rotation and 1-px grid distortion.
    "shift-rotate-grid": AugmentConfig(rotation_degrees=10.0, zoom=0.0, shift=1.5 / 28, grid=1),
    # The same with his rotation as Augmentor does it: zoomed until the rotated frame fills the image.
    "shift-rotate-crop-grid": AugmentConfig(rotation_degrees=10.0, rotation_crop=True, zoom=0.0,
                                            shift=1.5 / 28, grid=1),
    # His rotation and grid alone, for a network whose own crop moves each training digit by whole pixels
    # (ModelConfig.train_crop, `digits-train train --augmentor-crops`).
    "rotate-crop-grid": AugmentConfig(rotation_degrees=10.0, rotation_crop=True, zoom=0.0, shift=0.0, grid=1),
}


def named_policy(name: str) -> AugmentConfig:
    """The augmentation called `name` in NAMED_POLICIES, or a ValueError listing the known ones."""
    if name not in NAMED_POLICIES:
        raise ValueError(f"unknown augmentation {name!r}; known: {', '.join(NAMED_POLICIES)}")
    return NAMED_POLICIES[name]


def augment_policy(
    dataset: str, strength: float = 1.0, elastic: float = 0.0, elastic_probability: float = 1.0,
    name: str = "",
) -> AugmentConfig:
    """The augmentation called `name`, or else the one that suits `dataset` (digits' when unknown), at
    `strength`, with any elastic one."""
    policy = named_policy(name) if name else AUGMENT_POLICIES.get(dataset, AUGMENT_POLICIES["mnist"])
    return replace(policy, strength=strength, elastic=elastic, elastic_probability=elastic_probability)


def _layer_seeds(seed: int | None) -> Iterator[int | None]:
    """A distinct 32-bit seed for each random layer, all from `seed` (None: unseeded). Keras layers given
    one and the same seed draw the same numbers: each rotation would come with a zoom and a horizontal
    shift in proportion to it, one random number for all three."""
    for k in itertools.count():
        yield None if seed is None else int(np.random.SeedSequence([seed, k]).generate_state(1)[0])


def build_augmenter(cfg: AugmentConfig, seed: int | None = None) -> keras.Sequential:
    """Random flip, elastic and grid distortion, rotation, zoom, shift and erasing of [N,28,28,1] images,
    each drawn independently of the others."""
    s = cfg.strength
    seeds = _layer_seeds(seed)
    # Background is 0 (ink bright on dark), so pad with a constant 0, never by reflection.
    fill = {"fill_mode": "constant", "fill_value": 0.0}
    layers: list[keras.layers.Layer] = [keras.Input(shape=MODEL_INPUT_SHAPE)]
    if cfg.horizontal_flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=next(seeds)))
    if cfg.elastic * s:  # first, on the crisp image: the stroke bends, then the whole digit moves
        from trainer.elastic import ElasticDistortion  # TensorFlow only; the default path runs on any backend

        layers.append(ElasticDistortion(cfg.elastic * s, SIMARD_SIGMA, cfg.elastic_probability,
                                        seed=next(seeds)))
    if cfg.grid * s:
        layers.append(GridDistortion(cfg.grid, GRID_CELLS, scale=s, seed=next(seeds)))
    if cfg.rotation_degrees and cfg.rotation_crop:
        layers.append(CroppedRotation(s * cfg.rotation_degrees, seed=next(seeds)))
    elif cfg.rotation_degrees:
        layers.append(keras.layers.RandomRotation(s * cfg.rotation_degrees / 360.0, seed=next(seeds), **fill))
    if cfg.zoom:
        layers.append(keras.layers.RandomZoom(s * cfg.zoom, seed=next(seeds), **fill))
    if cfg.shift:
        layers.append(keras.layers.RandomTranslation(s * cfg.shift, s * cfg.shift, seed=next(seeds), **fill))
    if cfg.erase_probability:
        # Keras draws each image's chance from U(low, high): equal bounds make it exactly p.
        p = cfg.erase_probability
        layers.append(keras.layers.RandomErasing(factor=(p, p), value_range=(0.0, 1.0), seed=next(seeds)))
    if keras.backend.backend() == "jax":
        # Keras marks rotation, zoom and translation as not jit-compatible (TensorFlow's image ops are
        # not), which makes the whole JAX training step run op by op: `best` on the lent H200 did not
        # finish one epoch in 170 s. On JAX they are jax.numpy and compile.
        for layer in layers[1:]:
            layer.supports_jit = True
    return keras.Sequential(layers, name="augment")


def training_augmentation(dataset: str, cfg: TrainConfig) -> AugmentConfig:
    """The augmentation a training config asks for on `dataset`."""
    return augment_policy(dataset, cfg.augment, cfg.elastic, cfg.elastic_probability, cfg.augment_policy)


class AugmentationGate(keras.layers.Layer):
    """Its augmenter's output while `on` is 1, the input unchanged (and the augmenter skipped) at 0.

    `on` is a variable, so switching it reaches a training step that is already compiled. While on,
    the output is the augmenter's own, so a fit that switches it off late follows the ungated fit
    exactly until then.
    """

    def __init__(self, augmenter: keras.layers.Layer, **kwargs) -> None:
        super().__init__(**kwargs)
        self.augmenter = augmenter
        self.on = self.add_weight(shape=(), initializer="ones", trainable=False, name="on")

    def call(self, images, training=None):
        if keras.backend.backend() != "tensorflow":
            # JAX's cond cannot carry the augmenter's random-state update out of a branch: augment, select.
            return keras.ops.where(self.on > 0.5, self.augmenter(images, training=training), images)
        augmented = lambda: self.augmenter(images, training=training)  # noqa: E731
        return keras.ops.cond(self.on > 0.5, augmented, lambda: images)

    def compute_output_shape(self, input_shape):
        return input_shape


class AugmentationOff(keras.callbacks.Callback):
    """Switches `gate` off at the start of epoch `from_epoch` (1-based) and says so in the log."""

    def __init__(self, gate: AugmentationGate, from_epoch: int, log: Callable[[str], None] = print) -> None:
        super().__init__()
        self.gate, self.from_epoch, self.log = gate, from_epoch, log

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if epoch + 1 == self.from_epoch:
            self.gate.on.assign(0.0)
            clean = "a clean finish on the images as they are"
            self.log(f"augmentation off from epoch {self.from_epoch}: {clean}")


def with_augmentation(
    model: keras.Model, policy: AugmentConfig, seed: int | None = None, gated: bool = False
) -> keras.Model:
    """`model` behind `policy`'s training-only augmenter (weights shared); `model` if it changes nothing.

    With `gated`, the augmenter sits in an `AugmentationGate` (the wrapper's layer called "gate").
    """
    if not policy.changes_images:
        return model
    augmenter: keras.layers.Layer = build_augmenter(policy, seed=seed)
    if gated:
        augmenter = AugmentationGate(augmenter, name="gate")
    inputs = keras.Input(shape=MODEL_INPUT_SHAPE, name="pixels")
    return keras.Model(inputs, model(augmenter(inputs)), name=f"{model.name}_augmented")
