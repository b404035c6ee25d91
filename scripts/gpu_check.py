"""The GPU check of issue 6: train presets where a GPU is lent, record the times, and verify them here.

`run` trains each PRESET:SEED with trainer.train.train_model on the Keras backend that KERAS_BACKEND
names (the lent machine has JAX and no TensorFlow), and after every run rewrites results.json and
its weights file in --out, so a run cut short by its time limit still leaves what finished.
`verify` rebuilds each network here (TensorFlow), loads the weights the GPU trained and counts the test
errors again: what the check reports must be what the weights do. With --export it also exports each
verified network as the next version, with a model card that says where it trained, so `digits-train
combine` can average networks trained there into an ensemble.

    KERAS_BACKEND=jax python scripts/gpu_check.py run fast:42 best:42 --data-dir data --out OUT
    python scripts/gpu_check.py verify OUT [--export models]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from client.contract import DEFAULT_MODEL_NAME, data_dir  # noqa: E402
from trainer.data import Dataset, load_dataset  # noqa: E402
from trainer.model import build_model  # noqa: E402
from trainer.presets import AUGMENTOR_CROPS, Preset, get_preset  # noqa: E402
from trainer.train import TrainResult, predict_classes, score_predictions, train_model  # noqa: E402
from trainer.tta import for_dataset, serving_network  # noqa: E402

RESULTS = "results.json"


def weights_file(run_index: int, runs_per_file: int) -> str:
    """weights.npz holds the first runs' weights, weights-2.npz the next ones, and so on."""
    part = run_index // runs_per_file
    return "weights.npz" if part == 0 else f"weights-{part + 1}.npz"


