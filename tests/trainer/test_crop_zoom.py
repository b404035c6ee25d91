"""Augmentor's crops: whole-pixel windows while training, the centre (as Pillow rounds it) when serving."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from scripts.crop_probe import main as probe
from trainer.cli import main
from trainer.crop_zoom import CropZoom
from trainer.data import Dataset
from trainer.export import read_model_card
from trainer.model import build_model
from trainer.presets import AUGMENTOR_CROPS, ConvLayer, ModelConfig, get_preset
from trainer.train import predict_classes, train_model


def _resized(images: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    window = images[:, top:top + size, left:left + size, :]
    return np.asarray(tf.image.resize(window, (28, 28), method="bicubic"))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((64, 28, 28, 1), dtype=np.float32)


def test_serving_zooms_into_the_centre_24_pixels_pillow_crops_from_augmentors_box(images):
    """Augmentor's centre box for 25 of 28 pixels is 1.5..26.5; Pillow rounds it to 2..26."""
    layer = CropZoom(24, 25, "bicubic")
    served = np.asarray(layer(images, training=False))
    np.testing.assert_array_equal(served, _resized(images, 2, 2, 24))
    np.testing.assert_array_equal(served, np.asarray(layer(images)))  # `training` unset: served
    digit = (images[0, :, :, 0] * 255).astype(np.uint8)
    pillows = np.asarray(Image.fromarray(digit).crop((1.5, 1.5, 26.5, 26.5)))  # Augmentor's crop_by_size box
    np.testing.assert_array_equal(pillows, digit[2:26, 2:26])
    framed = np.zeros((1, 28, 28, 1), np.float32)
    framed[0, 1, :] = framed[0, :, 1] = 1.0  # ink on row and column 1: outside the served window
    assert not np.asarray(layer(framed, training=False)).any()


def test_training_takes_a_25_pixel_window_at_a_random_whole_pixel_offset(images):
    trained = np.asarray(CropZoom(24, 25, "bicubic", seed=3)(images, training=True))
    windows = {(top, left): _resized(images, top, left, 25) for top in range(4) for left in range(4)}
    offsets = []
    for index in range(len(images)):
        match = [at for at, view in windows.items() if np.allclose(view[index], trained[index], atol=1e-5)]
        assert len(match) == 1, f"image {index}: not one of the 16 whole-pixel windows"
        offsets.append(match[0])
    assert len(set(offsets)) >= 10  # offsets drawn per image, over all of 0..3 each way
    assert {top for top, _ in offsets} == {left for _, left in offsets} == {0, 1, 2, 3}


def test_a_network_with_augmentor_crops_serves_deterministically_and_needs_a_centre_crop(images):
    cfg = ModelConfig((ConvLayer(4, 3),), (8,), **AUGMENTOR_CROPS)
    model = build_model(cfg)
    assert model.get_layer("crop_zoom").train_size == 25
    np.testing.assert_array_equal(np.asarray(model(images)), np.asarray(model(images)))
    with pytest.raises(ValueError, match="train_crop needs a centre_crop"):
        build_model(ModelConfig((ConvLayer(4, 3),), (8,), train_crop=25))
    with pytest.raises(ValueError, match="does not fit"):
        build_model(ModelConfig((ConvLayer(4, 3),), (8,), centre_crop=24, train_crop=30))


def test_best_with_augmentor_crops_keeps_its_own_augmentation_and_says_so(mnist_data):
    """`--augmentor-crops` on a preset without a crop (best): joins best's rotation, zoom and shift."""
    small = Dataset("mnist", mnist_data.x_train[:1200], mnist_data.y_train[:1200], mnist_data.x_test[:500],
                    mnist_data.y_test[:500])
    preset = get_preset("best").with_model(**AUGMENTOR_CROPS).with_overrides(
        epochs=2, clean_epochs=1, batch_size=100, val_size=200, seed=3)
    lines = []
    result = train_model(preset, small, log=lines.append)
    header = lines[0]
    assert "augmentation rotation" in header and "(off for the last 1)" in header
    assert header.endswith(", 25x25 crops at random in training, the centre 24x24 zoomed to 28x28 served")
    assert result.model.get_layer("crop_zoom").size == 24
    assert np.array_equal(predict_classes(result.model, small.x_test), result.test_predictions)


def test_crop_probe_rescores_the_served_crop_as_trained_and_other_crops(tmp_path, capsys):
    """scripts/crop_probe.py: at the crop the export serves, exactly the card's scores; other crops differ."""
    common = ["--models-dir", str(tmp_path / "models"), "--reports-dir", str(tmp_path / "reports")]
    tiny = ["--preset", "seed-best", "--epochs", "1", "--limit-train", "800", "--val-size", "300"]
    assert main(["train", *tiny, "--seed", "4", "--augmentor-crops", *common]) == 0
    version = tmp_path / "models" / "mnist" / "1"
    metrics = read_model_card(version)["metrics"]
    capsys.readouterr()
    assert probe([str(version), "--crops", "24", "28"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    served, uncropped = ([int(value) for value in row] for row in rows)
    assert served == [24, round((1 - metrics["val_accuracy"]) * 300), metrics["test_errors"]]
    assert uncropped[0] == 28 and uncropped[1:] != served[1:]
