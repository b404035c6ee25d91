"""The model card reports the run it describes: its chosen epoch, its scores, its data and its split."""

from __future__ import annotations

import keras

from client.stats import wilson_interval
from trainer.data import MNIST_SHA256
from trainer.presets import get_preset
from trainer.report import model_card
from trainer.train import TrainResult


def test_the_model_card_reports_the_run_it_describes(mnist_data):
    predictions = mnist_data.y_test.copy()
    predictions[[3, 30, 300]] = (predictions[[3, 30, 300]] + 1) % 10
    accuracy = wilson_interval(9997, 10000)
    result = TrainResult(
        model=keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)]),  # 9 params
        preset=get_preset("seed-best"),
        dataset="mnist",
        history={"loss": [0.9, 0.5, 0.4], "val_accuracy": [0.8, 0.95, 0.9]},
        best_epoch=2,  # not the last: the card must say which epoch was kept
        val_accuracy=0.95,
        test_accuracy=accuracy,
        test_errors=3,
        test_predictions=predictions,
        train_size=1234,
        val_size=567,
        seconds=12.3456,
    )
    card = model_card(result, mnist_data)
    assert card["metrics"] == {
        "best_epoch": 2, "epochs_run": 3, "val_accuracy": 0.95, "test_accuracy": accuracy.value,
        "test_accuracy_ci95": [accuracy.low, accuracy.high], "test_errors": 3,
        "test_error_indices": [3, 30, 300],
    }
    assert card["dataset"] == {
        "name": "mnist", "source": mnist_data.source, "sha256": MNIST_SHA256,
        "train_images": 1234, "val_images": 567, "test_images": 10000,
    }
    assert card["preset"] == "seed-best" and card["config"] == get_preset("seed-best").to_dict()
    assert card["params"] == 9 and card["training_seconds"] == 12.35
