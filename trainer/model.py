"""Build the Keras network a ModelConfig describes, and the one preprocessing step it expects."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from client.contract import IMAGE_SIZE, NUM_CLASSES, PIXEL_MAX
from trainer.presets import ModelConfig, TrainConfig

MODEL_INPUT_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)


def to_model_input(images: np.ndarray | tf.Tensor) -> tf.Tensor:
    """uint8 pixels [N,28,28] 0..255 -> float32 [N,28,28,1] in [0,1]; used in training and in the export."""
    return tf.expand_dims(tf.cast(images, tf.float32) / float(PIXEL_MAX), axis=-1)


def build_model(cfg: ModelConfig, name: str = "digits_cnn") -> keras.Model:
    """The Sequential CNN of `cfg` (uncompiled): input float [N,28,28,1], output softmax [N,10]."""
    layers: list[keras.layers.Layer] = [keras.Input(shape=MODEL_INPUT_SHAPE, name="pixels")]
    for conv in cfg.conv_layers:
        layers.append(keras.layers.Conv2D(conv.filters, conv.kernel_size, activation=cfg.activation))
        if conv.pool_size:
            layers.append(keras.layers.MaxPooling2D(conv.pool_size))
    layers.append(keras.layers.Flatten())
    if cfg.dropout:
        layers.append(keras.layers.Dropout(cfg.dropout))
    for units in cfg.dense_units:
        layers.append(keras.layers.Dense(units, activation=cfg.activation))
    layers.append(keras.layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities"))
    return keras.Sequential(layers, name=name)


def make_optimizer(cfg: TrainConfig) -> keras.optimizers.Optimizer:
    """The optimiser named in `cfg` with its learning rate."""
    optimizers = {
        "rmsprop": keras.optimizers.RMSprop,
        "adam": keras.optimizers.Adam,
        "sgd": keras.optimizers.SGD,
    }
    if cfg.optimizer not in optimizers:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; known: {', '.join(optimizers)}")
    return optimizers[cfg.optimizer](learning_rate=cfg.learning_rate)


def compile_model(model: keras.Model, cfg: TrainConfig) -> keras.Model:
    """Compile with sparse categorical cross-entropy (integer labels; the tutorial's loss on one-hot)."""
    model.compile(optimizer=make_optimizer(cfg), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
