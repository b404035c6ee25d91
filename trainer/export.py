"""Export a Keras model as a versioned TF Serving SavedModel, atomically, with warmup and a model card."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from client.contract import (
    IMAGE_SIZE,
    INPUT_NAME,
    NUM_CLASSES,
    OUTPUT_CLASSES,
    OUTPUT_PROBABILITIES,
    SIGNATURE_NAME,
    parse_version,
)
from trainer.model import to_model_input

ASSETS_EXTRA = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
MODEL_CARD_FILE = "model_card.json"
WARMUP_BATCH_SIZES = (1, 2, 4, 8, 16)
_TMP_PREFIX = ".export-"  # not all digits, so TF Serving's version scan ignores it
STALE_EXPORT_S = 3600.0  # an export's temp folder older than this is a killed export's: removed


INPUT_SPEC = tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE], tf.uint8, name=INPUT_NAME)


def serving_archive(model: keras.Model) -> keras.export.ExportArchive:
    """The model behind the serving signature: raw uint8 pixels in, probabilities + class out.

    Keras's ExportArchive tracks the Keras 3 variables the way TF1-style loaders (TF Serving,
    `saved_model_cli run`) need; a plain tf.Module holding the model does not restore there.
    """

    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        # images uint8 [batch,28,28] -> probabilities float32 [batch,10], classes int64 [batch]
        probabilities = model(to_model_input(images), training=False)
        return {
            OUTPUT_PROBABILITIES: tf.ensure_shape(probabilities, [None, NUM_CLASSES]),
            OUTPUT_CLASSES: tf.argmax(probabilities, axis=-1, output_type=tf.int64),
        }

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE_NAME, serve, input_signature=[INPUT_SPEC])
    return archive


def existing_versions(model_base: str | Path) -> list[int]:
    """Integer version directories under models/<name>, sorted."""
    base = Path(model_base)
    if not base.is_dir():
        return []
    versions = (parse_version(p.name) for p in base.iterdir() if p.is_dir())
    return sorted(version for version in versions if version is not None)


def next_version(model_base: str | Path) -> int:
    """One more than the highest version name taken (1 for an empty or missing directory).

    A file or a link with a version's name counts as taken too: a version cannot be renamed onto it.
    """
    base = Path(model_base)
    taken = [parse_version(p.name) for p in base.iterdir()] if base.is_dir() else []
    versions = sorted(version for version in taken if version is not None)
    return versions[-1] + 1 if versions else 1


def remove_stale_exports(model_base: Path, older_than_s: float = STALE_EXPORT_S) -> list[Path]:
    """Delete the temp folders of exports killed before they finished (SIGKILL, a power cut), once they
    are older than `older_than_s`: a recent one may be an export in progress in another process."""
    removed = []
    now = time.time()
    for entry in model_base.iterdir() if model_base.is_dir() else ():
        try:
            stale = entry.name.startswith(_TMP_PREFIX) and now - entry.lstat().st_mtime > older_than_s
        except OSError:  # gone meanwhile
            continue
        if stale and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def export_model(
    model: keras.Model,
    models_dir: str | Path,
    model_name: str,
    card: Mapping[str, Any] | None = None,
    warmup_images: np.ndarray | None = None,
    verify: bool = True,
) -> Path:
    """Write models_dir/model_name/<next version>/ atomically and return that path.

    The SavedModel is built in a hidden temp dir next to the versions and renamed into place last,
    so a server polling the directory sees either nothing or a complete version. Temp dirs that killed
    exports left over an hour ago are removed first.
    """
    model_base = Path(models_dir) / model_name
    model_base.mkdir(parents=True, exist_ok=True)
    remove_stale_exports(model_base)
    tmp_dir = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=model_base))
    try:
        serving_archive(model).write_out(str(tmp_dir), verbose=False)
        images = _warmup_images(warmup_images)
        if verify:
            check_export(tmp_dir, model, images)
        extra = tmp_dir / ASSETS_EXTRA
        extra.mkdir()
        write_warmup_requests(extra / WARMUP_FILE, model_name, images)
        return _publish(tmp_dir, model_base, model_name, dict(card or {}))
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _publish(tmp_dir: Path, model_base: Path, model_name: str, card: dict[str, Any]) -> Path:
    """Rename the finished temp dir to the next free version; retry if a concurrent export took it."""
    for _ in range(100):
        version = next_version(model_base)
        card_path = tmp_dir / ASSETS_EXTRA / MODEL_CARD_FILE
        full_card = {**card, "model_name": model_name, "version": version}
        card_path.write_text(json.dumps(full_card, indent=2) + "\n")
        os.chmod(tmp_dir, 0o755)  # mkdtemp makes 0700; servers may run as another user
        target = model_base / str(version)
        try:
            os.rename(tmp_dir, target)  # atomic on one filesystem; fails if target exists and is not empty
            return target
        except OSError:
            if not target.exists():
                raise
    raise RuntimeError(f"could not claim a version directory under {model_base}")


def check_export(export_dir: str | Path, model: keras.Model, images: np.ndarray) -> None:
    """Reload the SavedModel and make sure its signature reproduces the Keras model's predictions."""
    loaded = tf.saved_model.load(str(export_dir))
    outputs = loaded.signatures[SIGNATURE_NAME](**{INPUT_NAME: tf.constant(images)})
    expected = model.predict(to_model_input(images), verbose=0)
    got = outputs[OUTPUT_PROBABILITIES].numpy()
    if not np.allclose(got, expected, atol=1e-5):
        worst = np.abs(got - expected).max()
        raise RuntimeError(f"exported model disagrees with Keras: max |diff| {worst:.2e}")
    if not np.array_equal(outputs[OUTPUT_CLASSES].numpy(), expected.argmax(axis=-1)):
        raise RuntimeError("exported classes disagree with the Keras model's argmax")


def write_warmup_requests(
    path: str | Path, model_name: str, images: np.ndarray, batch_sizes: Sequence[int] = WARMUP_BATCH_SIZES
) -> Path:
    """TFRecord of PredictionLog records (one per batch size) that TF Serving replays at load time."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    with tf.io.TFRecordWriter(str(path)) as writer:
        for size in batch_sizes:
            batch = np.resize(images, (size, IMAGE_SIZE, IMAGE_SIZE)).astype(np.uint8)  # cycles the samples
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=SIGNATURE_NAME)
            )
            request.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto(batch))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return Path(path)


def read_model_card(version_dir: str | Path) -> dict[str, Any]:
    """The model card of one exported version."""
    return json.loads((Path(version_dir) / ASSETS_EXTRA / MODEL_CARD_FILE).read_text())


def _warmup_images(images: np.ndarray | None) -> np.ndarray:
    """A few uint8 [n,28,28] samples for warmup and the export check (a gradient if none given)."""
    if images is not None and len(images):
        return np.asarray(images[: max(WARMUP_BATCH_SIZES)], dtype=np.uint8)
    ramp = np.linspace(0, 255, IMAGE_SIZE * IMAGE_SIZE).reshape(IMAGE_SIZE, IMAGE_SIZE)
    return np.stack([np.roll(ramp, k, axis=1) for k in range(4)]).astype(np.uint8)
