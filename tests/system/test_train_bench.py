"""bench/train_bench.py: seed-best's 40 epochs extrapolated from a few timed ones (wall or CPU), the
tutorial's code as the reference, and the ratios against it."""

from __future__ import annotations

import json

import pytest


def run_time(bench, wall, cpu):
    return bench.RunTime("seed-best", 42, len(wall), 0.98, 0.98, sum(wall), wall, cpu, sum(cpu))


def test_first_epoch_as_measured_the_rest_at_the_median_of_later_epochs(bench_train):
    runs = [run_time(bench_train, [5.0, 2.0, 9.0], [8.0, 4.0, 4.2]),
            run_time(bench_train, [6.0, 3.0, 2.5], [9.0, 4.1, 4.3])]
    # The second run's first epoch (6.0) counts nowhere: a later run's tracing is not seed-best's.
    assert bench_train.extrapolate_runs(runs, 40) == pytest.approx(5.0 + 39 * 2.75)
    cpu = bench_train.extrapolate_runs(runs, 40, field="epoch_cpu_seconds")
    assert cpu == pytest.approx(8.0 + 39 * 4.15)


def test_two_epochs_at_least(bench_train):
    with pytest.raises(ValueError, match="at least 2 epochs"):
        bench_train.extrapolate([5.0], 40)


def test_the_tutorials_code_fits_every_training_image_and_validates_on_the_test_set(bench_train, mnist_data):
    """The reference the target names: all training images per epoch, scored on the test set each epoch."""
    from trainer.data import Dataset
    from trainer.presets import get_preset

    small = Dataset("mnist", mnist_data.x_train[:1000], mnist_data.y_train[:1000],
                    mnist_data.x_test[:400], mnist_data.y_test[:400])
    preset = get_preset("seed-best").with_overrides(epochs=2)
    lines: list[str] = []
    run = bench_train.time_tutorial_recipe(preset, small, lines.append)
    assert (run.epochs, len(run.epoch_seconds), len(run.epoch_cpu_seconds)) == (2, 2, 2)
    assert run.val_accuracy is None and 0.5 < run.test_accuracy <= 1.0  # 2 epochs on 1,000 images learn
    # Its validation data is the test set: the last epoch's line shows the accuracy it reports.
    assert f"val_acc {run.test_accuracy:.4f}" in lines[-1]


def test_ratios_against_a_reference(bench_train):
    reference = [run_time(bench_train, [5.0, 2.0, 2.0], [6.0, 3.0, 3.0])]
    candidates = [run_time(bench_train, [3.0, 3.0], [4.0, 4.0]),
                  run_time(bench_train, [4.0, 4.0], [5.0, 5.0])]
    compared = bench_train.compare(reference, candidates, 40)
    assert compared["extrapolated_seconds"] == pytest.approx(5.0 + 39 * 2.0)
    assert compared["ratio"] == pytest.approx(7.0 / 83.0, abs=1e-4)  # median of fits 6 and 8
    assert compared["cpu_ratio"] == pytest.approx(9.0 / (6.0 + 39 * 3.0), abs=1e-4)


def test_the_candidate_is_timed_over_its_epochs_as_the_reference_is(bench_train):
    """Not its whole fit(): set-up and end-of-training callbacks are no part of the reference's epochs."""
    reference = [run_time(bench_train, [5.0, 2.0, 2.0], [6.0, 3.0, 3.0])]
    candidate = bench_train.RunTime("fast", 42, 2, 0.99, 0.99, 9.5, [3.0, 3.0], [4.0, 4.0], 9.0)
    assert candidate.total_epoch_seconds == 6.0
    compared = bench_train.compare(reference, [candidate], 40)
    assert compared["ratio"] == pytest.approx(6.0 / 83.0, abs=1e-4)
    assert compared["ratio_of_means"] == pytest.approx(6.0 / 83.0, abs=1e-4)


