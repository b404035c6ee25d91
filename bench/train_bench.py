"""Training benchmark (`make bench-train`): the tutorial's seed-best recipe against the `fast` preset.

Both run in this one process through the same trainer (same data pipeline, same per-epoch validation),
so the ratio is fair on a shared machine: a few epochs of seed-best are timed before each candidate run
and after the last one (other jobs' load drifts), and extrapolated to its 40 (the first epoch as measured,
it carries the graph tracing; the rest at the median of the later epochs); `fast` runs to completion, once
per seed, and its median fit time is compared. Medians, because another job taking one of two cores for
a few seconds doubles an epoch now and then. Target: fast's fit time at most 1/6 of seed-best's, at
>= 99.4% mean test accuracy. The same ratio in process CPU seconds (all threads, per epoch, extrapolated
the same way) is printed beside it: time spent waiting for a core lengthens the wall clock, not the CPU
time.
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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]
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
    val_accuracy: float
    fit_seconds: float
    epoch_seconds: list[float]
    epoch_cpu_seconds: list[float]  # process CPU time of each epoch
    cpu_seconds: float  # process CPU time of the whole run (fit, validation, test scoring)


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


def extrapolate_runs(
    runs: list[RunTime], epochs: int, center=statistics.median, field: str = "epoch_seconds"
) -> float:
    """Seconds for `epochs` epochs from several short runs: first epoch of the first, `center` of the rest.

    `field` names the per-epoch seconds to use: wall clock, or process CPU ("epoch_cpu_seconds").
    """
    per_run = [getattr(run, field) for run in runs]
    later = [s for seconds in per_run for s in seconds[1:]]
    return extrapolate([per_run[0][0], *later], epochs, center)


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--candidate", default="fast", help="preset to compare (default: fast)")
    parser.add_argument(
        "--reference-epochs",
        type=int,
        default=3,
        help="seed-best epochs timed before each candidate run and after the last (>= 2)",
    )
    parser.add_argument("--seeds", type=int, default=1, help="candidate runs, seeds 42, 43, ...")
    parser.add_argument("--data-dir", default=os.environ.get("DIGITS_DATA_DIR", str(REPO_ROOT / "data")))
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "train_bench.json")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.reference_epochs < 2 or args.seeds < 1:
        print("train_bench: --reference-epochs must be >= 2 and --seeds >= 1", file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO_ROOT))
    from trainer.data import load_dataset
    from trainer.presets import get_preset

    dataset = load_dataset("mnist", args.data_dir)
    reference_preset = get_preset(REFERENCE)
    full_epochs = reference_preset.train.epochs

    def log(message: str) -> None:
        print(f"  {message}", flush=True)

    started = time.perf_counter()
    short_reference = reference_preset.with_overrides(epochs=args.reference_epochs)
    references, candidates = [], []
    for index in range(args.seeds + 1):
        print(f"[{REFERENCE}] timing {args.reference_epochs} of its {full_epochs} epochs", flush=True)
        references.append(time_run(short_reference, dataset, log))
        if index == args.seeds:
            break
        preset = get_preset(args.candidate)
        preset = preset.with_overrides(seed=preset.train.seed + index)
        print(f"[{args.candidate}] seed {preset.train.seed}: full run", flush=True)
        candidates.append(time_run(preset, dataset, log))
    reference = references[0]
    reference_full = extrapolate_runs(references, full_epochs)

    accuracies = [c.test_accuracy for c in candidates]
    mean_accuracy = statistics.fmean(accuracies)
    fit_seconds = [c.fit_seconds for c in candidates]
    median_seconds = statistics.median(fit_seconds)
    ratio = median_seconds / reference_full
    reference_of_means = extrapolate_runs(references, full_epochs, statistics.fmean)
    ratio_of_means = statistics.fmean(fit_seconds) / reference_of_means
    reference_cpu = extrapolate_runs(references, full_epochs, field="epoch_cpu_seconds")
    median_cpu_seconds = statistics.median(sum(c.epoch_cpu_seconds) for c in candidates)
    cpu_ratio = median_cpu_seconds / reference_cpu
    summary = {
        "references": [asdict(r) for r in references],
        "reference_extrapolated_seconds": round(reference_full, 1),
        "reference_tutorial_accuracy_40_epochs": reference_preset.tutorial_test_accuracy,
        "candidates": [asdict(c) for c in candidates],
        "candidate_mean_accuracy": mean_accuracy,
        "candidate_std_accuracy": statistics.stdev(accuracies) if len(accuracies) > 1 else None,
        "candidate_median_seconds": round(median_seconds, 1),
        "ratio": round(ratio, 4),
        "ratio_of_means": round(ratio_of_means, 4),
        "reference_extrapolated_cpu_seconds": round(reference_cpu, 1),
        "candidate_median_cpu_seconds": round(median_cpu_seconds, 1),
        "cpu_ratio": round(cpu_ratio, 4),
        "targets": {"ratio": TARGET_RATIO, "accuracy": TARGET_ACCURACY},
        "met": {"ratio": ratio <= TARGET_RATIO, "accuracy": mean_accuracy >= TARGET_ACCURACY},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg_end": os.getloadavg()},
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")

    std = f" ± {100 * summary['candidate_std_accuracy']:.2f}%" if len(accuracies) > 1 else ""
    tutorial = reference_preset.tutorial_test_accuracy
    print()
    timed = " and ".join(str(r.epoch_seconds) for r in references)
    print(
        f"{REFERENCE:>10}: {reference_full:7.1f} s for {full_epochs} epochs (extrapolated from "
        f"{timed} s); test {100 * reference.test_accuracy:.2f}% after "
        f"{reference.epochs} epochs (the tutorial's {full_epochs}-epoch figure: {100 * tutorial:.2f}%)"
    )
    print(
        f"{args.candidate:>10}: {median_seconds:7.1f} s fit (median of "
        f"{[round(s, 1) for s in fit_seconds]}), "
        f"test {100 * mean_accuracy:.2f}%{std} over {len(candidates)} seed(s)"
    )
    verdict = {key: "met" if met else "NOT met" for key, met in summary["met"].items()}
    print(
        f"{'ratio':>10}: {ratio:.3f} (target <= {TARGET_RATIO:.3f}: {verdict['ratio']}; with means instead "
        f"of medians {ratio_of_means:.3f}); "
        f"accuracy target {100 * TARGET_ACCURACY:.1f}%: {verdict['accuracy']}"
    )
    print(
        f"{'CPU ratio':>10}: {cpu_ratio:.3f} (process CPU: {args.candidate} "
        f"{median_cpu_seconds:.1f} s against {REFERENCE}'s {reference_cpu:.1f} s; "
        "time spent waiting for a core does not count here)"
    )
    print(f"written: {args.out}")
    return 0 if all(summary["met"].values()) else 1  # as serve_bench.py: a missed target fails the run


if __name__ == "__main__":
    sys.exit(main())
