"""Shared fixtures: the verified MNIST arrays and a small trained model exported as versions 1 and 2."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything imports TensorFlow

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURE_TRAIN_IMAGES = 5_000
FIXTURE_BATCH_SIZE = 50  # smaller than seed-best's 200: more steps, > 90% test accuracy in 2 epochs
FIXTURE_SEED = 1234


def data_dir() -> Path:
    """$DIGITS_DATA_DIR (as `make` exports it, `~` expanded as the commands do) or the repo's data/."""
    return Path(os.path.expanduser(os.environ.get("DIGITS_DATA_DIR") or REPO_ROOT / "data"))


@pytest.fixture
def no_keras_cache(tmp_path_factory, monkeypatch) -> None:
    """No Keras cache of whoever runs the tests is found: `digits-train data` would take MNIST from it."""
    import trainer.data

    empty = tmp_path_factory.mktemp("no-keras-cache")
    monkeypatch.setenv("KERAS_HOME", str(empty))
    monkeypatch.setattr(trainer.data, "KERAS_TMP_HOME", empty)


@pytest.fixture(scope="session")
def mnist_data():
    """trainer.data.Dataset: verified uint8 MNIST (x_train [60000,28,28], y_train, x_test, y_test)."""
    from trainer.data import DataError, load_dataset

    try:
        return load_dataset("mnist", data_dir())
    except DataError as exc:
        pytest.fail(f"MNIST is not ready ({exc}); run `make data`", pytrace=False)


@pytest.fixture(scope="session")
def mnist_model_dir(tmp_path_factory, mnist_data) -> Path:
    """<tmp>/models/mnist with versions 1 and 2 of a small seed-best CNN (> 90% test accuracy).

    Version 1: 2 epochs on 5,000 training images; version 2: the same model after one more epoch,
    so the two versions give slightly different probabilities. Each has warmup records and a model card.
    """
    import keras

    from client.contract import DEFAULT_MODEL_NAME
    from trainer.export import export_model
    from trainer.model import build_model, compile_model, to_model_input
    from trainer.presets import get_preset

    preset = get_preset("seed-best").with_overrides(batch_size=FIXTURE_BATCH_SIZE, seed=FIXTURE_SEED)
    keras.utils.set_random_seed(FIXTURE_SEED)
    model = compile_model(build_model(preset.model), preset.train)
    x_train = to_model_input(mnist_data.x_train[:FIXTURE_TRAIN_IMAGES])
    y_train = mnist_data.y_train[:FIXTURE_TRAIN_IMAGES]
    x_test = to_model_input(mnist_data.x_test)
    models_dir = tmp_path_factory.mktemp("exports") / "models"
    for epochs in (2, 1):
        model.fit(x_train, y_train, epochs=epochs, batch_size=FIXTURE_BATCH_SIZE, verbose=0)
        _, test_accuracy = model.evaluate(x_test, mnist_data.y_test, batch_size=1000, verbose=0)
        card = {
            "preset": preset.name,
            "purpose": "pytest fixture (small subset, few epochs)",
            "config": preset.to_dict(),
            "train_images": FIXTURE_TRAIN_IMAGES,
            "test_accuracy": float(test_accuracy),
            "params": model.count_params(),
        }
        export_model(model, models_dir, DEFAULT_MODEL_NAME, card, warmup_images=mnist_data.x_test[:16])
    return models_dir / DEFAULT_MODEL_NAME
