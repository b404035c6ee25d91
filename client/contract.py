"""The data and serving contract shared by the trainer, the servers and the clients.

Every module that needs an image size, a class count, a tensor name or the default model name
imports it from here, so training and serving cannot drift apart.
"""

from __future__ import annotations

import os
from pathlib import Path

IMAGE_SIZE = 28
"""Height and width of one input image, in pixels."""

NUM_CLASSES = 10
"""Number of output classes (digits 0-9, or the ten Fashion-MNIST classes)."""

PIXEL_MAX = 255
"""Largest raw pixel value; the exported graph divides by this."""

DIGIT_BOX = 20
"""MNIST's preprocessing scales the ink's longest side to this many pixels before centring."""

CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "mnist": tuple(str(d) for d in range(NUM_CLASSES)),
    "fashion_mnist": (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
}

# Exported SavedModel signature (what TF Serving and digits-serve expose).
SIGNATURE_NAME = "serving_default"
INPUT_NAME = "images"
"""uint8 tensor [batch, 28, 28]: raw pixels 0..255, ink bright on a dark background (as MNIST)."""
INPUT_DTYPE = "uint8"
OUTPUT_PROBABILITIES = "probabilities"
"""float32 tensor [batch, 10]: softmax class probabilities."""
OUTPUT_CLASSES = "classes"
"""int64 tensor [batch]: the most probable class."""

# Deployment defaults, the same for `make up`, docker compose and k8s.
DEFAULT_MODEL_NAME = "mnist"
DEFAULT_MODEL_BASE = "models"
GRPC_PORT = 8500
REST_PORT = 8501
GATEWAY_PORT = 8080

# Where `digits-train data` writes <dataset>.npz and every reader (trainer, digits-eval, scripts) looks.
DATA_DIR_ENV = "DIGITS_DATA_DIR"
DEFAULT_DATA_DIR = "data"


def data_dir(given: str | Path | None = None) -> Path:
    """The data folder: `given`, else $DIGITS_DATA_DIR (empty counts as unset), else ./data; a leading `~`
    expanded, as a shell would (`make DATA_DIR=~/d` exports it unexpanded)."""
    # os.path's expanduser, not Path's: `~someone` with no such user stays as written (Path's raises).
    return Path(os.path.expanduser(given or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR))


def parse_version(name: str) -> int | None:
    """A model version directory's name as its number: ASCII digits within int64, as TF Serving reads it
    (absl::SimpleAtoi), else None. str.isdigit() alone also accepts '²', '③' (int() then raises) and '١'
    (int() reads 1)."""
    if not (name.isascii() and name.isdigit()):
        return None
    version = int(name)
    return version if version < 2**63 else None
