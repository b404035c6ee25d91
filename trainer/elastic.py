"""Elastic distortion (Simard, Steinkraus and Platt, ICDAR 2003) as a training-only Keras layer.

Every image gets its own random displacement field: uniform noise in [-1, 1] per pixel and axis,
smoothed by a Gaussian of width `sigma` pixels and scaled by `alpha`; the image is then resampled
bilinearly at the displaced positions, with 0 (background) outside the frame. Simard's values for
28x28 digits are sigma = 4, alpha = 34: each pixel moves about 1.3 px, smoothly, like a hand that
wobbles. Keras' own RandomElasticTransform draws one field for the whole batch, the same along x
and y, so this layer draws its own.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from trainer.augment import SIMARD_SIGMA

SIMARD_ALPHA = 34.0


def gaussian_kernel(sigma: float) -> np.ndarray:
    """A normalised 1-D Gaussian of width `sigma`, cut at three widths each side."""
    radius = max(1, math.ceil(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    return (kernel / kernel.sum()).astype(np.float32)


def bilinear_sample(images: tf.Tensor, rows: tf.Tensor, cols: tf.Tensor) -> tf.Tensor:
    """images [N,H,W] sampled at float positions rows, cols [N,H,W]; 0 outside the frame."""
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    padded = tf.pad(images, [[0, 0], [1, 1], [1, 1]])  # a zero border catches every outside position
    rows = tf.clip_by_value(rows + 1.0, 0.0, tf.cast(height + 1, tf.float32))
    cols = tf.clip_by_value(cols + 1.0, 0.0, tf.cast(width + 1, tf.float32))
    row0, col0 = tf.floor(rows), tf.floor(cols)
    row_frac, col_frac = rows - row0, cols - col0
    row0, col0 = tf.cast(row0, tf.int32), tf.cast(col0, tf.int32)
    row1, col1 = tf.minimum(row0 + 1, height + 1), tf.minimum(col0 + 1, width + 1)
    flat = tf.reshape(padded, [tf.shape(images)[0], -1])
    stride = width + 2

    def at(r: tf.Tensor, c: tf.Tensor) -> tf.Tensor:
        n = tf.shape(r)[0]
        return tf.reshape(tf.gather(flat, tf.reshape(r * stride + c, [n, -1]), batch_dims=1), tf.shape(r))

    top = at(row0, col0) * (1 - col_frac) + at(row0, col1) * col_frac
    bottom = at(row1, col0) * (1 - col_frac) + at(row1, col1) * col_frac
    return top * (1 - row_frac) + bottom * row_frac


class ElasticDistortion(keras.layers.Layer):
    """Random elastic distortion of a `probability` share of float [N,H,W,1] images in training."""

    def __init__(self, alpha: float = SIMARD_ALPHA, sigma: float = SIMARD_SIGMA, probability: float = 1.0,
                 seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if alpha < 0 or sigma <= 0 or not 0 <= probability <= 1:
            raise ValueError(
                f"elastic distortion needs alpha >= 0, sigma > 0 and a probability in [0, 1], "
                f"got {alpha}, {sigma}, {probability}"
            )
        self.alpha, self.sigma, self.probability = float(alpha), float(sigma), float(probability)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        kernel = gaussian_kernel(self.sigma)
        # Depthwise filters smoothing both displacement channels, along rows then along columns.
        self._along_rows = np.tile(kernel.reshape(-1, 1, 1, 1), (1, 1, 2, 1))
        self._along_cols = np.tile(kernel.reshape(1, -1, 1, 1), (1, 1, 2, 1))

    def displacement(self, batch: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
        """A smooth random field [N,H,W,2] of (row, column) displacements in pixels."""
        noise = keras.random.uniform((batch, height, width, 2), -1.0, 1.0, seed=self.seed_generator)
        smooth = tf.nn.depthwise_conv2d(noise, self._along_rows, [1, 1, 1, 1], "SAME")
        smooth = tf.nn.depthwise_conv2d(smooth, self._along_cols, [1, 1, 1, 1], "SAME")
        return self.alpha * smooth

    def call(self, images: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        if not training or not self.alpha or not self.probability:
            return images
        shape = tf.shape(images)
        batch, height, width = shape[0], shape[1], shape[2]
        field = self.displacement(batch, height, width)
        grid_rows, grid_cols = tf.meshgrid(
            tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32), indexing="ij"
        )
        moved = bilinear_sample(images[..., 0], grid_rows + field[..., 0], grid_cols + field[..., 1])
        if self.probability < 1:  # the others stay crisp, as the images served will be
            chosen = keras.random.uniform((batch, 1, 1), seed=self.seed_generator) < self.probability
            moved = tf.where(chosen, moved, images[..., 0])
        return moved[..., tf.newaxis]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        own = {"alpha": self.alpha, "sigma": self.sigma, "probability": self.probability, "seed": self.seed}
        return {**super().get_config(), **own}
