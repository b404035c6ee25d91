"""Training benchmark (`make bench-train`): the tutorial's seed-best recipe against the `fast` preset.

All runs share this one process, so the ratio is fair on a shared machine: a few epochs of seed-best are
timed before each candidate run and after the last one (other jobs' load drifts), and extrapolated to its
40 (the first epoch as measured, it carries the graph tracing; the rest at the median of the later
epochs); `fast` runs to completion, once per seed, and its median fit time is compared. Both sides time
the same span: the sum of the epochs, each from its start to its end-of-epoch callbacks (validation
included), without fit's set-up before the first epoch and its end-of-training callbacks after the last.
Medians, because another job taking one of two cores for a few seconds doubles an epoch now and then.

Seed-best is timed two ways each time: as the tutorial's code runs it (all 60,000 training images each
epoch, one-hot labels and categorical cross-entropy, the 10,000 test images as validation data after
every epoch), which is the recipe the target names; and through our trainer (55,000 images, 5,000 held
out for choosing the epoch), as `digits-train train --preset seed-best` runs it. Target: fast's fit time
at most 1/6 of the tutorial's recipe, at >= 99.4% mean test accuracy; the ratio against the trainer's
seed-best is printed beside it. So is each ratio in process CPU seconds (all threads, per epoch,
extrapolated the same way): time spent waiting for a core lengthens the wall clock, not the CPU time.
Writes bench/results/train_bench.json (with each run's process CPU seconds and the load average) and
exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import common

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # the trainer and client packages, also without an install
from client.arguments import checked, positive_int  # noqa: E402 -- needs the path above
from client.contract import DATA_DIR_ENV, data_dir  # noqa: E402

RESULTS_DIR = REPO_ROOT / "bench" / "results"
REFERENCE = "seed-best"
TARGET_RATIO = 1 / 6
TARGET_ACCURACY = 0.994


@dataclass(frozen=True)
class RunTime:
    """One training run: what it scored and how long its fit took."""

    preset: str
    seed: int
    epochs: int
    test_accuracy: float
    val_accuracy: float | None  # None for the tutorial's recipe, which validates on the test set
    fit_seconds: float  # the whole fit() call, set-up and end-of-training callbacks included (not compared)
    epoch_seconds: list[float]  # wall time of each epoch (what is compared)
    epoch_cpu_seconds: list[float]  # process CPU time of each epoch
    cpu_seconds: float  # process CPU time of the whole run (fit, validation, test scoring)

    @property
    def total_epoch_seconds(self) -> float:
        """Wall seconds of all its epochs: the span the reference is extrapolated over."""
        return sum(self.epoch_seconds)


def extrapolate(epoch_seconds: list[float], epochs: int, center=statistics.median) -> float:
    """Seconds for `epochs` epochs from a few timed ones: the first as measured, the rest at `center`."""
    if len(epoch_seconds) < 2:
        raise ValueError("time at least 2 epochs: the first one includes tracing")
    return epoch_seconds[0] + (epochs - 1) * center(epoch_seconds[1:])


def time_run(preset, dataset, log) -> RunTime:
    """Train `preset` with the project's trainer and keep the numbers the benchmark needs."""
    from trainer.train import train_model

    cpu_start = time.process_time()
    result = train_model(preset, dataset, log=log)
    cpu_seconds = time.process_time() - cpu_start
    return RunTime(
        preset=preset.name,
        seed=preset.train.seed,
        epochs=preset.train.epochs,
        test_accuracy=result.test_accuracy.value,
        val_accuracy=result.val_accuracy,
        fit_seconds=result.seconds,
        epoch_seconds=[round(s, 2) for s in result.epoch_seconds],
        epoch_cpu_seconds=[round(s, 2) for s in result.epoch_cpu_seconds],
        cpu_seconds=round(cpu_seconds, 2),
    )


