"""Grid distortion: a random, piecewise-smooth warp of each image, as a training-only Keras layer.

The image is divided into `cells` x `cells` cells. Each inner point of that grid moves by a whole
number of pixels drawn from [-magnitude, magnitude] along each axis, the frame stays where it is, and
the movement between the points is interpolated bilinearly; the image is resampled bilinearly at the
moved positions (0 outside the frame). This is Augmentor's `random_distortion`, which T. Doucet's
MNIST recipe applies with 4 x 4 cells and 1 pixel. Written in `keras.ops`, so it compiles on any
Keras backend (TensorFlow here, JAX on the lent GPU).
"""

from __future__ import annotations

import keras
import numpy as np


def grid_weights(size: int, cells: int) -> np.ndarray:
    """[size, cells+1]: each pixel's bilinear weights on the grid points spread evenly over 0..size-1."""
    points = np.linspace(0.0, size - 1.0, cells + 1)
    spacing = (size - 1.0) / cells
    pixels = np.arange(size, dtype=np.float64)[:, None]
    return np.maximum(0.0, 1.0 - np.abs(pixels - points[None, :]) / spacing).astype(np.float32)


class GridDistortion(keras.layers.Layer):
    """Random grid distortion of float [N,H,W,1] images in training; the identity otherwise."""

    def __init__(self, magnitude: int = 1, cells: int = 4, scale: float = 1.0, seed: int | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if magnitude < 0 or cells < 2 or scale < 0:
            raise ValueError(f"grid distortion needs magnitude >= 0, cells >= 2, scale >= 0; got "
                             f"{magnitude}, {cells}, {scale}")
        self.magnitude, self.cells, self.scale, self.seed = int(magnitude), int(cells), float(scale), seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        inner = np.zeros((cells + 1, cells + 1), np.float32)
        inner[1:-1, 1:-1] = 1.0  # the frame's points stay put
        self._inner = inner

    def displacement(self, count, height: int, width: int):
        """[count, 2, H, W]: a random (row, column) displacement field per image, in pixels."""
        size = (count, 2, self.cells + 1, self.cells + 1)
        steps = keras.random.randint(size, -self.magnitude, self.magnitude + 1, seed=self.seed_generator)
        points = keras.ops.cast(steps, "float32") * self._inner * self.scale
        rows, cols = grid_weights(height, self.cells), grid_weights(width, self.cells)
        return keras.ops.einsum("hi,nkij,wj->nkhw", rows, points, cols)

    def call(self, images, training=None):
        if not training or not self.magnitude or not self.scale:
            return images
        height, width = images.shape[1], images.shape[2]
        count = keras.ops.shape(images)[0]
        field = self.displacement(count, height, width)
        rows = np.arange(height, dtype=np.float32)[:, None] + field[:, 0]
        cols = np.arange(width, dtype=np.float32)[None, :] + field[:, 1]
        index = keras.ops.cast(keras.ops.reshape(keras.ops.arange(count), (-1, 1, 1)), "float32")
        batch = keras.ops.broadcast_to(index, keras.ops.shape(rows))  # integer: no mixing across images
        warped = keras.ops.image.map_coordinates(
            images[..., 0], keras.ops.stack([batch, rows, cols]), order=1, fill_mode="constant",
            fill_value=0.0,
        )
        return keras.ops.expand_dims(warped, -1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "magnitude": self.magnitude, "cells": self.cells, "scale": self.scale,
                "seed": self.seed}
