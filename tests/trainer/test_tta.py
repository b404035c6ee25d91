"""Mirror averaging: clothes are served as the mean of each image and its mirror by default, digits never."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from client.contract import DEFAULT_MODEL_NAME, INPUT_NAME, OUTPUT_PROBABILITIES, SIGNATURE_NAME
from trainer.cli import main
from trainer.data import Dataset, load_dataset
from trainer.export import read_model_card
from trainer.model import build_model, to_model_input
from trainer.presets import get_preset
from trainer.restore import restore_model
from trainer.train import SERVED_VAL, predict_classes, stratified_split, train_model
from trainer.tta import for_dataset, mirror_averaged, serving_network

TINY = ["--preset", "seed-best", "--epochs", "2", "--limit-train", "2000", "--val-size", "500"]


@pytest.fixture(scope="module")
def fashion():
    return load_dataset("fashion_mnist")


@pytest.fixture(scope="module")
def fashion_exports(tmp_path_factory):
    """models/mnist/1: a small Fashion-MNIST ensemble of two members, trained by the CLI; and its log."""
    root = tmp_path_factory.mktemp("tta")
    common = ["--models-dir", str(root / "models"), "--reports-dir", str(root / "reports")]
    argv = ["train", *TINY, "--dataset", "fashion_mnist", "--members", "2", *common]  # mirrored by default
    assert main(argv) == 0
    return root / "models" / DEFAULT_MODEL_NAME, common


def served(version_dir, images: np.ndarray) -> np.ndarray:
    signature = tf.saved_model.load(str(version_dir)).signatures[SIGNATURE_NAME]
    return signature(**{INPUT_NAME: tf.constant(images)})[OUTPUT_PROBABILITIES].numpy()


def test_mirror_average_is_the_mean_of_both_views_and_adds_no_weights(fashion):
    network = build_model(get_preset("seed-best").model)
    averaged = mirror_averaged(network)
    images = to_model_input(fashion.x_test[:32])
    expected = (network.predict(images, verbose=0) + network.predict(images[:, :, ::-1], verbose=0)) / 2
    np.testing.assert_allclose(averaged.predict(images, verbose=0), expected, atol=1e-6)
    assert averaged.count_params() == network.count_params()
    assert len(averaged.variables) == len(network.variables)


def test_clothes_by_default_digits_never_and_either_on_request(capsys):
    best = get_preset("best")
    assert best.model.mirror_average is None  # the preset leaves it to the dataset
    assert for_dataset(best, "fashion_mnist").model.mirror_average is True
    assert for_dataset(best, "mnist").model.mirror_average is False
    off = best.with_model(mirror_average=False)
    assert for_dataset(off, "fashion_mnist").model.mirror_average is False
    network = build_model(best.model)
    assert serving_network(for_dataset(best, "mnist").model, network) is network
    with pytest.raises(ValueError, match="no digit"):
        for_dataset(best.with_model(mirror_average=True), "mnist")
    with pytest.raises(SystemExit) as exc:
        main(["train", "--preset", "best", "--mirror-average"])  # --dataset mnist by default
    assert exc.value.code == 2 and "a mirrored digit is no digit" in capsys.readouterr().err


def test_the_epoch_is_chosen_on_the_mirror_averaged_validation_accuracy(fashion):
    small = Dataset("fashion_mnist", fashion.x_train[:3000], fashion.y_train[:3000], fashion.x_test,
                    fashion.y_test)
    preset = get_preset("seed-best").with_overrides(epochs=3, val_size=600, seed=4)  # mirrored by default
    lines = []
    result = train_model(preset, small, log=lines.append)
    served_curve = result.history[SERVED_VAL]
    assert len(served_curve) == 3 and "val_accuracy" in result.history  # both curves are kept
    assert result.best_epoch == int(np.argmax(served_curve)) + 1
    split = stratified_split(small.y_train, 600, seed=4)
    served_now = np.mean(predict_classes(result.model, small.x_train[split.val]) == small.y_train[split.val])
    assert result.val_accuracy == pytest.approx(max(served_curve)) == pytest.approx(served_now)
    assert all("val_acc served" in line for line in lines if line.startswith("epoch"))
    assert "mirror-averaged" in lines[-1] and result.preset.model.mirror_average is True


def test_exported_clothes_model_cannot_tell_an_image_from_its_mirror(fashion_exports, fashion):
    models, _ = fashion_exports
    images = fashion.x_test[:64]
    original, mirrored = served(models / "1", images), served(models / "1", images[:, :, ::-1].copy())
    np.testing.assert_allclose(original, mirrored, atol=1e-5)
    card = read_model_card(models / "1")
    assert card["test_time_augmentation"] == "mean softmax of the image and its left-right mirror"
    assert card["config"]["model"]["mirror_average"] is True


def test_a_mirror_averaged_export_restores_and_combines(fashion_exports, fashion):
    models, common = fashion_exports
    restored = restore_model(models / "1")  # raises unless the rebuilt model reproduces the export
    assert len(restored.members) == 2 and all(p.model.mirror_average for p in restored.member_presets)
    assert main(["combine", str(models / "1"), *common]) == 0
    images = fashion.x_test[:64]
    np.testing.assert_allclose(served(models / "2", images), served(models / "1", images), atol=1e-5)
    assert read_model_card(models / "2")["test_time_augmentation"].startswith("mean softmax")


def test_no_mirror_average_exports_the_plain_network(tmp_path, fashion):
    common = ["--models-dir", str(tmp_path / "models"), "--reports-dir", str(tmp_path / "reports")]
    argv = ["train", "--preset", "seed-best", "--epochs", "1", "--limit-train", "500", "--val-size", "300",
            "--dataset", "fashion_mnist", "--no-mirror-average", *common]
    assert main(argv) == 0
    version = tmp_path / "models" / DEFAULT_MODEL_NAME / "1"
    card = read_model_card(version)
    assert card["test_time_augmentation"] == "none" and card["config"]["model"]["mirror_average"] is False
    images = fashion.x_test[:64]
    assert not np.allclose(served(version, images), served(version, images[:, :, ::-1].copy()), atol=1e-3)
