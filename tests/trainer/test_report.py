"""The model card reports the run it describes: its chosen epoch, its scores, its data and its split."""

from __future__ import annotations

import keras

from client.stats import wilson_interval
from trainer.data import MNIST_SHA256
from trainer.presets import get_preset
from trainer.report import model_card, write_run_report
from trainer.train import AVERAGED_VAL, SERVED_VAL, TrainResult


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
        processor={"architecture": "x86_64", "name": "AMD EPYC", "family": "25", "model": "17", "cores": 2},
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
    # The same seed trains another network on another processor: the card names the one that trained it.
    assert card["processor"] == result.processor


def _curve_labels(monkeypatch, tmp_path, mnist_data, preset, history) -> list[str]:
    """The legend of curves.png's accuracy panel, as write_run_report draws it for `preset`."""
    import matplotlib.pyplot as plt

    import trainer.report

    drawn = []

    def keep(fig, path):
        drawn.append([t.get_text() for t in fig.axes[0].get_legend().get_texts()])
        plt.close(fig)
        return path

    monkeypatch.setattr(trainer.report, "save_figure", keep)
    result = TrainResult(
        model=keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)]), preset=preset, dataset="mnist",
        history=history, best_epoch=2, val_accuracy=0.95, test_accuracy=wilson_interval(9990, 10000),
        test_errors=10, test_predictions=mnist_data.y_test, train_size=100, val_size=10, seconds=1.0,
    )  # fmt: skip
    write_run_report(result, mnist_data, tmp_path, card={"preset": preset.name})
    return drawn[0]


def test_the_curves_name_what_the_served_validation_curve_measured(monkeypatch, tmp_path, mnist_data):
    """A bfloat16 run's SERVED_VAL curve scores its float32 twin: nothing is mirror-averaged on digits."""
    history = {"loss": [0.9, 0.5], "accuracy": [0.8, 0.9], "val_loss": [0.5, 0.4],
               "val_accuracy": [0.9, 0.95], SERVED_VAL: [0.9, 0.95]}  # fmt: skip
    bfloat16 = get_preset("seed-best").with_overrides(precision="bfloat16")
    labels = _curve_labels(monkeypatch, tmp_path, mnist_data, bfloat16, history)
    assert "validation accuracy, float32 twin" in labels
    assert not any("mirror" in label for label in labels), labels
    averaged = get_preset("seed-best").with_overrides(weight_average=0.999)
    history = {**history, AVERAGED_VAL: history.pop(SERVED_VAL)}
    labels = _curve_labels(monkeypatch, tmp_path, mnist_data, averaged, history)
    assert "validation accuracy, weight-averaged" in labels and "kept epoch 2" in labels
