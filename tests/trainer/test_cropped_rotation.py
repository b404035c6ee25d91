"""Cropped rotation turns each training image and zooms in until the turned frame fills it again."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from trainer.augment import augment_policy, build_augmenter
from trainer.cropped_rotation import CroppedRotation, cropped_rotation_transforms
from trainer.model import to_model_input


def _transformed(images: np.ndarray, degrees: float) -> np.ndarray:
    angles = np.full(len(images), math.radians(degrees), np.float32)
    transforms = cropped_rotation_transforms(angles, images.shape[1], images.shape[2])
    return np.asarray(keras.ops.image.affine_transform(images, transforms, fill_mode="constant"))


def test_a_blank_page_stays_filled_where_a_plain_rotation_leaves_empty_corners():
    page = np.ones((32, 28, 28, 1), np.float32)
    cropped = np.asarray(CroppedRotation(10.0, seed=1)(page, training=True))
    assert cropped.min() > 0.999  # every output pixel samples inside the frame
    plain = keras.layers.RandomRotation(10.0 / 360.0, fill_mode="constant", fill_value=0.0, seed=1)
    assert np.asarray(plain(page, training=True)).min() < 0.5  # the corners it turns out of the frame


@pytest.mark.parametrize("degrees", [10.0, -10.0, 4.0])
def test_a_rotation_by_theta_zooms_by_cos_plus_sin(degrees):
    square = np.zeros((1, 28, 28, 1), np.float32)
    square[0, 10:18, 10:18, 0] = 1.0
    area = _transformed(square, degrees).sum() / square.sum()
    theta = math.radians(abs(degrees))
    assert area == pytest.approx((math.cos(theta) + math.sin(theta)) ** 2, rel=0.01)


def test_no_angle_is_the_identity():
    digits = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(_transformed(digits, 0.0), digits, atol=1e-6)


def test_training_turns_each_digit_its_own_way_and_inference_leaves_them(mnist_data):
    digits = np.asarray(to_model_input(np.repeat(mnist_data.x_test[:1], 16, axis=0)))
    layer = CroppedRotation(10.0, seed=3)
    turned = np.asarray(layer(digits, training=True))
    assert not np.allclose(turned, digits, atol=0.05)
    assert len({round(float(np.abs(image - digits[0]).sum()), 3) for image in turned}) > 8  # own angles
    assert turned.min() >= 0.0 and turned.max() <= 1.0 + 1e-6
    np.testing.assert_array_equal(np.asarray(layer(digits, training=False)), digits)


def test_bad_angles_are_refused():
    for degrees in (-1.0, 45.0):
        with pytest.raises(ValueError, match="max_degrees"):
            CroppedRotation(degrees)


def test_the_named_policy_crops_its_rotation_and_its_strength_scales_the_angle():
    policy = augment_policy("mnist", name="shift-rotate-crop-grid")
    assert "cropped rotation ±10°" in policy.describe()
    rotations = [layer for layer in build_augmenter(policy).layers if isinstance(layer, CroppedRotation)]
    assert [layer.max_degrees for layer in rotations] == [10.0]
    half = build_augmenter(augment_policy("mnist", 0.5, name="shift-rotate-crop-grid")).layers
    assert [layer.max_degrees for layer in half if isinstance(layer, CroppedRotation)] == [5.0]
    plain = build_augmenter(augment_policy("mnist", name="shift-rotate-grid")).layers
    assert not any(isinstance(layer, CroppedRotation) for layer in plain)
    assert any(isinstance(layer, keras.layers.RandomRotation) for layer in plain)
