"""Validation is a stratified, seeded hold-out of the training images; the test set only gets scored."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.data import Dataset
from trainer.presets import get_preset
from trainer.train import KeepBestEpoch, limit_indices, predict_classes, stratified_split, train_model


def test_split_is_stratified_exact_and_disjoint(mnist_data):
    labels = mnist_data.y_train
    split = stratified_split(labels, 5000, seed=7)
    assert len(split.val) == 5000 and len(split.train) == 55000
    assert np.intersect1d(split.train, split.val).size == 0
    assert np.array_equal(np.union1d(split.train, split.val), np.arange(len(labels)))
    expected = np.bincount(labels) * 5000 / len(labels)
    assert np.all(np.abs(np.bincount(labels[split.val]) - expected) <= 1)


def test_split_is_seeded(mnist_data):
    a = stratified_split(mnist_data.y_train, 1000, seed=1)
    b = stratified_split(mnist_data.y_train, 1000, seed=1)
    c = stratified_split(mnist_data.y_train, 1000, seed=2)
    assert np.array_equal(a.val, b.val)
    assert not np.array_equal(a.val, c.val)


@pytest.mark.parametrize("size", [60000, -5])
def test_split_rejects_impossible_sizes(mnist_data, size):
    with pytest.raises(ValueError, match="val_size"):
        stratified_split(mnist_data.y_train, size, seed=0)


def test_split_of_size_zero_trains_on_every_image(mnist_data):
    split = stratified_split(mnist_data.y_train, 0, seed=0)
    assert np.array_equal(split.train, np.arange(60000)) and split.val.size == 0


def test_no_hold_out_fits_every_image_and_keeps_the_last_epoch(mnist_data):
    """val_size 0 (the final fit of a chosen recipe): all training images, no validation, last epoch kept."""
    small = Dataset("mnist", mnist_data.x_train[:2000], mnist_data.y_train[:2000], mnist_data.x_test,
                    mnist_data.y_test)
    preset = get_preset("seed-best").with_overrides(epochs=3, val_size=0, batch_size=100, seed=5)
    lines = []
    result = train_model(preset, small, log=lines.append)
    assert result.train_size == 2000 and result.val_size == 0
    assert result.val_accuracy is None and result.best_epoch == 3
    assert sorted(result.history) == ["accuracy", "loss"]  # nothing computed on held-out images
    assert [line.split()[1] for line in lines if line.startswith("epoch")] == ["1/3", "2/3", "3/3"]
    assert len(result.epoch_seconds) == len(result.epoch_cpu_seconds) == 3
    assert all(cpu > 0 for cpu in result.epoch_cpu_seconds)  # the benchmark's CPU ratio sums these
    assert "last epoch 3 kept (no validation hold-out)" in lines[-1]
    served = predict_classes(result.model, small.x_test)
    assert np.array_equal(served, result.test_predictions) and result.test_accuracy.value > 0.8


def test_limit_takes_a_seeded_subset_of_the_given_indices():
    indices = np.arange(100, 200)
    subset = limit_indices(indices, 10, seed=3)
    assert len(subset) == 10 and set(subset) <= set(indices)
    assert np.array_equal(subset, limit_indices(indices, 10, seed=3))
    assert limit_indices(indices, None, seed=3) is indices


def test_keep_best_epoch_restores_the_best_validation_weights():
    import keras

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    keeper = KeepBestEpoch()
    keeper.set_model(model)
    weights = []
    for epoch, val_acc in enumerate([0.5, 0.9, 0.7]):
        model.set_weights([np.full((1, 1), float(epoch)), np.zeros(1)])
        weights.append(model.get_weights())
        keeper.on_epoch_end(epoch, {"val_accuracy": val_acc, "accuracy": 1.0})
    keeper.on_train_end()
    assert keeper.best_epoch == 2
    np.testing.assert_array_equal(model.get_weights()[0], weights[1][0])


def test_keep_best_epoch_keeps_the_first_of_equal_epochs():
    """A later epoch that only ties the best is not kept: a rerun keeps the epoch the docs report."""
    import keras

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    keeper = KeepBestEpoch()
    keeper.set_model(model)
    for epoch, val_acc in enumerate([0.5, 0.9, 0.9, 0.7]):
        model.set_weights([np.full((1, 1), float(epoch)), np.zeros(1)])
        keeper.on_epoch_end(epoch, {"val_accuracy": val_acc})
    keeper.on_train_end()
    assert keeper.best_epoch == 2 and model.get_weights()[0][0, 0] == 1.0


def test_no_image_held_out_for_validation_is_ever_fit(mnist_data, monkeypatch):
    """The network fits images of the training split only, all of them or a limited subset."""
    import trainer.train as train

    # Each image carries its own index in two corner pixels, so what reached the network can be read back.
    n = 1200
    x = mnist_data.x_train[:n].copy()
    x[:, 0, 0], x[:, 0, 1] = np.arange(n) % 256, np.arange(n) // 256
    small = Dataset("mnist", x, mnist_data.y_train[:n], mnist_data.x_test[:500], mnist_data.y_test[:500])
    seen: list[np.ndarray] = []
    real = train.model_input_array

    def recorded(images):
        seen.append(np.asarray(images))
        return real(images)

    monkeypatch.setattr(train, "model_input_array", recorded)
    preset = get_preset("seed-best").with_overrides(epochs=1, val_size=400, batch_size=100, seed=5)
    held_out = stratified_split(small.y_train, 400, seed=5).val
    for limit in (None, 300):
        seen.clear()
        result = train_model(preset, small, limit_train=limit, log=lambda _: None)
        ids = {len(images): images[:, 0, 0] + 256 * images[:, 0, 1].astype(int) for images in seen}
        assert result.train_size == (800 if limit is None else limit)
        fit = ids[result.train_size]
        assert len(set(fit)) == result.train_size and not set(fit) & set(held_out)
        assert np.array_equal(np.sort(ids[400]), held_out)  # what validates is exactly the hold-out


def test_test_set_changes_only_the_test_score(mnist_data):
    """Scramble the test labels: every choice (history, best epoch) stays the same, only the score moves."""
    preset = get_preset("seed-best").with_overrides(epochs=2, val_size=1000, batch_size=100, seed=5)
    scrambled = Dataset("mnist", mnist_data.x_train, mnist_data.y_train, mnist_data.x_test,
                        (mnist_data.y_test + 1) % 10)
    quiet = lambda _: None  # noqa: E731
    real = train_model(preset, mnist_data, limit_train=3000, log=quiet)
    fake = train_model(preset, scrambled, limit_train=3000, log=quiet)
    assert real.history.keys() == fake.history.keys() and real.best_epoch == fake.best_epoch
    for key, values in real.history.items():
        assert fake.history[key] == pytest.approx(values, rel=1e-5), key
    assert "val_accuracy" in real.history and not any("test" in key for key in real.history)
    assert real.test_accuracy.value > 0.8 > fake.test_accuracy.value
    assert real.train_size == 3000 and real.val_size == 1000


@pytest.mark.parametrize("weight_average", [0.0, 0.9])
def test_the_returned_model_scores_the_validation_accuracy_that_chose_it(mnist_data, weight_average):
    """Whichever epoch wins (the average's, with weight averaging), the model returned for export is that
    epoch's: on the hold-out it scores exactly the accuracy the kept epoch was chosen with."""
    from trainer.train import AVERAGED_VAL

    small = Dataset("mnist", mnist_data.x_train[:1500], mnist_data.y_train[:1500], mnist_data.x_test[:500],
                    mnist_data.y_test[:500])
    # A rate high enough that the epochs' validation accuracies move about, so the best need not be the last.
    preset = get_preset("seed-best").with_overrides(
        epochs=4, val_size=500, batch_size=32, seed=3, learning_rate=0.01, weight_average=weight_average
    )
    result = train_model(preset, small, log=lambda _: None)
    monitor = AVERAGED_VAL if weight_average else "val_accuracy"
    chosen = result.history[monitor]
    assert result.best_epoch == 1 + int(np.argmax(chosen))
    assert result.val_accuracy == pytest.approx(max(chosen))
    held_out = stratified_split(small.y_train, 500, seed=3).val
    scored = np.mean(predict_classes(result.model, small.x_train[held_out]) == small.y_train[held_out])
    assert scored == pytest.approx(result.val_accuracy, abs=1e-6)  # one image is 0.002
    assert np.array_equal(predict_classes(result.model, small.x_test), result.test_predictions)


def test_the_learning_rate_schedule_ends_on_the_last_step_when_the_batch_does_not_divide_the_data(mnist_data):
    """250 images at batch 100 take 3 steps an epoch (the last one partial): the one-cycle rate has counted
    them and reaches 0 at the fit's last step, not before or after it."""
    preset = get_preset("fast").with_overrides(epochs=2, val_size=200, batch_size=100, seed=4)
    result = train_model(preset, mnist_data, limit_train=250, log=lambda _: None)
    optimizer = result.model.optimizer
    schedule = optimizer.learning_rate if callable(optimizer.learning_rate) else optimizer._learning_rate
    assert int(optimizer.iterations.numpy()) == 6 == schedule.total_steps
    assert float(schedule(5)) > 0.0 and float(schedule(6)) == pytest.approx(0.0, abs=1e-9)


def test_keep_best_epoch_refuses_an_epoch_without_the_accuracy_it_chooses_on():
    """A missing validation score is an error, not a silent "best epoch 0" that exports the last weights."""
    import keras

    keeper = KeepBestEpoch("val_served_accuracy")
    keeper.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    with pytest.raises(KeyError, match="val_served_accuracy.*epoch 1 did not log.*accuracy, val_accuracy"):
        keeper.on_epoch_end(0, {"val_accuracy": 0.9, "accuracy": 1.0})


def test_a_long_epoch_says_it_is_running_and_falls_silent_when_it_ends():
    """An epoch longer than the heartbeat logs a line each heartbeat; none follows its own epoch line."""
    import time

    from trainer.train import EpochProgress

    lines: list[str] = []
    progress = EpochProgress(3, lines.append, heartbeat=0.05)
    progress.on_epoch_begin(1)
    time.sleep(0.3)
    progress.on_epoch_end(1, {"loss": 0.5, "accuracy": 0.9, "val_loss": 0.4, "val_accuracy": 0.95})
    time.sleep(0.2)
    assert len(lines) >= 3 and lines[0].startswith("  epoch 2/3 running: ") and lines[0].endswith("s so far")
    assert lines[-1].startswith("epoch   2/3  loss 0.5000") and lines[-1].endswith(" *")
    assert all(line.startswith("  epoch 2/3 running") for line in lines[:-1])
    progress.on_epoch_begin(2)
    progress.stop()  # a fit that failed mid-epoch: no line claims the epoch still runs
    time.sleep(0.2)
    assert not lines[-1].startswith("  epoch 3/3")
