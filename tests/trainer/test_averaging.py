"""Weight averaging: the exported weights are the EMA of the trained ones, chosen on their own validation."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from client.contract import DEFAULT_MODEL_NAME
from trainer.averaging import WeightAverage
from trainer.cli import main
from trainer.data import Dataset
from trainer.export import read_model_card
from trainer.model import build_model, compile_model, to_model_input
from trainer.presets import get_preset
from trainer.restore import restore_model
from trainer.train import AVERAGED_VAL, predict_classes, stratified_split, train_model

DECAY = 0.9


@pytest.fixture(scope="module")
def small(mnist_data):
    return Dataset("mnist", mnist_data.x_train[:3000], mnist_data.y_train[:3000], mnist_data.x_test[:2000],
                   mnist_data.y_test[:2000])


def float_weights(model: keras.Model) -> list[np.ndarray]:
    return [w.numpy() for w in model.weights if np.issubdtype(np.dtype(w.dtype), np.floating)]


class RecordWeights(keras.callbacks.Callback):
    """The float weights after every batch, as the optimiser left them (before any average is lent)."""

    def __init__(self) -> None:
        super().__init__()
        self.after_batch: list[list[np.ndarray]] = []

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.after_batch.append(float_weights(self.model))


def test_the_network_ends_with_the_moving_average_of_its_trained_weights(small):
    preset = get_preset("seed-best").with_overrides(batch_size=100, seed=3)
    keras.utils.set_random_seed(3)
    network = compile_model(build_model(preset.model), preset.train)
    start = float_weights(network)
    recorder = RecordWeights()
    network.fit(to_model_input(small.x_train[:1000]), small.y_train[:1000], epochs=2, batch_size=100,
                verbose=0, callbacks=[recorder, WeightAverage(network, DECAY)])
    assert len(recorder.after_batch) == 20
    expected = [w.astype(np.float64) for w in start]
    for step, weights in enumerate(recorder.after_batch, start=1):
        decay = min(DECAY, (1 + step) / (10 + step))
        expected = [decay * e + (1 - decay) * w for e, w in zip(expected, weights, strict=True)]
    ended = float_weights(network)
    for got, want in zip(ended, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert not all(np.allclose(got, last) for got, last in zip(ended, recorder.after_batch[-1], strict=True))


def test_averaging_leaves_training_alone_and_the_epoch_is_chosen_on_the_average(small):
    plain = get_preset("seed-best").with_overrides(epochs=3, val_size=600, seed=5, batch_size=100)
    averaged = plain.with_overrides(weight_average=DECAY)
    lines: list[str] = []
    without = train_model(plain, small, log=lambda _: None)
    result = train_model(averaged, small, log=lines.append)
    # The raw weights train the same way: the average is lent out between epochs, never stepped.
    np.testing.assert_allclose(result.history["loss"], without.history["loss"], rtol=1e-5)
    np.testing.assert_allclose(result.history["val_accuracy"], without.history["val_accuracy"])
    curve = result.history[AVERAGED_VAL]
    assert len(curve) == 3 and curve != result.history["val_accuracy"]
    assert result.best_epoch == int(np.argmax(curve)) + 1
    split = stratified_split(small.y_train, 600, seed=5)
    served_now = np.mean(predict_classes(result.model, small.x_train[split.val]) == small.y_train[split.val])
    assert result.val_accuracy == pytest.approx(max(curve)) == pytest.approx(served_now)
    test_now = np.mean(predict_classes(result.model, small.x_test) == small.y_test)
    assert result.test_accuracy.value == pytest.approx(test_now)
    assert all("val_acc averaged" in line for line in lines if line.startswith("epoch"))
    assert "weight-averaged" in lines[-1]


def test_the_cli_exports_and_records_the_average_and_refuses_a_bad_decay(tmp_path, capsys):
    common = ["--models-dir", str(tmp_path / "models"), "--reports-dir", str(tmp_path / "reports")]
    argv = ["train", "--preset", "seed-best", "--epochs", "1", "--limit-train", "600", "--val-size", "0",
            "--weight-average", "0.95", *common]
    assert main(argv) == 0
    version = tmp_path / "models" / DEFAULT_MODEL_NAME / "1"
    assert read_model_card(version)["config"]["train"]["weight_average"] == 0.95
    restore_model(version)  # raises unless the rebuilt network reproduces the export
    for bad in ("1", "-0.1", "x"):
        with pytest.raises(SystemExit) as exc:
            main(["train", "--preset", "best", "--weight-average", bad])
        assert exc.value.code == 2 and "--weight-average" in capsys.readouterr().err
    with pytest.raises(ValueError, match="between 0 and 1"):
        WeightAverage(build_model(get_preset("seed-best").model), 1.0)
