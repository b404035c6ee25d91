"""digits-train tune: a smoke search writes its table, CSV and plot, selects on validation, and resumes."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import time

import keras
import numpy as np
import pytest

from trainer.cli import TUNE_QUICK, main
from trainer.data import load_dataset
from trainer.model import build_model
from trainer.tune import (
    DigitsTuner,
    TrialRow,
    TuneConfig,
    check_settings,
    plot_trials,
    preset_from_values,
    project_lock,
    run_search,
    search_settings,
    search_space,
    trials_markdown,
    write_tune_report,
)

# KerasTuner 1.4 calls threading.currentThread(); not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:currentThread|getName:DeprecationWarning")


def test_every_point_of_the_search_space_builds_a_model():
    hp = search_space(max_epochs=3)
    values = {**hp.values, "batch_norm": True, "optimizer": "adamw", "schedule": "onecycle", "augment": 0.5}
    preset = preset_from_values(values)
    assert preset.train.optimizer == "adamw" and preset.train.augment == 0.5
    assert preset.model.conv_layers[0].batch_norm and preset.model.dense_batch_norm
    assert build_model(preset.model).count_params() > 0
    # The defaults are the tutorial's seed-best network.
    assert build_model(preset_from_values(hp.values).model).count_params() == 60_806


def test_a_cut_markdown_table_says_so():
    rows = [TrialRow(str(i), "COMPLETED", 0.9, 1, 1.0, {"dropout": 0.1}) for i in range(3)]
    assert "tune_trials.csv" not in trials_markdown(rows, limit=3)
    table = trials_markdown(rows, limit=2)
    assert table.count("| 0.1 |") == 2 and "best 2 of 3 trials; tune_trials.csv lists every one" in table


def test_the_plot_of_one_trial_numbers_it_as_a_whole_trial(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr("trainer.tune.save_figure", lambda fig, path: figures.append(fig) or path)
    plot_trials([TrialRow("0", "COMPLETED", 0.9, 1, 1.0, {})], tmp_path / "plot.png")
    figures[0].canvas.draw()
    assert [tick for tick in figures[0].axes[0].get_xticks() if not float(tick).is_integer()] == []


@pytest.fixture(scope="module")
def tune_run(tmp_path_factory):
    """Two quick invocations on one project: 2 trials, then resumed to 3; their run dirs, the second's log."""
    root = tmp_path_factory.mktemp("tune")
    common = ["tune", "--quick", "--directory", str(root / "project"), "--reports-dir", str(root / "reports")]
    assert main([*common, "--max-trials", "2", "--seeds", "2"]) == 0
    first = sorted((root / "reports").iterdir())
    with contextlib.redirect_stdout(io.StringIO()) as log:
        assert main([*common, "--max-trials", "3", "--seeds", "1"]) == 0
    second = sorted(set((root / "reports").iterdir()) - set(first))
    return first[0], second[0], log.getvalue()