def time_tutorial_recipe(preset, dataset, log) -> RunTime:
    """Fit `preset`'s network the way the tutorial's code does, and time it as `time_run` does.

    The tutorial's cells: `model.compile(loss='categorical_crossentropy', optimizer=RMSprop(lr=0.001))`
    and `model.fit(kx_train, y_train, validation_data=(kx_test, y_test), batch_size, epochs)` on all
    60,000 training images with one-hot labels. The pixels go in as float32 in [0, 1] (the tutorial's
    are float64, which Keras would cast each batch: a cost left out here, in the reference's favour).
    """
    import keras

    from trainer.model import build_model, model_input_array
    from trainer.train import EpochProgress

    cfg = preset.train
    cpu_start = time.process_time()
    keras.utils.set_random_seed(cfg.seed)
    model = build_model(preset.model)
    optimizer = keras.optimizers.RMSprop(cfg.learning_rate)
    model.compile(loss="categorical_crossentropy", optimizer=optimizer, metrics=["accuracy"])
    one_hot = keras.utils.to_categorical
    progress = EpochProgress(cfg.epochs, log)
    start = time.perf_counter()
    history = model.fit(
        model_input_array(dataset.x_train),
        one_hot(dataset.y_train, 10),
        validation_data=(model_input_array(dataset.x_test), one_hot(dataset.y_test, 10)),
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        verbose=0,
        callbacks=[progress],
    )
    fit_seconds = time.perf_counter() - start
    return RunTime(
        preset=f"{preset.name} (tutorial's code)",
        seed=cfg.seed,
        epochs=cfg.epochs,
        test_accuracy=float(history.history["val_accuracy"][-1]),  # its validation data is the test set
        val_accuracy=None,
        fit_seconds=fit_seconds,
        epoch_seconds=[round(s, 2) for s in progress.seconds],
        epoch_cpu_seconds=[round(s, 2) for s in progress.cpu_seconds],
        cpu_seconds=round(time.process_time() - cpu_start, 2),
    )


def extrapolate_runs(
    runs: list[RunTime], epochs: int, center=statistics.median, field: str = "epoch_seconds"
) -> float:
    """Seconds for `epochs` epochs from several short runs: first epoch of the first, `center` of the rest.

    `field` names the per-epoch seconds to use: wall clock, or process CPU ("epoch_cpu_seconds").
    """
    per_run = [getattr(run, field) for run in runs]
    later = [s for seconds in per_run for s in seconds[1:]]
    return extrapolate([per_run[0][0], *later], epochs, center)


def compare(references: list[RunTime], candidates: list[RunTime], epochs: int) -> dict:
    """The reference's runs, extrapolated to `epochs` (wall and CPU), and the candidates' ratios to it."""
    wall = extrapolate_runs(references, epochs)
    cpu = extrapolate_runs(references, epochs, field="epoch_cpu_seconds")
    epoch_totals = [c.total_epoch_seconds for c in candidates]  # the same span as the reference's epochs
    return {
        "runs": [asdict(r) for r in references],
        "extrapolated_seconds": round(wall, 1),
        "extrapolated_cpu_seconds": round(cpu, 1),
        "ratio": round(statistics.median(epoch_totals) / wall, 4),
        "ratio_of_means": round(
            statistics.fmean(epoch_totals) / extrapolate_runs(references, epochs, statistics.fmean), 4
        ),
        "cpu_ratio": round(statistics.median(sum(c.epoch_cpu_seconds) for c in candidates) / cpu, 4),
    }


