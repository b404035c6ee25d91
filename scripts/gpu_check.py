"""The GPU check of issue 6: train presets where a GPU is lent, record the times, and verify them here.

`run` trains each PRESET:SEED with trainer.train.train_model on the Keras backend that KERAS_BACKEND
names (the lent machine has JAX and no TensorFlow), and after every run rewrites results.json and
weights.npz in --out, so a run cut short by its time limit still leaves what finished.
`verify` rebuilds each network here (TensorFlow), loads the weights the GPU trained and counts the test
errors again: what the check reports must be what the weights do.

    KERAS_BACKEND=jax python scripts/gpu_check.py run fast:42 best:42 --data-dir data --out OUT
    python scripts/gpu_check.py verify OUT
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import keras
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.data import load_dataset  # noqa: E402
from trainer.model import build_model  # noqa: E402
from trainer.presets import get_preset  # noqa: E402
from trainer.train import predict_classes, train_model  # noqa: E402
from trainer.tta import for_dataset, serving_network  # noqa: E402

RESULTS, WEIGHTS = "results.json", "weights.npz"


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
        preset = get_preset(name).with_overrides(seed=seed)
        print(f"--- {name} seed {seed}", flush=True)
        result = train_model(preset, dataset, args.limit_train, log=lambda line: print(line, flush=True))
        epochs = result.epoch_seconds
        results.append({
            "preset": name, "seed": seed, "backend": keras.backend.backend(), "device": where,
            "seconds": round(result.seconds, 2), "first_epoch_seconds": round(epochs[0], 2),
            "median_epoch_seconds": round(statistics.median(epochs[1:] or epochs), 3),
            "best_epoch": result.best_epoch, "val_accuracy": result.val_accuracy,
            "test_accuracy": result.test_accuracy.value, "test_errors": result.test_errors,
        })
        for i, array in enumerate(result.model.get_weights()):
            weights[f"{name}-{seed}/{i:03d}"] = array
        weights[f"{name}-{seed}/predictions"] = result.test_predictions
        (out / RESULTS).write_text(json.dumps(results, indent=2) + "\n")
        np.savez(out / WEIGHTS, **weights)
    print(json.dumps(results, indent=2))
    return 0 if results else 1


def verify(args: argparse.Namespace) -> int:
    out = Path(args.out)
    results = json.loads((out / RESULTS).read_text())
    stored = np.load(out / WEIGHTS)
    dataset = load_dataset("mnist", args.data_dir)
    failed = 0
    print(f"{'run':<10} {'device':<22} {'fit s':>7} {'epoch s':>8} {'errors there':>12} {'here':>5} "
          f"{'same predictions':>16}")
    for r in results:
        key = f"{r['preset']}-{r['seed']}"
        preset = for_dataset(get_preset(r["preset"]), dataset.name)
        model = serving_network(preset.model, build_model(preset.model))
        model.set_weights([stored[f"{key}/{i:03d}"] for i in range(len(model.weights))])
        predictions = predict_classes(model, dataset.x_test)
        errors = int(np.sum(predictions != dataset.y_test))
        agree = int(np.sum(predictions == stored[f"{key}/predictions"]))
        failed += errors != r["test_errors"]
        print(f"{key:<10} {r['device'][:22]:<22} {r['seconds']:>7.1f} {r['median_epoch_seconds']:>8.2f} "
              f"{r['test_errors']:>12} {errors:>5} {agree:>10}/{len(predictions)}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("run", help="train PRESET:SEED runs on this machine's backend")
    train.add_argument("runs", nargs="+", type=parse_run, metavar="PRESET:SEED")
    train.add_argument("--out", required=True, help="folder for results.json and weights.npz")
    train.add_argument("--deadline-s", type=float, default=float("inf"),
                       help="start no run likely to end past this many seconds")
    train.add_argument("--limit-train", type=int, help="train on this many images only (a rehearsal)")
    check = commands.add_parser("verify", help="re-score the weights a `run` wrote, here")
    check.add_argument("out", help="the folder `run` wrote")
    for command in (train, check):
        command.add_argument("--data-dir", default="data")
    args = parser.parse_args(argv)
    return run(args) if args.command == "run" else verify(args)


if __name__ == "__main__":
    sys.exit(main())
