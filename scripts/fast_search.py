"""A cheaper `fast`? Screen cheaper variants on validation, then confirm the best against `fast` itself.

    .venv/bin/python scripts/fast_search.py screen    # 16 variants x seeds 42, 43
    .venv/bin/python scripts/fast_search.py confirm   # each family's best and `fast`, seeds 44-48
    .venv/bin/python scripts/fast_search.py precision # `fast` in float32 and in bfloat16, seeds 44-48
    .venv/bin/python scripts/fast_search.py steps     # `fast` at 1 and 64 training steps per call
    .venv/bin/python scripts/fast_search.py stride-screen   # 16 strided variants x seeds 42, 43
    .venv/bin/python scripts/fast_search.py stride-confirm  # each strided family's best and `fast`
    .venv/bin/python scripts/fast_search.py stride5-screen  # the strided families for 5 epochs, 4 knobs
    .venv/bin/python scripts/fast_search.py stride5-confirm
    .venv/bin/python scripts/fast_search.py trim-screen     # fast without its outer 1 or 2 pixels, 4 knobs
    .venv/bin/python scripts/fast_search.py trim-confirm
    .venv/bin/python scripts/fast_search.py trim-speed     # fast and the t1 survivor, timed in turn
    .venv/bin/python scripts/fast_search.py trim3-screen    # t1 for 3 epochs, 4 knobs
    .venv/bin/python scripts/fast_search.py trim3-confirm   # its best and `fast` on fresh seeds 49-53

Two families cost less per image than `fast`: its own network trained 3 epochs instead of 4, and a
narrower one (48 filters in the second convolution, dense 128) trained 4. The `stride-` phases search two
more, where one convolution with stride 2 replaces the second convolution and its pooling: `s2` keeps its
4x4 kernel, `k3s2` has a 3x3 one; the `stride5-` phases train them 5 epochs. The `trim-` phases search
`fast`'s network on the central 26x26 (`t1`) or 24x24 (`t2`) pixels, a plain crop; the `trim3-` phases
train `t1` 3 epochs. Each family is tried with settings of the knobs that cost no time (optimiser, peak
rate, label smoothing). Every run goes through the trainer (`train_model`, per-epoch validation included);
only validation accuracy and fit seconds are printed: test accuracies go to the JSON, to be read after the
decision (docs/results.md, "A cheaper `fast`?", "`fast` in bfloat16?", "Strided convolutions for a cheaper
`fast`?", "Strided `fast` for five epochs?", "A trimmed `fast`?" and "A trimmed `fast` for three
epochs?"). The `steps` phase changes no arithmetic, so it prints whether the results are identical instead
(docs/results.md, "Several training steps per call?"). Results in bench/results/fast_search_<phase>.json.

`fast` above is the preset as every search compared against it (the whole image, 4 epochs at peak 0.03);
since 6 December the preset is the `trim3-` search's survivor, `t1e3-k1`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import NamedTuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from trainer.presets import Preset, get_preset  # noqa: E402

RESULTS_DIR = REPO_ROOT / "bench" / "results"
SCREEN_SEEDS = (42, 43)
CONFIRM_SEEDS = (44, 45, 46, 47, 48)
KNOBS = {  # name: TrainConfig overrides; k0 is fast's own setting
    "k0": {},
    "k1": {"learning_rate": 0.02},
    "k2": {"learning_rate": 0.045},
    "k3": {"label_smoothing": 0.1},
    "k4": {"label_smoothing": 0.0},
    "k5": {"optimizer": "adam", "learning_rate": 0.003},
    "k6": {"optimizer": "adam", "learning_rate": 0.005},
    "k7": {"optimizer": "adam", "learning_rate": 0.01},
}


def searched_fast() -> Preset:
    """`fast` as every search here compared against it: the whole 28x28 image, 4 epochs at peak 0.03, in
    float32 (the preset until the trimmed three-epoch search replaced it)."""
    untrimmed = get_preset("fast").with_model(trim_border=0)
    return untrimmed.with_overrides(epochs=4, learning_rate=0.03, precision="float32")


def family(name: str) -> Preset:
    """`three`: fast's network for 3 epochs; `narrow`: 8/48 filters and dense 128 for fast's 4;
    `s2` and `k3s2`: fast's second convolution (4x4, or 3x3) with stride 2 instead of pooling after it;
    `t1` and `t2`: fast's network with 1 or 2 border pixels trimmed from each side of its input;
    `<family>e<N>`, such as `s2e5`: the family trained N epochs."""
    base, suffix, epochs = name.rpartition("e")
    if suffix and epochs.isdigit():
        return family(base).with_overrides(epochs=int(epochs))
    fast = searched_fast()
    if name in ("t1", "t2"):
        return fast.with_model(trim_border=int(name[1]))
    if name == "three":
        return fast.with_overrides(epochs=3)
    first, second = fast.model.conv_layers
    strided = replace(second, strides=2, pool_size=0)
    second = {
        "narrow": replace(second, filters=48), "s2": strided, "k3s2": replace(strided, kernel_size=3),
    }[name]
    dense = (128,) if name == "narrow" else fast.model.dense_units
    return fast.with_model(conv_layers=(first, second), dense_units=dense)


def candidate(name: str) -> Preset:
    """`fast` (the preset), `fast-<precision>` such as `fast-bfloat16` (the searched `fast` in that
    precision), or `<family>-<knob>` such as `three-k5`."""
    if name == "fast":
        return get_preset("fast")
    if name.startswith("fast-"):
        return searched_fast().with_overrides(precision=name.removeprefix("fast-"))
    family_name, knob = name.split("-")
    return family(family_name).with_overrides(**KNOBS[knob])


def run(name: str, seed: int, dataset) -> dict:
    """Train one candidate with one seed; print its validation accuracy and seconds (never its test)."""
    from trainer.train import train_model

    cpu = time.process_time()
    result = train_model(candidate(name).with_overrides(seed=seed), dataset, log=lambda message: None)
    row = {"candidate": name, "seed": seed, "val": result.val_accuracy,
           "fit_seconds": round(result.seconds, 2),
           "cpu_seconds": round(time.process_time() - cpu, 2), "best_epoch": result.best_epoch,
           "test": result.test_accuracy.value}
    print(f"{name:>10} seed {seed}: val {100 * row['val']:.2f}%  fit {row['fit_seconds']:5.1f} s  "
          f"cpu {row['cpu_seconds']:5.1f} s  epoch {row['best_epoch']}", flush=True)
    return row


def rows_of(rows: list[dict], name: str) -> list[dict]:
    """The rows of candidate `name`."""
    return [row for row in rows if row["candidate"] == name]


def median_fit(rows: list[dict]) -> float:
    """The median fit wall seconds of `rows`."""
    return statistics.median(row["fit_seconds"] for row in rows)


def timing(rows: list[dict]) -> str:
    """The median fit wall and process CPU seconds of `rows`, as printed after each phase."""
    return (f"median fit {median_fit(rows):.1f} s  "
            f"median cpu {statistics.median(row['cpu_seconds'] for row in rows):.1f} s")


class Search(NamedTuple):
    """The families a search screens, the knob settings it tries on each, and the seeds that confirm."""

    families: tuple[str, ...]
    knobs: tuple[str, ...]
    confirm_seeds: tuple[int, ...] = CONFIRM_SEEDS


RMSPROP_KNOBS = ("k0", "k1", "k2", "k3")  # RMSprop with smoothing: Adam never won a screen
SEARCHES = {  # phase prefix: its search
    "": Search(("three", "narrow"), tuple(KNOBS)),
    "stride-": Search(("s2", "k3s2"), tuple(KNOBS)),
    "stride5-": Search(("s2e5", "k3s2e5"), RMSPROP_KNOBS),
    "trim-": Search(("t1", "t2"), RMSPROP_KNOBS),
    "trim3-": Search(("t1e3",), RMSPROP_KNOBS, confirm_seeds=(49, 50, 51, 52, 53)),  # seeds no search used
}


def screen(dataset, prefix: str = "") -> list[dict]:
    """Every variant of the search's families on the screening seeds, seed by seed."""
    families, knobs, _ = SEARCHES[prefix]
    names = [f"{fam}-{knob}" for fam in families for knob in knobs]
    rows = [run(name, seed, dataset) for seed in SCREEN_SEEDS for name in names]
    print()
    for name in names:
        print(f"{name:>10}: mean val {100 * statistics.fmean(r['val'] for r in rows_of(rows, name)):.3f}%")
    return rows


