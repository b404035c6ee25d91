"""An ensemble exports as ONE SavedModel with the usual signature, averaging its members inside the graph."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from client.contract import (
    DEFAULT_MODEL_NAME,
    INPUT_NAME,
    OUTPUT_CLASSES,
    OUTPUT_PROBABILITIES,
    SIGNATURE_NAME,
)
from trainer.cli import main
from trainer.ensemble import average_models, member_preset, train_ensemble
from trainer.export import export_model, read_model_card
from trainer.model import to_model_input
from trainer.presets import get_preset

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small_ensemble(mnist_data):
    """Three seed-best members, one epoch on 1,000 images each, different seeds."""
    preset = get_preset("seed-best").with_overrides(epochs=1, batch_size=100, val_size=500, members=3)
    return train_ensemble(preset, mnist_data, limit_train=1000, log=lambda _: None)


def test_members_differ_by_seed(small_ensemble):
    seeds = [member.preset.train.seed for member in small_ensemble.members]
    assert seeds == [42, 43, 44] and all(m.preset.train.members == 1 for m in small_ensemble.members)
    assert member_preset(get_preset("ensemble"), 2).train.seed == get_preset("ensemble").train.seed + 2


def test_exported_ensemble_averages_its_members(tmp_path, small_ensemble, mnist_data):
    images = mnist_data.x_test[:64]
    version_dir = export_model(small_ensemble.combined.model, tmp_path, DEFAULT_MODEL_NAME, {"preset": "x"})
    signature = tf.saved_model.load(str(version_dir)).signatures[SIGNATURE_NAME]
    outputs = signature(**{INPUT_NAME: tf.constant(images)})

    each = np.stack([m.model.predict(to_model_input(images), verbose=0) for m in small_ensemble.members])
    assert not np.allclose(each[0], each[1], atol=1e-3)  # the members really differ
    probabilities = outputs[OUTPUT_PROBABILITIES].numpy()
    np.testing.assert_allclose(probabilities, each.mean(axis=0), atol=1e-5)
    np.testing.assert_array_equal(outputs[OUTPUT_CLASSES].numpy(), each.mean(axis=0).argmax(axis=1))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_ensemble_test_score_is_the_averaged_models(small_ensemble, mnist_data):
    combined = small_ensemble.combined
    predicted = combined.model.predict(to_model_input(mnist_data.x_test), verbose=0).argmax(axis=1)
    np.testing.assert_array_equal(predicted, combined.test_predictions)
    assert combined.test_errors == int(np.sum(predicted != mnist_data.y_test))
    assert combined.seconds == pytest.approx(sum(m.seconds for m in small_ensemble.members))


def test_average_needs_members():
    with pytest.raises(ValueError, match="at least one"):
        average_models([])


def test_cli_trains_and_exports_an_ensemble(tmp_path):
    models_dir = tmp_path / "models"
    argv = [
        "train", "--preset", "seed-best", "--members", "2", "--epochs", "1", "--limit-train", "500",
        "--val-size", "300", "--models-dir", str(models_dir), "--reports-dir", str(tmp_path / "reports"),
    ]
    assert main(argv) == 0
    card = read_model_card(models_dir / DEFAULT_MODEL_NAME / "1")
    assert card["config"]["train"]["members"] == 2 and 0.0 < card["metrics"]["test_accuracy"] <= 1.0

    # scripts/tta_probe.py rebuilds the members from this export: without extra views they score as exported.
    script, version_dir = REPO_ROOT / "scripts" / "tta_probe.py", models_dir / DEFAULT_MODEL_NAME / "1"
    probe = subprocess.run(
        [sys.executable, str(script), str(version_dir)],
        capture_output=True, text=True, timeout=600, check=True,
    )
    assert f"ensemble of 2, identity: {card['metrics']['test_errors']} test errors" in probe.stdout
    assert probe.stdout.count("shifts+rotations") == 3  # two members and the ensemble
    assert probe.stdout.count(" mirror") == 3
