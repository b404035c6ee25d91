"""Test-time augmentation inside the served graph: the mean softmax of an image and of its mirror.

Only for data whose classes survive a left-right mirror (a mirrored shoe is a shoe; a mirrored 2 is no
digit): Fashion-MNIST's default, chosen on the validation split (docs/results.md, "Fashion-MNIST: random
erasing and mirror averaging"); `digits-train train --no-mirror-average` turns it off. The averaged
model has the network's weights and nothing else, so it exports, restores and joins ensembles like the
network itself; it costs two forward passes per image.
"""

from __future__ import annotations

import keras

from trainer.data import MIRROR_SYMMETRIC_DATASETS
from trainer.model import MODEL_INPUT_SHAPE
from trainer.presets import ModelConfig, Preset

MIRROR_AVERAGED_BY_DEFAULT = frozenset({"fashion_mnist"})  # where a preset that does not say is averaged


@keras.saving.register_keras_serializable(package="digits")
class MirrorLeftRight(keras.layers.Layer):
    """Images [N,H,W,C] mirrored left-right, in training and serving alike."""

    def call(self, images):
        return keras.ops.flip(images, axis=2)


def mirror_averaged(network: keras.Model) -> keras.Model:
    """A model whose output is the mean of `network`'s softmax on each image and on its mirror."""
    inputs = keras.Input(shape=MODEL_INPUT_SHAPE, name="pixels")
    views = [network(inputs), network(MirrorLeftRight(name="mirror")(inputs))]
    averaged = keras.layers.Average(name="probabilities")(views)
    return keras.Model(inputs, averaged, name=f"{network.name}_mirror_averaged")


def serving_network(cfg: ModelConfig, network: keras.Model) -> keras.Model:
    """What gets scored and exported for a network built from `cfg`: mirror-averaged if it says so."""
    return mirror_averaged(network) if cfg.mirror_average else network


def for_dataset(preset: Preset, dataset: str) -> Preset:
    """`preset` with its serving rule settled for `dataset` (its own, or the dataset's default).

    Raises ValueError for mirror averaging on data whose classes a mirror changes (digits).
    """
    mirror = preset.model.mirror_average
    if mirror and dataset not in MIRROR_SYMMETRIC_DATASETS:
        symmetric = ", ".join(sorted(MIRROR_SYMMETRIC_DATASETS))
        raise ValueError(f"mirror averaging is for {symmetric} only, not {dataset}: a mirrored 2 is no digit")
    if mirror is None:
        return preset.with_model(mirror_average=dataset in MIRROR_AVERAGED_BY_DEFAULT)
    return preset


def describe(cfg: ModelConfig) -> str:
    """The served graph's test-time augmentation, for model cards and logs."""
    return "mean softmax of the image and its left-right mirror" if cfg.mirror_average else "none"
