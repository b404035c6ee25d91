"""Several training steps per call of the compiled step: the same training, less Python dispatch."""

from __future__ import annotations

import numpy as np
import pytest

import trainer.model
from trainer.data import Dataset
from trainer.model import build_model, compile_model
from trainer.presets import get_preset
from trainer.train import train_model


def small_run(mnist_data, preset_name: str, steps: int, monkeypatch):
    """`preset_name` for 2 epochs of batch 50 on 1,000 images (20 steps an epoch) at `steps` per call."""
    monkeypatch.setattr(trainer.model, "STEPS_PER_EXECUTION", steps)
    small = Dataset("mnist", mnist_data.x_train[:1500], mnist_data.y_train[:1500], mnist_data.x_test[:500],
                    mnist_data.y_test[:500])
    preset = get_preset(preset_name).with_overrides(epochs=2, batch_size=50, val_size=500, seed=3,
                                                    clean_epochs=0)
    return train_model(preset, small, log=lambda _: None)


@pytest.mark.parametrize("preset_name", ["fast", "best"])  # best: random augmentation inside the step
def test_several_steps_per_call_train_exactly_the_same_model(mnist_data, monkeypatch, preset_name):
    one = small_run(mnist_data, preset_name, 1, monkeypatch)
    seven = small_run(mnist_data, preset_name, 7, monkeypatch)  # 20 steps: calls of 7, 7 and 6
    assert seven.history == one.history
    for a, b in zip(one.model.get_weights(), seven.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(seven.test_predictions, one.test_predictions)


def test_weight_averaging_runs_one_step_per_call(monkeypatch):
    """Its callback updates the average after every batch, so it must see every batch."""
    monkeypatch.setattr(trainer.model, "STEPS_PER_EXECUTION", 64)
    preset = get_preset("fast")
    plain = compile_model(build_model(preset.model), preset.train, steps_per_epoch=10)
    averaged = compile_model(build_model(preset.model), preset.with_overrides(weight_average=0.99).train,
                             steps_per_epoch=10)
    assert (plain.steps_per_execution, averaged.steps_per_execution) == (64, 1)
