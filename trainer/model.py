"""Build the Keras network a ModelConfig describes, and the one preprocessing step it expects.

Written in `keras.ops`, so the same network trains on any Keras backend (TensorFlow here and in the
containers; JAX for the GPU check where no TensorFlow is installed: scripts/gpu_check.py).
"""

from __future__ import annotations

import keras
import numpy as np

from client.contract import IMAGE_SIZE, NUM_CLASSES, PIXEL_MAX
from trainer.presets import ModelConfig, TrainConfig
from trainer.schedules import learning_rate

MODEL_INPUT_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)


def to_model_input(images):
    """uint8 pixels [N,28,28] 0..255 -> float32 [N,28,28,1] in [0,1]; used in training and in the export."""
    return keras.ops.expand_dims(keras.ops.cast(images, "float32") / float(PIXEL_MAX), axis=-1)


def model_input_array(images: np.ndarray) -> np.ndarray:
    """`to_model_input` as a NumPy array, for `fit` and `predict` on any backend."""
    return keras.ops.convert_to_numpy(to_model_input(images))


def build_model(cfg: ModelConfig, name: str = "digits_cnn") -> keras.Model:
    """The Sequential CNN of `cfg` (uncompiled): input float [N,28,28,1], output softmax [N,10]."""
    layers: list[keras.layers.Layer] = [keras.Input(shape=MODEL_INPUT_SHAPE, name="pixels")]
    for conv in cfg.conv_layers:
        layers.append(
            keras.layers.Conv2D(
                conv.filters, conv.kernel_size, strides=conv.strides, padding=conv.padding,
                activation=cfg.activation,
            )
        )
        if conv.pool_size:
            layers.append(keras.layers.MaxPooling2D(conv.pool_size))
        if conv.batch_norm:
            layers.append(keras.layers.BatchNormalization())
        if conv.dropout:
            layers.append(keras.layers.Dropout(conv.dropout))
    layers.append(keras.layers.Flatten())
    if cfg.dropout:
        layers.append(keras.layers.Dropout(cfg.dropout))
    for units in cfg.dense_units:
        layers.append(keras.layers.Dense(units, activation=cfg.activation))
        if cfg.dense_batch_norm:
            layers.append(keras.layers.BatchNormalization())
    layers.append(keras.layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities"))
    return keras.Sequential(layers, name=name)


def make_optimizer(cfg: TrainConfig, steps_per_epoch: int | None = None) -> keras.optimizers.Optimizer:
    """The optimiser named in `cfg` with its learning rate or schedule (trainer/schedules.py)."""
    optimizers = {
        "rmsprop": keras.optimizers.RMSprop,
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": keras.optimizers.SGD,
    }
    if cfg.optimizer not in optimizers:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; known: {', '.join(optimizers)}")
    rate = learning_rate(cfg, steps_per_epoch)
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=rate, weight_decay=cfg.weight_decay)
    return optimizers[cfg.optimizer](learning_rate=rate)


def sparse_crossentropy(label_smoothing: float = 0.0):
    """Cross-entropy on integer labels; with smoothing, against (1-s)*one_hot + s/10."""
    if not label_smoothing:
        return "sparse_categorical_crossentropy"
    smoothed = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)

    def loss(y_true, y_pred):
        labels = keras.ops.cast(keras.ops.reshape(y_true, [-1]), "int32")  # [N] or [N,1] labels -> [N]
        return smoothed(keras.ops.one_hot(labels, NUM_CLASSES), y_pred)

    return loss


def compile_model(model: keras.Model, cfg: TrainConfig, steps_per_epoch: int | None = None) -> keras.Model:
    """Compile with sparse categorical cross-entropy (integer labels; the tutorial's loss on one-hot)."""
    model.compile(
        optimizer=make_optimizer(cfg, steps_per_epoch),
        loss=sparse_crossentropy(cfg.label_smoothing),
        metrics=["accuracy"],
    )
    return model
