"""bench/train_bench.py: seed-best's 40 epochs extrapolated from a few timed ones (wall or CPU), the
tutorial's code as the reference, and the ratios against it."""

from __future__ import annotations

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
