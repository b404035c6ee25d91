"""bench/train_bench.py's extrapolation: seed-best's 40 epochs from a few timed ones, wall or CPU."""

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
