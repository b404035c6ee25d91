"""Augmentation moves pixels while training only, and never reaches the exported serving graph."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from saved_model_ops import augmentation_ops

from client.contract import DEFAULT_MODEL_NAME, INPUT_NAME, OUTPUT_PROBABILITIES, SIGNATURE_NAME
from trainer.augment import (
    AUGMENT_POLICIES,
    AugmentationGate,
    AugmentConfig,
    augment_policy,
    build_augmenter,
    with_augmentation,
)
from trainer.cli import main
from trainer.export import read_model_card
from trainer.model import build_model, to_model_input
from trainer.presets import get_preset
from trainer.restore import restore_model
from trainer.train import train_model


@pytest.fixture(scope="module")
def digits(mnist_data):
    return to_model_input(mnist_data.x_test[:16])


def test_augmenter_moves_pixels_when_training_and_is_identity_otherwise(digits):
    augmenter = build_augmenter(AugmentConfig(strength=1.0), seed=3)
    first = augmenter(digits, training=True).numpy()
    second = augmenter(digits, training=True).numpy()
    assert not np.allclose(first, digits.numpy(), atol=0.05)
    assert not np.allclose(first, second, atol=0.05)  # a fresh draw every batch
    assert first.min() >= 0.0 and first.max() <= 1.0 + 1e-6  # filled with background, not reflections
    np.testing.assert_array_equal(augmenter(digits, training=False).numpy(), digits.numpy())


def test_strength_scales_the_ranges_and_is_checked():
    assert build_augmenter(AugmentConfig(strength=0.5)).layers[0].factor == pytest.approx((-5 / 360, 5 / 360))
    with pytest.raises(ValueError, match="strength"):
        AugmentConfig(strength=3.0)


def test_flip_mirrors_some_images_left_right_and_leaves_the_others(digits):
    flip_only = AugmentConfig(rotation_degrees=0, zoom=0, shift=0, horizontal_flip=True)
    flipper = build_augmenter(flip_only, seed=5)
    images, out = digits.numpy(), flipper(digits, training=True).numpy()
    mirrored = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images, strict=True)]
    unchanged = [np.array_equal(o, i) for o, i in zip(out, images, strict=True)]
    assert all(m or u for m, u in zip(mirrored, unchanged, strict=True))
    assert any(mirrored) and any(unchanged)


def test_erasing_replaces_one_patch_of_some_images_with_noise(digits):
    eraser = build_augmenter(AugmentConfig(rotation_degrees=0, zoom=0, shift=0, erase=0.5), seed=2)
    images = np.repeat(digits.numpy(), 8, axis=0)  # 128 images
    out = eraser(tf.constant(images), training=True).numpy()
    changed = ~np.all(np.isclose(out, images), axis=(1, 2, 3))
    assert 0.3 < changed.mean() < 0.7  # p = 0.5
    for before, after in zip(images[changed], out[changed], strict=True):
        rows, cols = np.nonzero(~np.isclose(after[..., 0], before[..., 0]))
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert box <= 0.33 * 28 * 28 + 28  # one patch of at most a third of the image
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_array_equal(eraser(tf.constant(images), training=False).numpy(), images)


def test_erasing_probability_scales_with_strength_and_is_described():
    assert AugmentConfig(erase=0.5, strength=0.5).erase_probability == 0.25
    assert AugmentConfig(erase=0.8, strength=2.0).erase_probability == 1.0
    assert AugmentConfig(rotation_degrees=0, zoom=0, shift=0, erase=0.5).describe() == "random erasing p=0.5"
    assert not AugmentConfig(rotation_degrees=0, zoom=0, shift=0, erase=0.5, strength=0).changes_images


def test_digits_are_never_mirrored_clothes_are():
    assert not augment_policy("mnist").horizontal_flip
    assert augment_policy("fashion_mnist").horizontal_flip
    assert augment_policy("fashion_mnist", strength=0.5).strength == 0.5


def test_an_augmenter_that_would_change_nothing_is_not_added(monkeypatch):
    model = build_model(get_preset("seed-best").model)
    assert with_augmentation(model, augment_policy("fashion_mnist")) is not model  # a flip alone is one
    monkeypatch.setitem(AUGMENT_POLICIES, "fashion_mnist", AugmentConfig(rotation_degrees=0, zoom=0, shift=0))
    assert with_augmentation(model, augment_policy("fashion_mnist")) is model
    assert AugmentConfig(strength=0.0).describe() == "none"


def test_on_jax_the_augmenter_lets_the_training_step_compile(monkeypatch):
    # Keras marks its random image layers not jit-compatible, and one such layer makes a JAX fit run
    # eagerly: `best` on the lent H200 did not finish an epoch in 170 s that way.
    assert not all(layer.supports_jit for layer in build_augmenter(augment_policy("mnist")).layers)
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    for dataset in ("mnist", "fashion_mnist"):
        augmenter = build_augmenter(augment_policy(dataset))
        assert augmenter.layers and all(layer.supports_jit for layer in augmenter.layers)


def test_wrapper_shares_weights_and_strength_zero_adds_nothing():
    model = build_model(get_preset("seed-best").model)
    assert with_augmentation(model, augment_policy("mnist", 0.0)) is model
    wrapped = with_augmentation(model, augment_policy("mnist", 0.5))
    assert {id(v) for v in model.weights} <= {id(v) for v in wrapped.weights}


def test_gate_gives_the_augmenters_output_while_on_and_the_images_once_off(digits):
    twin = build_augmenter(AugmentConfig(), seed=5)
    gate = AugmentationGate(build_augmenter(AugmentConfig(), seed=5))
    np.testing.assert_array_equal(gate(digits, training=True).numpy(), twin(digits, training=True).numpy())
    gate.on.assign(0.0)
    np.testing.assert_array_equal(gate(digits, training=True).numpy(), digits.numpy())


def test_clean_finish_follows_the_augmented_fit_until_it_switches_off(mnist_data):
    """Same seed, same first epochs to the bit; then the last epoch trains on the images as they are."""
    lines: list[str] = []
    preset = get_preset("best").with_overrides(epochs=3, val_size=300, clean_epochs=0)
    augmented = train_model(preset, mnist_data, limit_train=600, log=lambda line: None)
    clean = train_model(preset.with_overrides(clean_epochs=1), mnist_data, limit_train=600, log=lines.append)
    for key in ("loss", "val_loss"):
        assert augmented.history[key][:2] == clean.history[key][:2]
    # Clean images are easier than augmented ones: the training loss of the last epoch drops.
    assert clean.history["loss"][2] < augmented.history["loss"][2]
    assert "augmentation off from epoch 3: a clean finish on the images as they are" in lines
    with pytest.raises(ValueError, match="clean_epochs 3 leaves none of the 3 epochs augmented"):
        train_model(preset.with_overrides(clean_epochs=3), mnist_data, limit_train=600)
    # Without augmentation there is nothing to switch off: the clean finish is no finish at all.
    plain = preset.with_overrides(augment=0.0, epochs=1, clean_epochs=5)
    plain_lines: list[str] = []
    unswitched = train_model(plain, mnist_data, limit_train=600, log=plain_lines.append)
    assert unswitched.history["loss"] and unswitched.preset.train.clean_epochs == 0  # the card says so
    assert plain_lines[0].endswith(", no augmentation")  # the header, so a log says what it trained on


def test_op_check_sees_augmentation_in_a_graph_that_has_it(tmp_path, digits):
    """Control for the next test: the op scan does find augmentation when a graph applies it."""
    import keras

    augmenter = build_augmenter(AugmentConfig(elastic=34.0), seed=1)
    archive = keras.export.ExportArchive()
    archive.track(augmenter)
    archive.add_endpoint(
        "augment", lambda x: augmenter(x, training=True), input_signature=[tf.TensorSpec([None, 28, 28, 1])]
    )
    archive.write_out(str(tmp_path), verbose=False)
    assert augmentation_ops(tmp_path)


def test_trained_with_augmentation_exported_without_it(tmp_path, mnist_data):
    models_dir = tmp_path / "models"
    argv = [
        "train", "--preset", "fast", "--epochs", "2", "--limit-train", "1000", "--val-size", "500",
        "--augment", "1", "--elastic", "34", "--elastic-probability", "0.5", "--clean-epochs", "1",
        "--models-dir", str(models_dir), "--reports-dir", str(tmp_path / "reports"),
    ]
    assert main(argv) == 0
    version_dir = models_dir / DEFAULT_MODEL_NAME / "1"
    card = read_model_card(version_dir)
    assert card["config"]["train"]["augment"] == 1.0
    assert card["config"]["train"]["elastic"] == 34.0
    assert card["config"]["train"]["elastic_probability"] == 0.5
    assert card["config"]["train"]["clean_epochs"] == 1
    assert card["augmentation"] == (
        "elastic distortion alpha=34 sigma=4 p=0.5, rotation ±10°, zoom ±0.1, shift ±0.1"
    )
    assert augmentation_ops(version_dir) == set()
    # The export holds the network and nothing more: the card's network rebuilt takes all its weights.
    restore_model(version_dir)

    loaded = tf.saved_model.load(str(version_dir))
    images = tf.constant(mnist_data.x_test[:32])
    first = loaded.signatures[SIGNATURE_NAME](**{INPUT_NAME: images})[OUTPUT_PROBABILITIES].numpy()
    second = loaded.signatures[SIGNATURE_NAME](**{INPUT_NAME: images})[OUTPUT_PROBABILITIES].numpy()
    np.testing.assert_array_equal(first, second)  # deterministic: nothing random at serving time


def test_each_random_transform_draws_its_own_numbers():
    """Rotation, zoom and shift vary independently: one seed given to every layer made them one number
    (each rotation came with a zoom and a horizontal shift in proportion to it)."""
    images = np.zeros((512, 28, 28, 1), "float32")
    augmenter = build_augmenter(AugmentConfig(), seed=42)
    draw = lambda layer: layer.get_random_transformation(images, training=True)  # noqa: E731
    rotation, zoom, shift = (draw(layer) for layer in augmenter.layers)
    draws = {"angle": np.ravel(rotation["angle"]), "zoom": np.ravel(zoom["height_zoom"]),
             "up": np.asarray(shift["translations"])[:, 0], "across": np.asarray(shift["translations"])[:, 1]}
    correlations = np.corrcoef(np.stack(list(draws.values())))
    assert np.all(np.abs(correlations[np.triu_indices(4, k=1)]) < 0.2), correlations
    again = draw(build_augmenter(AugmentConfig(), seed=42).layers[0])
    np.testing.assert_array_equal(again["angle"], rotation["angle"])  # still seeded: a rerun draws the same