def accelerator() -> str:
    """The device the Keras backend computes on, in words."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return f"{device.platform}: {device.device_kind}"
    if backend == "torch":
        import torch

        return f"cuda: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "cpu"
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return "cpu"
        return f"gpu: {tf.config.experimental.get_device_details(gpus[0]).get('device_name')}"
    return backend


def parse_run(text: str) -> tuple[str, int]:
    """'best:42' -> ('best', 42)."""
    name, _, seed = text.partition(":")
    try:
        get_preset(name)
        return name, int(seed or 42)
    except (KeyError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"expected PRESET:SEED, got {text!r} ({exc})") from None


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset("mnist", args.data_dir)
    where = accelerator()
    print(f"backend {keras.backend.backend()} {keras.__version__} on {where}; {platform.node()}", flush=True)
    start, results, weights = time.perf_counter(), [], {}
    for name, seed in args.runs:
        done = [r["seconds"] for r in results if r["preset"] == name]
        left = args.deadline_s - (time.perf_counter() - start)
        if done and max(done) * 1.2 > left:  # would not finish before the deadline: leave it out
            print(f"skipping {name}:{seed}: {left:.0f}s left, a run took {max(done):.0f}s", flush=True)
            continue
        preset = run_preset({"preset": name, "seed": seed, "val_size": args.val_size,
                             "augment_policy": args.augment_policy, "augmentor_crops": args.augmentor_crops})
        print(f"--- {name} seed {seed}", flush=True)
        result = train_model(preset, dataset, args.limit_train, log=lambda line: print(
            f"[{time.perf_counter() - start:6.1f} s] {line}", flush=True))
        epochs = result.epoch_seconds
        float32_errors = result.test_errors
        if args.half_weights:
            result = with_half_weights(result, dataset)
        results.append({
            "preset": name, "seed": seed, "backend": keras.backend.backend(), "device": where,
            "seconds": round(result.seconds, 2), "first_epoch_seconds": round(epochs[0], 2),
            "median_epoch_seconds": round(statistics.median(epochs[1:] or epochs), 3),
            "best_epoch": result.best_epoch, "val_accuracy": result.val_accuracy,
            "test_accuracy": result.test_accuracy.value, "test_errors": result.test_errors,
            "val_size": result.val_size, "train_size": result.train_size, "keras_version": keras.__version__,
            "epoch_seconds": [round(t, 3) for t in epochs], "history": result.history,
            "weights_dtype": "float16" if args.half_weights else "float32",
            "float32_test_errors": float32_errors,
            "augment_policy": preset.train.augment_policy, "augmentor_crops": args.augmentor_crops,
        })
        if (len(results) - 1) % args.runs_per_file == 0:
            weights = {}
        for i, array in enumerate(result.model.get_weights()):
            weights[f"{name}-{seed}/{i:03d}"] = _half(array) if args.half_weights else array  # exact: rounded
        weights[f"{name}-{seed}/predictions"] = result.test_predictions
        (out / RESULTS).write_text(json.dumps(results, indent=2) + "\n")
        np.savez(out / weights_file(len(results) - 1, args.runs_per_file), **weights)
    for r in results:
        print(f"{r['preset']}:{r['seed']}  fit {r['seconds']:.1f}s (first epoch "
              f"{r['first_epoch_seconds']:.1f}s, then {r['median_epoch_seconds']:.2f}s median)  "
              f"test {r['test_accuracy']:.2%}, "
              f"{r['test_errors']} errors  [{r['device']}]")
    return 0 if results else 1


def with_half_weights(result: TrainResult, dataset: Dataset) -> TrainResult:
    """`result` with its network's weights rounded to float16 and its test score measured again on them.

    Half the bytes to bring back (the device tool returns files of at most 16 MiB, 64 MiB in all: one
    `resnet` network is 19 MB in float32); what is recorded and verified is the rounded network.
    """
    result.model.set_weights([_half(w) for w in result.model.get_weights()])
    predictions = predict_classes(result.model, dataset.x_test)
    accuracy, errors = score_predictions(predictions, dataset.y_test)
    return replace(result, test_accuracy=accuracy, test_errors=errors, test_predictions=predictions)


def _half(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float16) if np.issubdtype(array.dtype, np.floating) else array


def run_preset(record: dict) -> Preset:
    """The preset a run trains, from its record: the named one with its seed and hold-out, and the
    augmentation and crops `run` was given (absent from records written before those options)."""
    preset = get_preset(record["preset"]).with_overrides(  # absent or None: the preset's own
        seed=record["seed"], augment_policy=record.get("augment_policy"), val_size=record.get("val_size"))
    return preset.with_model(**AUGMENTOR_CROPS) if record.get("augmentor_crops") else preset


def verify(args: argparse.Namespace) -> int:
    out = Path(args.out)
    results = json.loads((out / RESULTS).read_text())
    stored = {}
    for path in sorted(out.glob("weights*.npz")):
        stored.update(np.load(path))
    dataset = load_dataset("mnist", args.data_dir)
    failed = 0
    print(f"{'run':<10} {'device':<22} {'fit s':>7} {'epoch s':>8} {'errors there':>12} {'here':>5} "
          f"{'same predictions':>16}")
    for r in results:
        key = f"{r['preset']}-{r['seed']}"
        preset = for_dataset(run_preset(r), dataset.name)
        model = serving_network(preset.model, build_model(preset.model))
        model.set_weights([_widened(stored[f"{key}/{i:03d}"]) for i in range(len(model.weights))])
        predictions = predict_classes(model, dataset.x_test)
        errors = int(np.sum(predictions != dataset.y_test))
        agree = int(np.sum(predictions == stored[f"{key}/predictions"]))
        failed += errors != r["test_errors"]
        print(f"{key:<10} {r['device'][:22]:<22} {r['seconds']:>7.1f} {r['median_epoch_seconds']:>8.2f} "
              f"{r['test_errors']:>12} {errors:>5} {agree:>10}/{len(predictions)}")
        if args.export and errors == r["test_errors"]:
            exported = export_run(r, model, preset, predictions, dataset, args.export, args.model_name)
            print(f"{'':<10} exported: {exported}")
    return 1 if failed else 0


def _widened(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float32) if array.dtype == np.float16 else array


def export_run(
    record: dict, model: keras.Model, preset: Preset, predictions: np.ndarray, dataset: Dataset,
    models_dir: str, model_name: str,
) -> Path:
    """Export a verified network as the next version, its card saying where and how it trained."""
    from trainer.export import export_model
    from trainer.report import model_card

    accuracy, errors = score_predictions(predictions, dataset.y_test)
    result = TrainResult(
        model=model, preset=preset, dataset=dataset.name, history=record["history"],
        best_epoch=record["best_epoch"], val_accuracy=record["val_accuracy"],
        test_accuracy=accuracy, test_errors=errors, test_predictions=predictions,
        train_size=record["train_size"], val_size=record["val_size"], seconds=record["seconds"],
        epoch_seconds=record["epoch_seconds"],
    )
    trained_on = {key: record[key] for key in ("backend", "device", "keras_version")}
    card = {**model_card(result, dataset), "trained_on": trained_on}
    return export_model(model, models_dir, model_name, card, warmup_images=dataset.x_test)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("run", help="train PRESET:SEED runs on this machine's backend")
    train.add_argument("runs", nargs="+", type=parse_run, metavar="PRESET:SEED")
    train.add_argument("--out", required=True, help="folder for results.json and the weights files")
    train.add_argument("--deadline-s", type=float, default=float("inf"),
                       help="start no run likely to end past this many seconds")
    train.add_argument("--limit-train", type=int, help="train on this many images only (a rehearsal)")
    train.add_argument("--val-size", type=int, help="the hold-out (default: the preset's; 0 for a final fit)")
    train.add_argument("--augment-policy", metavar="NAME",
                       help="a named augmentation for every run (as `digits-train train --augment-policy`)")
    train.add_argument("--augmentor-crops", action="store_true",
                       help="every run crops as `digits-train train --augmentor-crops`")
    train.add_argument("--half-weights", action="store_true",
                       help="round each trained network's weights to float16, score it again, and keep "
                            "those (for networks too big to bring back in float32)")
    train.add_argument("--runs-per-file", type=int, default=6,
                       help="runs per weights file (the device tool returns files of at most 16 MiB; "
                            "six `best` networks take about 9 MiB)")
    check = commands.add_parser("verify", help="re-score the weights a `run` wrote, here")
    check.add_argument("out", help="the folder `run` wrote")
    check.add_argument("--export", metavar="MODELS_DIR", help="export each verified network under it")
    check.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    for command in (train, check):
        command.add_argument("--data-dir", default=str(data_dir()),
                             help="folder with mnist.npz (default: $DIGITS_DATA_DIR or data)")
    args = parser.parse_args(argv)
    return run(args) if args.command == "run" else verify(args)


if __name__ == "__main__":
    sys.exit(main())