def test_an_unknown_candidate_is_refused_before_anything_is_timed(bench_train, tmp_path, capsys):
    argv = ["--candidate", "fsat", "--data-dir", str(tmp_path), "--out", str(tmp_path / "b.json")]
    assert bench_train.main(argv) == 2
    assert "train_bench: unknown --candidate 'fsat'" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()


@pytest.mark.parametrize("argv", [["--seeds", "0"], ["--seeds", "two"], ["--reference-epochs", "1"]])
def test_bad_numbers_are_usage_errors_before_anything_is_timed(bench_train, argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        bench_train.main([*argv, "--data-dir", str(tmp_path), "--out", str(tmp_path / "b.json")])
    assert exited.value.code == 2 and f"argument {argv[0]}:" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()


def test_missing_data_is_a_clear_error_and_an_older_runs_json_does_not_outlive_the_run(
    bench_train, tmp_path, capsys
):
    out = tmp_path / "b.json"
    out.write_text('{"met": {"ratio": true, "accuracy": true}}\n')  # an earlier run's verdict
    assert bench_train.main(["--data-dir", str(tmp_path / "empty"), "--out", str(out)]) == 2
    assert "train_bench: " in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("ratio", "accuracy", "time_line", "accuracy_line"),
    [
        (0.1668, 0.99397, "0.1668 (target <= 1/6: NOT met)", "99.397% (target >= 99.4%: NOT met)"),
        (0.1666, 0.994, "0.1666 (target <= 1/6: met)", "99.40% (target >= 99.4%: met)"),
        (0.131, 0.9943, "0.131 (target <= 1/6: met)", "99.43% (target >= 99.4%: met)"),
    ],
)
def test_a_verdict_never_shows_its_value_rounded_onto_the_limit(bench_train, ratio, accuracy, time_line,
                                                                accuracy_line):
    """0.1668 printed as 0.167 beside "target <= 0.167: NOT met" (or 99.397% as 99.40%) reads as a bug."""
    shown_time, shown_accuracy = bench_train.verdicts(ratio, accuracy)
    assert shown_time.endswith(time_line) and shown_accuracy.endswith(accuracy_line)


@pytest.mark.parametrize(
    ("accuracy", "code", "verdict"),
    [(0.995, 0, "99.50% (target >= 99.4%: met)"), (0.99397, 1, "99.397% (target >= 99.4%: NOT met)")],
)
def test_a_whole_run_writes_its_json_and_prints_its_verdicts(bench_train, monkeypatch, tmp_path, capsys,
                                                             accuracy, code, verdict):
    """main() end to end with the fits stubbed out: exit status, printed verdicts, the JSON's fields."""
    seeds = []

    def reference(preset, dataset, log):
        return bench_train.RunTime(preset.name, 42, 3, 0.98, None, 9.5, [5.0, 2.0, 2.0], [6.0, 3.0, 3.0], 12)

    def run(preset, dataset, log):
        if preset.name == "seed-best":
            return reference(preset, dataset, log)
        seeds.append(preset.train.seed)
        return bench_train.RunTime(preset.name, preset.train.seed, 2, accuracy, 0.99, 6.5, [3.0, 3.0],
                                   [4.0, 4.0], 8.0)

    monkeypatch.setattr(bench_train, "time_tutorial_recipe", reference)
    monkeypatch.setattr(bench_train, "time_run", run)
    out = tmp_path / "train_bench.json"
    assert bench_train.main(["--seeds", "2", "--out", str(out)]) == code
    printed = capsys.readouterr().out
    assert "ratio against the tutorial's code: 0.072 (target <= 1/6: met)" in printed  # 6 s of 83 s
    assert verdict in printed
    summary = json.loads(out.read_text())
    assert seeds == [42, 43] and len(summary["candidates"]) == 2
    assert summary["references"]["tutorial_code"]["extrapolated_seconds"] == 83.0
    assert summary["met"] == {"ratio": True, "accuracy": code == 0}
    assert len(summary["references"]["tutorial_code"]["runs"]) == 3  # before each candidate and after
