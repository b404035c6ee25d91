"""Grid distortion moves each image's inner grid points by whole pixels, smoothly, in training only."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.augment import augment_policy, build_augmenter
from trainer.grid_distortion import GridDistortion, grid_weights
from trainer.model import to_model_input


@pytest.fixture(scope="module")
def digits(mnist_data):
    return to_model_input(mnist_data.x_test[:32])


def test_grid_weights_interpolate_between_evenly_spread_points():
    weights = grid_weights(28, 4)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)  # every pixel: a convex combination
    assert weights[0, 0] == 1.0 and weights[27, 4] == 1.0  # the frame's points sit on the first/last pixel
    positions = weights @ np.linspace(0.0, 27.0, 5)
    np.testing.assert_allclose(positions, np.arange(28), atol=1e-5)  # linear in between


def test_the_field_is_zero_on_the_frame_bounded_and_different_per_image():
    layer = GridDistortion(magnitude=1, cells=4, seed=7)
    field = np.asarray(layer.displacement(64, 28, 28))
    assert field.shape == (64, 2, 28, 28)
    for edge in (field[..., 0, :], field[..., -1, :], field[..., :, 0], field[..., :, -1]):
        np.testing.assert_array_equal(edge, 0.0)
    assert np.abs(field).max() <= 1.0 + 1e-6
    inner = field[:, :, 1:-1, 1:-1]
    assert np.abs(inner).max() > 0.5  # points do move
    assert not np.allclose(field[0], field[1])  # each image its own draw


def test_training_warps_the_digits_by_about_a_pixel_and_inference_leaves_them(digits):
    layer = GridDistortion(magnitude=1, cells=4, seed=3)
    warped = np.asarray(layer(digits, training=True))
    original = np.asarray(digits)
    assert warped.shape == original.shape
    assert not np.allclose(warped, original, atol=0.05)
    assert warped.min() >= 0.0 and warped.max() <= 1.0 + 1e-6
    ink = original.sum(axis=(1, 2, 3))
    np.testing.assert_allclose(warped.sum(axis=(1, 2, 3)), ink, rtol=0.2)  # moved, not erased or smeared out
    np.testing.assert_array_equal(np.asarray(layer(digits, training=False)), original)


def test_a_ramp_moves_by_at_most_the_magnitude():
    ramp = np.tile(np.arange(28, dtype=np.float32)[:, None], (1, 28))[None, ..., None].repeat(8, axis=0)
    moved = np.asarray(GridDistortion(magnitude=1, cells=4, seed=5)(ramp, training=True))
    change = np.abs(moved - ramp)[:, 1:-1, 1:-1]  # sampling rows + displacement: a change of the row index
    assert change.max() <= 1.0 + 1e-4 and change.max() > 0.3


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="cells"):
        GridDistortion(magnitude=1, cells=1)
    with pytest.raises(ValueError, match="magnitude"):
        GridDistortion(magnitude=-1)


def test_the_named_policy_adds_grid_distortion_and_its_strength_scales_it():
    policy = augment_policy("mnist", name="shift-rotate-grid")
    assert "grid distortion ±1 px (4x4 cells)" in policy.describe()
    assert "zoom" not in policy.describe()
    layers = build_augmenter(policy).layers
    assert isinstance(layers[0], GridDistortion) and layers[0].scale == 1.0
    assert build_augmenter(augment_policy("mnist", 0.5, name="shift-rotate-grid")).layers[0].scale == 0.5
    digits_default = build_augmenter(augment_policy("mnist")).layers
    assert not any(isinstance(layer, GridDistortion) for layer in digits_default)
    with pytest.raises(ValueError, match="shift-rotate-grid"):
        augment_policy("mnist", name="nope")
