"""Labelled images to evaluate on: a named dataset, any mnist.npz-layout file, or a folder plus a CSV.

The client never imports the trainer, so it reads the Keras `mnist.npz` layout itself
(x_train, y_train, x_test, y_test; images uint8 [N, 28, 28], labels [N]).
"""

from __future__ import annotations

import csv
import tokenize
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from client import contract
from client.preprocess import ImageLimits, prepare_image

DATA_DIR_ENV = contract.DATA_DIR_ENV
SPLITS = ("test", "train")
# What a damaged npz raises from inside numpy and zipfile: a bad zip structure, a bad deflate stream, a
# mangled .npy header (tokenize and ast run on it), a compression method mangled into an unknown one.
# The same tuple as trainer/data.py's NPZ_DECODE_ERRORS, repeated because the client never imports it.
NPZ_DECODE_ERRORS = (
    ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, tokenize.TokenError, SyntaxError,
    NotImplementedError,
)


class DataError(ValueError):
    """The evaluation data cannot be read or does not fit the model's input."""


@dataclass(frozen=True)
class LabelledImages:
    """Images with their true classes."""

    images: np.ndarray  # uint8 [N, 28, 28], ink bright on black
    labels: np.ndarray  # int64 [N]
    class_names: tuple[str, ...]
    source: str  # where they came from, for reports

    def head(self, count: int | None) -> LabelledImages:
        """The first `count` images (all when None)."""
        if count is None or count >= len(self.labels):
            return self
        return LabelledImages(self.images[:count], self.labels[:count], self.class_names, self.source)


def default_data_dir() -> Path:
    """$DIGITS_DATA_DIR, else ./data: contract.data_dir's rule, the trainer's too."""
    return contract.data_dir()


def load_named(dataset: str, split: str, data_dir: Path) -> LabelledImages:
    """`<data_dir>/<dataset>.npz` (written by `digits-train data`)."""
    path = contract.data_dir(data_dir) / f"{dataset}.npz"
    if not path.is_file():
        raise DataError(f"{path} not found: run `make data` (or pass --data-dir / --npz)")
    return load_npz(path, split, contract.CLASS_NAMES[dataset])


def load_npz(path: Path, split: str, class_names: tuple[str, ...]) -> LabelledImages:
    """x_<split> and y_<split> from an npz in the Keras mnist.npz layout."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a .npy file: np.load gives its one array
            raise DataError(
                f"cannot read {path}: it holds one array of shape {list(loaded.shape)} (a .npy file), not an "
                f".npz with x_{split} and y_{split}"
            )
        with loaded as archive:
            keys = (f"x_{split}", f"y_{split}")
            missing = [k for k in keys if k not in archive.files]
            if missing:
                raise DataError(f"{path} has no {', '.join(missing)} (it has {', '.join(archive.files)})")
            images, labels = archive[keys[0]], archive[keys[1]]
    except DataError:
        raise
    except OSError as err:  # missing, a directory, no permission: the file itself is fine or absent
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None
    except NPZ_DECODE_ERRORS as err:
        raise DataError(
            f"cannot read {path}: the file is damaged or not an .npz ({_error_name(err)}: {err}); "
            "copy or download it again"
        ) from None
    return _checked(images, labels, class_names, f"{path} ({split})")


def load_image_folder(
    folder: Path,
    labels_csv: Path,
    class_names: tuple[str, ...],
    progress: Callable[[int, int], None] | None = None,
    limit: int | None = None,
) -> LabelledImages:
    """Pictures named in a CSV of `filename,label` rows (header optional), MNIST-preprocessed.

    Only the first `limit` rows are read, when given. `progress(done, total)` is called after each
    picture: decoding thousands of photos takes a while.
    """
    folder, labels_csv = Path(folder), Path(labels_csv)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a directory")
    try:
        # utf-8-sig: Excel's "CSV UTF-8" starts with a byte order mark, no part of the first file's name.
        with labels_csv.open(newline="", encoding="utf-8-sig") as handle:
            rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {labels_csv}: {err}") from None
    if rows and not rows[0][-1].strip().lstrip("-").isdigit():
        rows = rows[1:]  # a header row
    if not rows:
        raise DataError(f"{labels_csv} lists no images")
    rows = rows[:limit]
    images, labels = [], []
    for number, row in enumerate(rows, start=1):
        if len(row) < 2:
            raise DataError(f"{labels_csv} row {number}: expected 'filename,label', got {row}")
        name, label = row[0].strip(), row[-1].strip()
        try:
            labels.append(int(label))
            images.append(prepare_image((folder / name).read_bytes(), ImageLimits()))
        except ValueError as err:
            raise DataError(f"{labels_csv} row {number} ({name}): {err}") from None
        except OSError as err:
            raise DataError(f"cannot read {folder / name}: {err.strerror or err}") from None
        if progress:
            progress(number, len(rows))
    return _checked(np.stack(images), np.asarray(labels), class_names, f"{folder} ({labels_csv.name})")


def _checked(
    images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...], source: str
) -> LabelledImages:
    side = contract.IMAGE_SIZE
    if images.ndim != 3 or images.shape[1:] != (side, side):
        raise DataError(
            f"{source}: images have shape {list(images.shape)}, the model takes [N, {side}, {side}]"
        )
    if images.dtype != np.uint8:
        raise DataError(f"{source}: images are {images.dtype}, not uint8 pixels 0..{contract.PIXEL_MAX}")
    if labels.shape != (len(images),):
        raise DataError(f"{source}: {len(images)} images but labels of shape {list(labels.shape)}")
    if len(labels) == 0:
        raise DataError(f"{source}: no images")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= len(class_names):
        raise DataError(f"{source}: labels must be integers 0..{len(class_names) - 1}")
    return LabelledImages(np.ascontiguousarray(images), labels.astype(np.int64), class_names, source)


def _error_name(err: BaseException) -> str:
    """`ValueError`, but `zlib.error` and `tokenize.TokenError`: bare, those names say little."""
    kind = type(err)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
