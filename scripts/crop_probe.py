"""Score a trained network on its validation split and on test with other served centre crops.

`python scripts/crop_probe.py models/mnist/1 --crops 28 26 25 24 23`: the export's network rebuilt with
each centre crop in turn (28: no crop), its weights unchanged, errors counted. For a network trained
with a crop-and-zoom (`--augmentor-crops`): how much the zoom it serves matters. Exploration only: a crop
picked here after the fact decides nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from client.contract import IMAGE_SIZE
from trainer.data import default_data_dir, load_dataset
from trainer.model import build_model
from trainer.restore import restore_model
from trainer.train import predict_classes, stratified_split
from trainer.tta import serving_network


def _errors(network, images: np.ndarray, labels: np.ndarray) -> int:
    return int(np.sum(predict_classes(network, images) != labels))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version_dir", type=Path, help="an exported single network, e.g. models/mnist/1")
    parser.add_argument("--crops", type=int, nargs="+", default=[28, 26, 25, 24, 23])
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    args = parser.parse_args(argv)

    restored = restore_model(args.version_dir)
    (preset,) = restored.member_presets
    dataset = load_dataset(restored.card["dataset"]["name"], args.data_dir)
    split = stratified_split(dataset.y_train, preset.train.val_size, preset.train.seed)
    val_images, val_labels = dataset.x_train[split.val], dataset.y_train[split.val]
    print(f"served crop  val errors (of {split.val.size:,})  test errors (of {len(dataset.y_test):,})")
    for crop in args.crops:
        model_cfg = preset.with_model(centre_crop=0 if crop >= IMAGE_SIZE else crop, train_crop=0).model
        network = serving_network(model_cfg, build_model(model_cfg))
        network.set_weights(restored.model.get_weights())
        val_errors = _errors(network, val_images, val_labels) if split.val.size else "-"
        test_errors = _errors(network, dataset.x_test, dataset.y_test)
        print(f"{crop:>11}  {val_errors:>24}  {test_errors:>25}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
