"""Crop-and-zoom with Augmentor's whole-pixel windows: a random window in training, the centre in serving.

T. Doucet's MNIST recipe crops each training digit to a 25x25 window at a random whole-pixel offset
(Augmentor's `crop_by_size(centre=False)`: offsets 0 to 3 each way, no interpolation) and each test
digit to its centre (`centre=True`: the box 1.5..26.5, which Pillow's `Image.crop` rounds to 2..26, a
24x24 window), then resizes either to 28x28 bicubically. So his test digits are zoomed by 28/24, his
training digits by 28/25 before his rotation zooms them further. Like Dropout, the layer is random only
while training (a clean finish, `--clean-epochs`, leaves it on, as it leaves Dropout); the exported graph
holds the fixed centre crop alone. `keras.ops`, so it runs on JAX too.
"""

from __future__ import annotations

import keras


class CropZoom(keras.layers.Layer):
    """Resize a window of [N,H,W,C] images back to HxW: the centre `size` x `size` pixels, or in training a
    `train_size` x `train_size` window at a random whole-pixel offset per image (0: the centre then too)."""

    def __init__(
        self, size: int, train_size: int = 0, interpolation: str = "bilinear", seed: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if size <= 0 or train_size < 0:
            raise ValueError(f"a crop needs size > 0 and train_size >= 0, got {size} and {train_size}")
        self.size, self.train_size, self.interpolation, self.seed = size, train_size, interpolation, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape) -> None:
        height, width = input_shape[1:3]
        if max(self.size, self.train_size) > min(height, width):
            crop = f"a {self.size}/{self.train_size}-pixel crop"
            raise ValueError(f"{crop} does not fit {height}x{width} images")
        super().build(input_shape)

    def call(self, images, training=None):
        height, width = images.shape[1:3]
        if training and self.train_size:
            window = self._random_windows(images)
        else:
            top, left = (height - self.size) // 2, (width - self.size) // 2  # keras.layers.CenterCrop's
            window = images[:, top:top + self.size, left:left + self.size, :]
        return keras.ops.image.resize(window, (height, width), interpolation=self.interpolation)

    def _random_windows(self, images):
        """Each image's `train_size` window at offsets drawn uniformly from 0..H-train_size (and W)."""
        count, _, width, channels = keras.ops.shape(images)
        span = self.train_size
        top = keras.random.randint((count, 1), 0, images.shape[1] - span + 1, seed=self.seed_generator)
        left = keras.random.randint((count, 1), 0, images.shape[2] - span + 1, seed=self.seed_generator)
        steps = keras.ops.arange(span, dtype=top.dtype)[None, :]
        rows, cols = top + steps, left + steps  # [N, span] each
        rows = keras.ops.broadcast_to(rows[:, :, None, None], (count, span, width, channels))
        picked = keras.ops.take_along_axis(images, rows, axis=1)
        cols = keras.ops.broadcast_to(cols[:, None, :, None], (count, span, span, channels))
        return keras.ops.take_along_axis(picked, cols, axis=2)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "size": self.size, "train_size": self.train_size,
                "interpolation": self.interpolation, "seed": self.seed}
