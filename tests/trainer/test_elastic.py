"""Elastic distortion: a fresh smooth field per image while training, the identity otherwise."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from trainer.augment import AugmentConfig, augment_policy, build_augmenter
from trainer.elastic import ElasticDistortion, bilinear_sample, gaussian_kernel
from trainer.model import to_model_input


@pytest.fixture(scope="module")
def digits(mnist_data):
    return to_model_input(mnist_data.x_test[:64])


def test_bilinear_sample_shifts_whole_pixels_interpolates_halves_and_fills_outside_with_zero():
    image = tf.constant(np.arange(1, 17, dtype=np.float32).reshape(1, 4, 4))
    rows, cols = tf.meshgrid(tf.range(4.0), tf.range(4.0), indexing="ij")
    left = bilinear_sample(image, rows[None], cols[None] + 1.0).numpy()[0]
    np.testing.assert_allclose(left[:, :3], image.numpy()[0, :, 1:])  # content moves one pixel left
    np.testing.assert_allclose(left[:, 3], 0.0)  # and the border comes in as background
    half = bilinear_sample(image, rows[None] + 0.5, cols[None]).numpy()[0]
    np.testing.assert_allclose(half[:3], (image.numpy()[0, :3] + image.numpy()[0, 1:]) / 2)
    far = bilinear_sample(image, rows[None] - 50.0, cols[None] + 50.0).numpy()
    np.testing.assert_array_equal(far, 0.0)


def test_gaussian_kernel_is_normalised_and_three_widths_wide():
    kernel = gaussian_kernel(4.0)
    assert kernel.shape == (25,) and kernel.sum() == pytest.approx(1.0)
    assert kernel.argmax() == 12 and kernel[0] < kernel[12] / 50


def test_training_moves_each_image_by_its_own_smooth_field_of_simards_size(digits):
    layer = ElasticDistortion(alpha=34.0, sigma=4.0, seed=7)
    field = layer.displacement(256, 28, 28).numpy()
    rms = np.sqrt((field**2).mean())
    assert 0.8 < rms < 2.0  # Simard's alpha 34, sigma 4: a pixel moves about 1.3 px
    rows, cols = field[..., 0].ravel(), field[..., 1].ravel()
    assert abs(np.corrcoef(rows, cols)[0, 1]) < 0.2  # rows and columns move independently
    assert np.abs(np.diff(field, axis=2)).mean() < 0.2 * np.abs(field).mean()  # smooth: neighbours agree
    same = tf.repeat(digits[:1], 8, axis=0)
    out = layer(same, training=True).numpy()
    assert not np.allclose(out[0], out[1], atol=0.05)  # one field per image, not per batch
    assert not np.allclose(out[0], same.numpy()[0], atol=0.05)
    moved = layer(digits, training=True).numpy()
    assert moved.min() >= 0.0 and moved.max() <= 1.0 + 1e-6
    assert moved.sum() == pytest.approx(digits.numpy().sum(), rel=0.1)  # strokes bend, ink stays


def test_probability_distorts_that_share_of_the_images_and_leaves_the_rest_crisp(digits):
    layer = ElasticDistortion(alpha=34.0, probability=0.5, seed=4)
    images = tf.repeat(digits, 4, axis=0)  # 256 images
    out = layer(images, training=True).numpy()
    unchanged = np.all(out == images.numpy(), axis=(1, 2, 3))
    assert 0.35 < unchanged.mean() < 0.65
    with pytest.raises(ValueError, match="probability"):
        ElasticDistortion(probability=1.5)


def test_not_training_and_alpha_zero_are_the_identity(digits):
    layer = ElasticDistortion(alpha=34.0, seed=1)
    np.testing.assert_array_equal(layer(digits, training=False).numpy(), digits.numpy())
    np.testing.assert_array_equal(ElasticDistortion(alpha=0.0)(digits, training=True).numpy(), digits.numpy())
    with pytest.raises(ValueError, match="alpha"):
        ElasticDistortion(alpha=-1.0)


def test_policy_adds_elastic_distortion_first_scaled_by_strength():
    policy = augment_policy("mnist", strength=0.5, elastic=34.0)
    assert policy.describe() == "elastic distortion alpha=17 sigma=4, rotation ±5°, zoom ±0.05, shift ±0.05"
    augmenter = build_augmenter(policy, seed=1)
    assert isinstance(augmenter.layers[0], ElasticDistortion) and augmenter.layers[0].alpha == 17.0
    assert not augment_policy("mnist", strength=0.0, elastic=34.0).changes_images
    assert not AugmentConfig().elastic  # digits' default policy stays Deotte's until chosen
