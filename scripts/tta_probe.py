"""Would test-time augmentation help? Score an export's members on shifted, rotated and mirrored views.

    .venv/bin/python scripts/tta_probe.py models/mnist/<version> [--data-dir data]

Rebuilds the ensemble from the version's model card and weights (trainer/restore.py), and prints each
member's errors on its own validation split (what a decision may use) and on test, per set of views
whose softmax outputs are averaged; then the whole ensemble's test errors per set of views. A member
exported mirror-averaged (trainer/tta.py) already averages its mirror in every row.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from trainer.data import default_data_dir, load_dataset
from trainer.model import to_model_input
from trainer.restore import restore_model
from trainer.train import PREDICT_BATCH, stratified_split

ROTATION_DEGREES = 6.0
SHIFTS = ((1, 0), (-1, 0), (0, 1), (0, -1))
# Which views each row averages: 0 is the image itself, 1-4 its shifts, 5-6 its rotations, 7 its mirror.
VIEWS = {
    "identity": [0], "shifts": [0, 1, 2, 3, 4], "rotations": [0, 5, 6], "shifts+rotations": list(range(7)),
    "mirror": [0, 7],
}


def shifted(images: tf.Tensor, dy: int, dx: int) -> tf.Tensor:
    """Images moved by (dy, dx) pixels, filled with background (0)."""
    padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]])
    return tf.roll(padded, shift=[dy, dx], axis=[1, 2])[:, 1:-1, 1:-1, :]


def rotated(images: tf.Tensor, degrees: float) -> tf.Tensor:
    """Images rotated by exactly `degrees`, filled with background (0)."""
    turn = degrees / 360.0
    layer = keras.layers.RandomRotation((turn, turn), fill_mode="constant", fill_value=0.0)
    return layer(images, training=True)


def all_views(images: tf.Tensor) -> list[tf.Tensor]:
    """The images, their four one-pixel shifts, their ±6° rotations and their left-right mirror, in the
    order VIEWS indexes."""
    shifts = [shifted(images, dy, dx) for dy, dx in SHIFTS]
    rotations = [rotated(images, sign * ROTATION_DEGREES) for sign in (-1, 1)]
    return [images, *shifts, *rotations, tf.reverse(images, axis=[2])]


def view_probabilities(model: keras.Model, views: list[tf.Tensor]) -> np.ndarray:
    """Softmax outputs of `model` on every view: [views, N, classes], each view predicted once."""
    return np.stack([model.predict(view, batch_size=PREDICT_BATCH, verbose=0) for view in views])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version_dir", type=Path, help="an exported ensemble, e.g. models/mnist/1")
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    args = parser.parse_args(argv)

    restored = restore_model(args.version_dir)
    dataset = load_dataset(restored.card["dataset"]["name"], args.data_dir)
    test_views = all_views(to_model_input(dataset.x_test))
    test_probabilities = {kind: [] for kind in VIEWS}
    print("member  seed  views              val errors  test errors")
    for index, (member, preset) in enumerate(zip(restored.members, restored.member_presets, strict=True)):
        seed = preset.train.seed
        split = stratified_split(dataset.y_train, preset.train.val_size, seed)
        held_out = split.val.size > 0  # a member fit on all 60k has no validation images to score
        if held_out:
            val = view_probabilities(member, all_views(to_model_input(dataset.x_train[split.val])))
        test = view_probabilities(member, test_views)
        for kind, picked in VIEWS.items():
            val_errors = (int(np.sum(val[picked].mean(axis=0).argmax(1) != dataset.y_train[split.val]))
                          if held_out else "-")
            test_probabilities[kind].append(test[picked].mean(axis=0))
            test_errors = int(np.sum(test_probabilities[kind][-1].argmax(1) != dataset.y_test))
            print(f"{index:>6}  {seed:>4}  {kind:<17}  {val_errors:>10}  {test_errors:>11}", flush=True)
    for kind in VIEWS:
        errors = int(np.sum(np.mean(test_probabilities[kind], axis=0).argmax(1) != dataset.y_test))
        print(f"ensemble of {len(restored.members)}, {kind}: {errors} test errors")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