def best_of_screen(fam: str, prefix: str = "") -> str:
    """The family's variant with the highest mean screening validation accuracy (the first on a tie)."""
    rows = json.loads((RESULTS_DIR / f"fast_search_{prefix}screen.json").read_text())
    names = [f"{fam}-{knob}" for knob in KNOBS if rows_of(rows, f"{fam}-{knob}")]
    if not names:
        raise SystemExit(f"fast_search: the screen has no {fam} variant; run {prefix}screen first")
    return max(names, key=lambda n: statistics.fmean(r["val"] for r in rows_of(rows, n)))


def confirm(dataset, prefix: str = "") -> list[dict]:
    """`fast` and each family's survivor, in turn for each confirming seed."""
    search = SEARCHES[prefix]
    names = ["fast-float32", *(best_of_screen(fam, prefix) for fam in search.families)]
    rows = [run(name, seed, dataset) for seed in search.confirm_seeds for name in names]
    print()
    for name in names:
        mine = rows_of(rows, name)
        print(f"{name:>10}: mean val {100 * statistics.fmean(r['val'] for r in mine):.3f}%  {timing(mine)}")
    return rows


def precision(dataset) -> list[dict]:
    """`fast` in float32 and in mixed bfloat16, in turn for each confirming seed."""
    names = ["fast-float32", "fast-bfloat16"]
    rows = [run(name, seed, dataset) for seed in CONFIRM_SEEDS for name in names]
    print()
    for name in names:
        mine = rows_of(rows, name)
        print(f"{name:>13}: mean val {100 * statistics.fmean(r['val'] for r in mine):.3f}%  {timing(mine)}")
    return rows


