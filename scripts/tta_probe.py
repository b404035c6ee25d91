"""Would test-time augmentation help? Score an exported ensemble's members on shifted/rotated views.

    .venv/bin/python scripts/tta_probe.py models/mnist/<version> [--data-dir data]

Rebuilds the ensemble from the version's model card, loads the exported weights, and prints each
member's errors on its own validation split (what a decision may use) and on test, per set of views
whose softmax outputs are averaged; then the whole ensemble's test errors per set of views.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.data import default_data_dir, load_dataset  # noqa: E402
from trainer.ensemble import average_models  # noqa: E402
from trainer.export import read_model_card  # noqa: E402
from trainer.model import build_model, to_model_input  # noqa: E402
from trainer.presets import ConvLayer, ModelConfig  # noqa: E402
from trainer.train import PREDICT_BATCH, stratified_split  # noqa: E402

VIEWS = ("identity", "shifts", "rotations", "shifts+rotations")
ROTATION_DEGREES = 6.0


def shifted(images: tf.Tensor, dy: int, dx: int) -> tf.Tensor:
    """Images moved by (dy, dx) pixels, filled with background (0)."""
    padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]])
    return tf.roll(padded, shift=[dy, dx], axis=[1, 2])[:, 1:-1, 1:-1, :]


def rotated(images: tf.Tensor, degrees: float) -> tf.Tensor:
    """Images rotated by exactly `degrees`, filled with background (0)."""
    turn = degrees / 360.0
    layer = keras.layers.RandomRotation((turn, turn), fill_mode="constant", fill_value=0.0)
    return layer(images, training=True)


def views(images: tf.Tensor, kind: str) -> list[tf.Tensor]:
    """The original plus the one-pixel shifts and/or the ±6° rotations that `kind` names."""
    out = [images]
    if "shifts" in kind:
        out += [shifted(images, dy, dx) for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1))]
    if "rotations" in kind:
        out += [rotated(images, sign * ROTATION_DEGREES) for sign in (-1, 1)]
    return out


def averaged_probabilities(model: keras.Model, images: tf.Tensor, kind: str) -> np.ndarray:
    """The mean softmax output of `model` over the views of `images`."""
    outputs = [model.predict(view, batch_size=PREDICT_BATCH, verbose=0) for view in views(images, kind)]
    return np.mean(outputs, axis=0)


def rebuild_members(version_dir: Path) -> tuple[list[keras.Model], dict]:
    """The members of the exported ensemble in `version_dir`, with its weights, and its model card."""
    card = read_model_card(version_dir)
    model_dict, train = card["config"]["model"], card["config"]["train"]
    config = ModelConfig(
        **{**model_dict, "conv_layers": tuple(ConvLayer(**c) for c in model_dict["conv_layers"]),
           "dense_units": tuple(model_dict["dense_units"])}
    )
    members = [build_model(config) for _ in range(train["members"])]
    combined = average_models(members)
    exported = tf.saved_model.load(str(version_dir)).variables
    if len(exported) != len(combined.variables):
        raise SystemExit(
            f"{version_dir}: {len(exported)} variables, its card's config has {len(combined.variables)}"
        )
    for source, target in zip(exported, combined.variables, strict=True):
        target.assign(source.numpy())
    return members, card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version_dir", type=Path, help="an exported ensemble, e.g. models/mnist/1")
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    args = parser.parse_args(argv)

    members, card = rebuild_members(args.version_dir)
    train = card["config"]["train"]
    dataset = load_dataset(card["dataset"]["name"], args.data_dir)
    x_test = to_model_input(dataset.x_test)
    test_probabilities = {kind: [] for kind in VIEWS}
    print("member  seed  views              val errors  test errors")
    for index, member in enumerate(members):
        seed = train["seed"] + index
        split = stratified_split(dataset.y_train, train["val_size"], seed)
        x_val, y_val = to_model_input(dataset.x_train[split.val]), dataset.y_train[split.val]
        for kind in VIEWS:
            val_errors = int(np.sum(averaged_probabilities(member, x_val, kind).argmax(1) != y_val))
            test = averaged_probabilities(member, x_test, kind)
            test_probabilities[kind].append(test)
            test_errors = int(np.sum(test.argmax(1) != dataset.y_test))
            print(f"{index:>6}  {seed:>4}  {kind:<17}  {val_errors:>10}  {test_errors:>11}", flush=True)
    for kind in VIEWS:
        errors = int(np.sum(np.mean(test_probabilities[kind], axis=0).argmax(1) != dataset.y_test))
        print(f"ensemble of {len(members)}, {kind}: {errors} test errors")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