def verdicts(ratio: float, mean_accuracy: float) -> tuple[str, str]:
    """The two targets' lines, each value shown so that it never looks equal to a limit it is not."""
    met = {True: "met", False: "NOT met"}
    return (
        f"ratio against the tutorial's code: {common.shown(ratio, TARGET_RATIO, 3)} "
        f"(target <= 1/6: {met[ratio <= TARGET_RATIO]})",
        f"accuracy: mean test {common.shown(100 * mean_accuracy, 100 * TARGET_ACCURACY, 2)}% "
        f"(target >= {100 * TARGET_ACCURACY:.1f}%: {met[mean_accuracy >= TARGET_ACCURACY]})",
    )


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--candidate", default="fast", help="preset to compare (default: fast)")
    parser.add_argument(
        "--reference-epochs",
        type=checked(int, lambda v: v >= 2, "must be 2 or more (the first epoch includes tracing)"),
        default=3,
        help="seed-best epochs timed before each candidate run and after the last (>= 2; default 3)",
    )
    parser.add_argument(
        "--seeds", type=positive_int, default=1, help="candidate runs, seeds 42, 43, ... (default 1)"
    )
    parser.add_argument(
        "--data-dir",
        default=str(data_dir(os.environ.get(DATA_DIR_ENV) or REPO_ROOT / "data")),
        help="folder with mnist.npz (default: $DIGITS_DATA_DIR or the checkout's data/)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS_DIR / "train_bench.json",
        help="JSON results file (default bench/results/train_bench.json)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from trainer.presets import PRESETS, get_preset

    if args.candidate not in PRESETS:  # now, not after the first timed runs
        print(f"train_bench: unknown --candidate {args.candidate!r}; known: {', '.join(PRESETS)}",
              file=sys.stderr)
        return 2
    from trainer.data import DataError, load_dataset

    args.out.unlink(missing_ok=True)  # a run that stops early must not leave an older run's numbers behind
    try:
        dataset = load_dataset("mnist", args.data_dir)
    except DataError as error:
        print(f"train_bench: {error}", file=sys.stderr)
        return 2
    reference_preset = get_preset(REFERENCE)
    full_epochs = reference_preset.train.epochs

    def log(message: str) -> None:
        print(f"  {message}", flush=True)

    started = time.perf_counter()
    short_reference = reference_preset.with_overrides(epochs=args.reference_epochs)
    as_written, references, candidates = [], [], []
    for index in range(args.seeds + 1):
        print(f"[{REFERENCE}] timing {args.reference_epochs} of its {full_epochs} epochs as the tutorial's "
              "code runs it", flush=True)
        as_written.append(time_tutorial_recipe(short_reference, dataset, log))
        print(f"[{REFERENCE}] timing {args.reference_epochs} of its {full_epochs} epochs through the trainer",
              flush=True)
        references.append(time_run(short_reference, dataset, log))
        if index == args.seeds:
            break
        preset = get_preset(args.candidate)
        preset = preset.with_overrides(seed=preset.train.seed + index)
        print(f"[{args.candidate}] seed {preset.train.seed}: full run", flush=True)
        candidates.append(time_run(preset, dataset, log))

    accuracies = [c.test_accuracy for c in candidates]
    mean_accuracy = statistics.fmean(accuracies)
    epoch_totals = [c.total_epoch_seconds for c in candidates]
    cpu_seconds = [sum(c.epoch_cpu_seconds) for c in candidates]
    compared = {
        "tutorial_code": compare(as_written, candidates, full_epochs),
        "trainer": compare(references, candidates, full_epochs),
    }
    ratio = compared["tutorial_code"]["ratio"]
    summary = {
        "references": compared,
        "reference_tutorial_accuracy_40_epochs": reference_preset.tutorial_test_accuracy,
        "candidates": [asdict(c) for c in candidates],
        "candidate_mean_accuracy": mean_accuracy,
        "candidate_std_accuracy": statistics.stdev(accuracies) if len(accuracies) > 1 else None,
        "candidate_median_seconds": round(statistics.median(epoch_totals), 1),
        "candidate_median_cpu_seconds": round(statistics.median(cpu_seconds), 1),
        "targets": {"ratio": TARGET_RATIO, "accuracy": TARGET_ACCURACY},
        "met": {"ratio": ratio <= TARGET_RATIO, "accuracy": mean_accuracy >= TARGET_ACCURACY},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg_end": os.getloadavg()},
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")

    std = f" ± {100 * summary['candidate_std_accuracy']:.2f}%" if len(accuracies) > 1 else ""
    print()
    labels = {"tutorial_code": "as the tutorial's code runs it", "trainer": "through our trainer"}
    for key, label in labels.items():
        runs = compared[key]["runs"]
        print(
            f"{REFERENCE} {label}: {compared[key]['extrapolated_seconds']:.1f} s for {full_epochs} epochs "
            f"(extrapolated from {' and '.join(str(r['epoch_seconds']) for r in runs)} s); test "
            f"{100 * runs[0]['test_accuracy']:.2f}% after {runs[0]['epochs']} epochs"
        )
    tutorial = reference_preset.tutorial_test_accuracy
    print(f"  (the tutorial's {full_epochs}-epoch test figure: {100 * tutorial:.2f}%)")
    print(
        f"{args.candidate}: {summary['candidate_median_seconds']:.1f} s over its epochs (median of "
        f"{[round(s, 1) for s in epoch_totals]}), test "
        f"{common.shown(100 * mean_accuracy, 100 * TARGET_ACCURACY, 2)}%{std} over "
        f"{len(candidates)} seed(s)"
    )
    tutorial_code, trainer = compared["tutorial_code"], compared["trainer"]
    time_line, accuracy_line = verdicts(ratio, mean_accuracy)
    print(
        f"{time_line} (with means instead of medians {tutorial_code['ratio_of_means']:.3f}; in process CPU "
        f"seconds {tutorial_code['cpu_ratio']:.3f})"
    )
    print(
        f"ratio against seed-best through our trainer: {trainer['ratio']:.3f} (with means "
        f"{trainer['ratio_of_means']:.3f}; in process CPU seconds {trainer['cpu_ratio']:.3f})"
    )
    print(accuracy_line)
    print(f"written: {args.out}")
    return 0 if all(summary["met"].values()) else 1  # as serve_bench.py: a missed target fails the run


if __name__ == "__main__":
    sys.exit(main())
