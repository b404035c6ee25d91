"""Build the Keras network a ModelConfig describes, and the one preprocessing step it expects.

Written in `keras.ops`, so the same network trains on any Keras backend (TensorFlow here and in the
containers; JAX for the GPU check where no TensorFlow is installed: scripts/gpu_check.py).
"""

from __future__ import annotations

import keras
import numpy as np

from client.contract import IMAGE_SIZE, NUM_CLASSES, PIXEL_MAX
from trainer.crop_zoom import CropZoom
from trainer.presets import LAYER_DEFAULTS, ModelConfig, TrainConfig
from trainer.schedules import learning_rate

MODEL_INPUT_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)
# Training steps run per call of the compiled step, so Python dispatches once per this many batches. The
# arithmetic is the same at any value (tested). 1: at 64, `fast` saved 2% of its CPU seconds, under the
# 5% its rule asked for (docs/results.md, "Several training steps per call?").
STEPS_PER_EXECUTION = 1


def to_model_input(images):
    """uint8 pixels [N,28,28] 0..255 -> float32 [N,28,28,1] in [0,1]; used in training and in the export."""
    return keras.ops.expand_dims(keras.ops.cast(images, "float32") / float(PIXEL_MAX), axis=-1)


def model_input_array(images: np.ndarray) -> np.ndarray:
    """`to_model_input` as a NumPy array, for `fit` and `predict` on any backend."""
    return keras.ops.convert_to_numpy(to_model_input(images))


@keras.saving.register_keras_serializable(package="digits")
class ResidualConv(keras.layers.Layer):
    """BatchNormalization, then x + activation(Conv2D(x)): a residual block that keeps its input's shape."""

    def __init__(
        self, filters: int, kernel_size: int, activation: str = "relu", layer_defaults: str = "keras",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.activation = filters, kernel_size, activation
        self.layer_defaults = layer_defaults
        self.norm = batch_norm(layer_defaults)
        self.conv = keras.layers.Conv2D(filters, kernel_size, padding="same", activation=activation)

    def build(self, input_shape) -> None:
        if input_shape[-1] != self.filters:
            channels = input_shape[-1]
            raise ValueError(f"a residual layer keeps its input's {channels} channels, not {self.filters}")
        self.norm.build(input_shape)
        self.conv.build(input_shape)

    def call(self, inputs, training=None):
        normed = self.norm(inputs, training=training)
        return normed + self.conv(normed)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "activation": self.activation, "layer_defaults": self.layer_defaults}


def batch_norm(layer_defaults: str) -> keras.layers.BatchNormalization:
    """A BatchNormalization layer with Keras' or PyTorch's momentum and epsilon (LAYER_DEFAULTS)."""
    _check_layer_defaults(layer_defaults)
    if layer_defaults == "pytorch":
        return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    return keras.layers.BatchNormalization()


def _check_layer_defaults(layer_defaults: str) -> None:
    if layer_defaults not in LAYER_DEFAULTS:
        raise ValueError(f"unknown layer defaults {layer_defaults!r}; known: {', '.join(LAYER_DEFAULTS)}")


def _weighted_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's Conv2D and Dense layers, those inside residual blocks included."""
    layers = [layer.conv if isinstance(layer, ResidualConv) else layer for layer in model.layers]
    return [layer for layer in layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]


def _initialise_like_pytorch(model: keras.Model) -> None:
    """Redraw every kernel and bias uniform in +-1/sqrt(fan_in), as PyTorch's Conv2d and Linear start
    (kaiming_uniform with a = sqrt(5) gives that bound for the kernel; the bias has it by definition)."""
    for layer in _weighted_layers(model):
        bound = float(np.prod(layer.kernel.shape[:-1])) ** -0.5
        for weights in (layer.kernel, layer.bias):
            weights.assign(keras.random.uniform(weights.shape, -bound, bound, dtype=weights.dtype))


@keras.saving.register_keras_serializable(package="digits")
class PerImageStandardization(keras.layers.Layer):
    """Each image shifted to zero mean and scaled to unit deviation (at least 1/sqrt(pixels), so a
    blank image stays finite), as tf.image.per_image_standardization does."""

    def call(self, images):
        pixels = float(np.prod(images.shape[1:]))
        mean = keras.ops.mean(images, axis=(1, 2, 3), keepdims=True)
        std = keras.ops.std(images, axis=(1, 2, 3), keepdims=True)
        return (images - mean) / keras.ops.maximum(std, 1.0 / pixels**0.5)