def read_trials(run_dir):
    with (run_dir / "tune_trials.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_smoke_search_writes_table_csv_plot_and_best_trial(tune_run):
    run_dir, *_ = tune_run
    rows = read_trials(run_dir)
    assert len(rows) == 2
    scores = [float(row["val_accuracy"]) for row in rows]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
    assert {"learning_rate", "batch_size", "augment", "conv1_filters", "epochs"} <= rows[0].keys()
    assert (run_dir / "tune_trials.png").read_bytes().startswith(b"\x89PNG")
    markdown = (run_dir / "tune_trials.md").read_text()
    assert "| trial | val acc |" in markdown and "mean ± std" in markdown

    best = json.loads((run_dir / "best_trial.json").read_text())
    assert best["trial"] == rows[0]["trial"]  # the winner is the best on validation
    retrain = best["retrain"]
    assert len(retrain["test_accuracy"]) == 2 and retrain["seeds"] == [42, 43]
    assert retrain["mean"] == pytest.approx(sum(retrain["test_accuracy"]) / 2)
    for value, (low, high) in zip(retrain["test_accuracy"], retrain["test_interval_95"], strict=True):
        assert low <= value <= high


def test_second_run_resumes_instead_of_starting_over(tune_run):
    first_dir, second_dir, _ = tune_run
    first = {row["trial"]: row for row in read_trials(first_dir)}
    second = {row["trial"]: row for row in read_trials(second_dir)}
    assert len(second) == 3 and set(first) < set(second)
    for trial, row in first.items():  # reloaded, not re-run: same values and scores
        assert second[trial] == row


def test_progress_says_what_resumes_each_trial_start_and_why_the_search_stops(tune_run):
    log = tune_run[2]
    assert "2 trials finished" in log
    assert log.index("trial 2 (3 of up to 3): fitting") < log.index("trial 2: val_acc")
    assert "3 trials in the project: --max-trials 3 reached" in log


def test_a_trial_interrupted_mid_way_runs_again_on_resume(tmp_path, monkeypatch, capsys):
    run_trial = DigitsTuner.run_trial

    def interrupt_trial_1(self, trial, *args, **kwargs):
        if trial.trial_id == "1":
            raise KeyboardInterrupt  # Ctrl-C in the middle of its fit
        return run_trial(self, trial, *args, **kwargs)

    common = ["tune", "--quick", "--max-trials", "2", "--seeds", "1",
              "--directory", str(tmp_path / "project"), "--reports-dir", str(tmp_path / "reports")]
    with monkeypatch.context() as patch:
        patch.setattr(DigitsTuner, "run_trial", interrupt_trial_1)
        assert main(common) == 130
    capsys.readouterr()
    assert main(common) == 0
    assert "1 trials finished, 1 interrupted (run again first)" in capsys.readouterr().out
    (run_dir,) = (tmp_path / "reports").iterdir()
    rows = read_trials(run_dir)
    assert sorted(row["trial"] for row in rows) == ["0", "1"]
    assert all(row["status"] == "COMPLETED" and row["val_accuracy"] for row in rows)


def test_a_budget_spent_mid_trial_stops_it_to_run_again_on_resume(tmp_path, monkeypatch, capsys):
    run_trial = DigitsTuner.run_trial

    def budget_spent_as_trial_1_starts(self, trial, *args, **kwargs):
        if trial.trial_id == "1":
            self.deadline = time.monotonic()
        return run_trial(self, trial, *args, **kwargs)

    monkeypatch.setattr(DigitsTuner, "run_trial", budget_spent_as_trial_1_starts)
    common = ["tune", "--quick", "--max-trials", "3", "--seeds", "1",
              "--directory", str(tmp_path / "project"), "--reports-dir", str(tmp_path / "reports")]
    assert main(common) == 0  # trial 0 finished: the table and the re-training go on
    assert "trial 1 stopped mid-fit; a resume runs it again first" in capsys.readouterr().out
    (first,) = (tmp_path / "reports").iterdir()
    statuses = {row["trial"]: row["status"] for row in read_trials(first)}
    assert statuses == {"0": "COMPLETED", "1": "INTERRUPTED"}
    assert main(common) == 0  # trial 1 again: a run's first trial always finishes; then no new one
    assert "1 interrupted (run again first)" in capsys.readouterr().out
    (second,) = set((tmp_path / "reports").iterdir()) - {first}
    statuses = {row["trial"]: row["status"] for row in read_trials(second)}
    assert statuses == {"0": "COMPLETED", "1": "COMPLETED"}


def test_a_spent_budget_is_said_once_and_caps_the_trials(tmp_path):
    lines = []
    tuner = DigitsTuner(TuneConfig(budget_minutes=5), tmp_path, log=lines.append)
    tuner.pre_create_trial()
    assert tuner.oracle.max_trials == TuneConfig().max_trials and lines == []
    tuner.deadline = time.monotonic()
    tuner.pre_create_trial()
    tuner.pre_create_trial()
    assert tuner.oracle.max_trials == 0 and lines == ["budget of 5 min spent: no new trial starts"]


def test_an_interrupted_retraining_still_leaves_the_search_table_and_plot(tune_run, monkeypatch):
    reports = tune_run[0].parent
    before = set(reports.iterdir())

    def interrupted(*_, **__):
        raise KeyboardInterrupt

    monkeypatch.setattr("trainer.tune.train_model", interrupted)
    argv = ["tune", "--quick", "--directory", str(reports.parent / "project"), "--reports-dir", str(reports)]
    assert main(argv) == 130  # 3 trials done: nothing to search, straight to the re-training
    (run_dir,) = set(reports.iterdir()) - before
    assert len(read_trials(run_dir)) == 3 and (run_dir / "tune_trials.png").exists()
    assert "re-training with 3 seed(s): not finished" in (run_dir / "tune_trials.md").read_text()
    assert json.loads((run_dir / "best_trial.json").read_text())["retrain"] is None


def test_resuming_with_other_data_or_search_space_is_refused(tune_run, capsys):
    reports = tune_run[0].parent
    before = set(reports.iterdir())
    project = reports.parent / "project"
    common = ["tune", "--quick", "--directory", str(project), "--reports-dir", str(reports)]
    for flags, changed in (
        (["--max-epochs", "4"], "max_epochs 2 (now 4)"),  # KerasTuner would keep the saved epochs range
        (["--limit-train", "500"], "limit_train 600 (now 500)"),
        (["--dataset", "fashion_mnist"], "dataset mnist (now fashion_mnist)"),
    ):
        assert main([*common, *flags]) == 2, flags
        assert changed in capsys.readouterr().err, flags
    assert set(reports.iterdir()) == before


def test_a_fashion_trial_is_scored_mirror_averaged_as_training_chooses_its_epoch(tmp_path, monkeypatch):
    by_hand = []  # each epoch's validation accuracy of the mean softmax of image and mirror, scored here

    class MirrorAveragedByHand(keras.callbacks.Callback):
        def __init__(self, images, labels):
            super().__init__()
            self.images, self.labels = images, labels

        def on_epoch_end(self, epoch, logs=None):
            views = (self.images, np.ascontiguousarray(self.images[:, :, ::-1]))
            probabilities = sum(self.model.predict(view, batch_size=1_000, verbose=0) for view in views)
            by_hand.append(float(np.mean(probabilities.argmax(axis=1) == self.labels)))

    fit = keras.Model.fit

    def fit_scored_by_hand(self, *args, validation_data, callbacks=(), **kwargs):
        callbacks = [*callbacks, MirrorAveragedByHand(*validation_data)]
        return fit(self, *args, validation_data=validation_data, callbacks=callbacks, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", fit_scored_by_hand)
    cfg = TuneConfig(max_trials=1, max_epochs=3, limit_train=600, val_size=1_000, initial_random_trials=1)
    lines = []
    (row,) = run_search(load_dataset("fashion_mnist"), cfg, tmp_path / "project", log=lines.append)
    assert len(by_hand) == row.values["epochs"] > 1
    assert row.val_accuracy == pytest.approx(max(by_hand), abs=1e-9)
    assert row.best_epoch == int(np.argmax(by_hand)) + 1
    assert f"trial 0: val_acc mirror-averaged {max(by_hand):.4f}" in "\n".join(lines)
    paths = write_tune_report([row], None, cfg, tmp_path, "fashion_mnist")
    assert read_trials(tmp_path)[0]["scoring"] == "mirror-averaged"
    assert "scored on its mirror-averaged validation accuracy" in paths["markdown"].read_text()


def test_an_old_project_of_plain_scores_resumes_for_digits_but_not_for_clothes(tmp_path, capsys):
    """A project made before its scoring was recorded holds plain scores: Fashion trials are averaged now."""
    cfg = TuneConfig(**TUNE_QUICK)
    for dataset in ("mnist", "fashion_mnist"):
        old = {name: value for name, value in search_settings(cfg, dataset).items() if name != "scoring"}
        (tmp_path / dataset / "digits").mkdir(parents=True)
        (tmp_path / dataset / "digits" / "search_settings.json").write_text(json.dumps(old))
    check_settings(tmp_path / "mnist", search_settings(cfg, "mnist"))  # plain then and now: resumes
    argv = ["tune", "--quick", "--dataset", "fashion_mnist", "--directory", str(tmp_path / "fashion_mnist"),
            "--reports-dir", str(tmp_path / "reports")]
    assert main(argv) == 2
    assert "scoring plain (now mirror-averaged)" in capsys.readouterr().err
    assert not (tmp_path / "reports").exists()


def test_a_damaged_project_is_a_clear_error(tmp_path, capsys):
    project = tmp_path / "project"
    (project / "digits").mkdir(parents=True)
    (project / "digits" / "tuner0.json").write_text("{}")
    (project / "digits" / "oracle.json").write_text('{"ongoing_trials": {')  # cut short mid-write
    common = ["tune", "--quick", "--directory", str(project), "--reports-dir", str(tmp_path / "reports")]
    assert main(common) == 2
    assert f"--directory {project}: its KerasTuner project cannot be reloaded" in capsys.readouterr().err
    (project / "digits" / "search_settings.json").write_text("{")
    assert main(common) == 2
    assert "search_settings.json cannot be read" in capsys.readouterr().err
    assert not (tmp_path / "reports").exists()


def test_a_project_in_use_by_another_search_is_refused(tmp_path, capsys):
    project = tmp_path / "project"
    with project_lock(project):
        argv = ["tune", "--quick", "--directory", str(project), "--reports-dir", str(tmp_path / "reports")]
        assert main(argv) == 2
    assert f"--directory {project} is in use by another digits-train tune" in capsys.readouterr().err
    with project_lock(project):  # released when its holder is done
        pass


def test_bad_budget_is_an_argument_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["tune", "--budget", "0"])
    assert exc.value.code == 2 and "must be positive" in capsys.readouterr().err


def test_budget_help_says_what_it_bounds(capsys):
    with pytest.raises(SystemExit):
        main(["tune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "one still running stops and runs again on resume" in text and "training comes after" in text