STEPS_ROUNDS = 5
STEPS_SEED = 42
SPEED_ROUNDS = 6


def trim_speed(dataset) -> list[dict]:
    """`fast` and the screen's best `t1` variant on one seed, in turn: time only (docs/results.md, "A trimmed
    `fast`, timed on its own")."""
    names = ["fast-float32", best_of_screen("t1", "trim-")]
    rows = [{**run(name, STEPS_SEED, dataset), "round": round_}
            for round_ in range(SPEED_ROUNDS) for name in names]
    print()
    for name in names:
        print(f"{name:>12}: {timing(rows_of(rows, name))}")
    fast, trimmed = (median_fit(rows_of(rows, name)) for name in names)
    print(f"wall ratio {trimmed / fast:.3f}")
    return rows


def steps(dataset) -> list[dict]:
    """`fast` (seed 42) at 1 and 64 training steps per call, in turn, 5 rounds: same results, less time?"""
    import trainer.model
    from trainer.train import train_model

    rows = []
    for round_ in range(STEPS_ROUNDS):
        for n in (1, 64):
            trainer.model.STEPS_PER_EXECUTION = n
            cpu = time.process_time()
            result = train_model(searched_fast().with_overrides(seed=STEPS_SEED), dataset, log=lambda m: None)
            rows.append({
                "candidate": f"steps{n}", "round": round_, "fit_seconds": round(result.seconds, 2),
                "cpu_seconds": round(time.process_time() - cpu, 2),
                "fit_cpu_seconds": round(sum(result.epoch_cpu_seconds), 2),
                "val_history": result.history["val_accuracy"],
                "predictions_sha256": hashlib.sha256(result.test_predictions.tobytes()).hexdigest(),
                "test": result.test_accuracy.value,
            })
            print(f"round {round_} steps {n:>2}: fit {rows[-1]['fit_seconds']:5.1f} s  "
                  f"fit cpu {rows[-1]['fit_cpu_seconds']:5.1f} s", flush=True)
    one, many = rows_of(rows, "steps1"), rows_of(rows, "steps64")
    same = all(a["val_history"] == b["val_history"] and a["predictions_sha256"] == b["predictions_sha256"]
               for a, b in zip(one, many, strict=True))
    print(f"\nidentical validation histories and test predictions in every round: {same}")
    for name, mine in (("steps1", one), ("steps64", many)):
        print(f"{name:>7}: median fit {statistics.median(r['fit_seconds'] for r in mine):.2f} s  median cpu "
              f"{statistics.median(r['fit_cpu_seconds'] for r in mine):.2f} s")
    return rows


PHASES = {"precision": precision, "steps": steps, "trim-speed": trim_speed} | {
    f"{prefix}{name}": partial(phase, prefix=prefix)
    for prefix in SEARCHES for name, phase in (("screen", screen), ("confirm", confirm))
}


def main(argv: list[str] | None = None) -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("phase", choices=sorted(PHASES))
    parser.add_argument("--data-dir", default=os.environ.get("DIGITS_DATA_DIR") or str(REPO_ROOT / "data"))
    args = parser.parse_args(argv)
    from trainer.data import load_dataset

    dataset = load_dataset("mnist", args.data_dir)
    rows = PHASES[args.phase](dataset)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"fast_search_{args.phase}.json"
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