def _input_steps(cfg: ModelConfig) -> list[keras.layers.Layer]:
    """The fixed steps before the first convolution: centre crop and zoom back, border trim,
    standardisation."""
    steps: list[keras.layers.Layer] = []
    height, width = MODEL_INPUT_SHAPE[:2]
    if cfg.train_crop:
        if not cfg.centre_crop:
            raise ValueError("train_crop needs a centre_crop to serve with")
        steps.append(CropZoom(cfg.centre_crop, cfg.train_crop, cfg.crop_interpolation, name="crop_zoom"))
    elif cfg.centre_crop:
        steps += [keras.layers.CenterCrop(cfg.centre_crop, cfg.centre_crop),
                  keras.layers.Resizing(height, width, interpolation=cfg.crop_interpolation)]
    if cfg.trim_border:
        if not 0 < 2 * cfg.trim_border < min(height, width):
            raise ValueError(f"trim_border {cfg.trim_border} leaves no pixels of a {height}x{width} image")
        steps.append(keras.layers.Cropping2D(cfg.trim_border, name="trim_border"))
    if cfg.standardize:
        steps.append(PerImageStandardization())
    return steps


def build_model(cfg: ModelConfig, name: str = "digits_cnn") -> keras.Model:
    """The Sequential CNN of `cfg` (uncompiled): input float [N,28,28,1], output softmax [N,10]."""
    _check_layer_defaults(cfg.layer_defaults)
    layers: list[keras.layers.Layer] = [keras.Input(shape=MODEL_INPUT_SHAPE, name="pixels")]
    layers += _input_steps(cfg)
    for conv in cfg.conv_layers:
        if conv.residual:
            layers.append(ResidualConv(conv.filters, conv.kernel_size, activation=cfg.activation,
                                       layer_defaults=cfg.layer_defaults))
        else:
            layers.append(
                keras.layers.Conv2D(
                    conv.filters, conv.kernel_size, strides=conv.strides, padding=conv.padding,
                    activation=cfg.activation,
                )
            )
        if conv.pool_size:
            layers.append(keras.layers.MaxPooling2D(conv.pool_size, padding=conv.pool_padding))
        if conv.batch_norm:
            layers.append(batch_norm(cfg.layer_defaults))
        if conv.dropout:
            layers.append(keras.layers.Dropout(conv.dropout))
    layers.append(keras.layers.GlobalAveragePooling2D() if cfg.global_pool else keras.layers.Flatten())
    if cfg.dropout:
        layers.append(keras.layers.Dropout(cfg.dropout))
    for units in cfg.dense_units:
        layers.append(keras.layers.Dense(units, activation=cfg.activation))
        if cfg.dense_batch_norm:
            layers.append(batch_norm(cfg.layer_defaults))
    # float32 under any dtype policy: a bfloat16 softmax would round the probabilities the loss sees.
    output = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities", dtype="float32")
    layers.append(output)
    model = keras.Sequential(layers, name=name)
    if cfg.layer_defaults == "pytorch":
        _initialise_like_pytorch(model)
    return model


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
    options = {"beta_2": cfg.beta_2} if cfg.optimizer in ("adam", "adamw") else {}
    if cfg.optimizer == "adamw":
        options["weight_decay"] = cfg.weight_decay
    return optimizers[cfg.optimizer](learning_rate=learning_rate(cfg, steps_per_epoch), **options)


def sparse_crossentropy(label_smoothing: float = 0.0):
    """Cross-entropy on integer labels; with smoothing, against (1-s)*one_hot + s/10."""
    if not label_smoothing:
        return "sparse_categorical_crossentropy"
    smoothed = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)

    def loss(y_true, y_pred):
        labels = keras.ops.cast(keras.ops.reshape(y_true, [-1]), "int32")  # [N] or [N,1] labels -> [N]
        return smoothed(keras.ops.one_hot(labels, NUM_CLASSES), y_pred)

    return loss


def steps_per_execution(cfg: TrainConfig) -> int:
    """STEPS_PER_EXECUTION, or 1 with weight averaging, whose callback updates the average every batch."""
    return 1 if cfg.weight_average else STEPS_PER_EXECUTION


def compile_model(model: keras.Model, cfg: TrainConfig, steps_per_epoch: int | None = None) -> keras.Model:
    """Compile with sparse categorical cross-entropy (integer labels; the tutorial's loss on one-hot)."""
    model.compile(
        optimizer=make_optimizer(cfg, steps_per_epoch),
        loss=sparse_crossentropy(cfg.label_smoothing),
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution(cfg),
    )
    return model
