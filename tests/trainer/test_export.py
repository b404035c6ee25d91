"""The exported SavedModel honours the serving contract and is published atomically as the next version."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from client.contract import (
    INPUT_NAME,
    NUM_CLASSES,
    OUTPUT_CLASSES,
    OUTPUT_PROBABILITIES,
    SIGNATURE_NAME,
)
from trainer.export import (
    ASSETS_EXTRA,
    WARMUP_BATCH_SIZES,
    WARMUP_FILE,
    existing_versions,
    export_model,
    next_version,
    read_model_card,
)
from trainer.model import build_model, to_model_input
from trainer.presets import get_preset

SAVED_MODEL_CLI = Path(sys.executable).with_name("saved_model_cli")


@pytest.fixture(scope="module")
def small_model():
    """An untrained seed-best network: export mechanics do not need a trained one."""
    return build_model(get_preset("seed-best").model)


def test_fixture_exports_versions_1_and_2(mnist_model_dir):
    assert existing_versions(mnist_model_dir) == [1, 2]
    for version in (1, 2):
        card = read_model_card(mnist_model_dir / str(version))
        assert card["version"] == version and card["model_name"] == mnist_model_dir.name
        assert card["test_accuracy"] > 0.90
    assert not [p for p in mnist_model_dir.iterdir() if p.name.startswith(".")]  # no temp dir left


def test_signature_contract(mnist_model_dir):
    signature = tf.saved_model.load(str(mnist_model_dir / "2")).signatures[SIGNATURE_NAME]
    (spec,) = signature.structured_input_signature[1].values()
    assert spec.name == INPUT_NAME and spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 28, 28]
    outputs = signature.structured_outputs
    assert outputs[OUTPUT_PROBABILITIES].dtype == tf.float32
    assert outputs[OUTPUT_PROBABILITIES].shape.as_list() == [None, NUM_CLASSES]
    assert outputs[OUTPUT_CLASSES].dtype == tf.int64 and outputs[OUTPUT_CLASSES].shape.as_list() == [None]


def test_export_predicts_what_keras_predicts(tmp_path, small_model, mnist_data):
    images = mnist_data.x_test[:64]
    version_dir = export_model(small_model, tmp_path, "m", verify=False)
    outputs = tf.saved_model.load(str(version_dir)).signatures[SIGNATURE_NAME](images=tf.constant(images))
    expected = small_model.predict(to_model_input(images), verbose=0)
    np.testing.assert_allclose(outputs[OUTPUT_PROBABILITIES].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(outputs[OUTPUT_CLASSES].numpy(), expected.argmax(axis=1))


def test_trained_export_is_accurate_on_raw_pixels(mnist_model_dir, mnist_data):
    signature = tf.saved_model.load(str(mnist_model_dir / "1")).signatures[SIGNATURE_NAME]
    classes = signature(images=tf.constant(mnist_data.x_test[:1000]))[OUTPUT_CLASSES].numpy()
    assert np.mean(classes == mnist_data.y_test[:1000]) > 0.90


def test_versions_increment_and_card_is_written(tmp_path, small_model):
    card = {"preset": "seed-best", "test_accuracy": 0.5}
    first = export_model(small_model, tmp_path, "m", card)
    second = export_model(small_model, tmp_path, "m", card)
    (tmp_path / "m" / "7").mkdir()  # a gap: the next version follows the highest, not the count
    third = export_model(small_model, tmp_path, "m", card)
    assert [first.name, second.name, third.name] == ["1", "2", "8"]
    assert read_model_card(third) == {**card, "model_name": "m", "version": 8}
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1", "2", "7", "8"]


def test_next_version_counts_only_what_the_server_reads_as_versions(tmp_path):
    assert next_version(tmp_path / "missing") == 1
    # '٩' and '²' pass \d or str.isdigit(); '12\n' passes ^\d+$; none is a version the server serves.
    for name in ("1", "3", "٩", "²", "12\n", str(2**63), "v4"):
        (tmp_path / name).mkdir()
    assert existing_versions(tmp_path) == [1, 3]
    assert next_version(tmp_path) == 4


def test_concurrent_reader_never_sees_a_partial_version(tmp_path, small_model):
    base = tmp_path / "m"
    base.mkdir()
    seen_incomplete: list[str] = []
    done = threading.Event()

    def poll():
        # What a serving process does: list integer dirs, then expect a complete SavedModel in each.
        while not done.is_set():
            for entry in os.listdir(base):
                if entry.isdigit():
                    d = base / entry
                    if not ((d / "saved_model.pb").is_file() and (d / "variables").is_dir()
                            and (d / ASSETS_EXTRA / WARMUP_FILE).is_file()):
                        seen_incomplete.append(entry)

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        for _ in range(2):
            export_model(small_model, tmp_path, "m", verify=False)
    finally:
        done.set()
        reader.join()
    assert existing_versions(base) == [1, 2]
    assert seen_incomplete == []


def test_concurrent_exports_get_distinct_versions(tmp_path, small_model):
    results: list[Path] = []

    def export() -> None:
        results.append(export_model(small_model, tmp_path, "m", verify=False))

    threads = [threading.Thread(target=export) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(p.name for p in results) == ["1", "2", "3"]
    assert [read_model_card(p)["version"] for p in sorted(results)] == [1, 2, 3]
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1", "2", "3"]


def test_a_published_version_is_readable_by_a_server_running_as_another_user(tmp_path, small_model):
    version_dir = export_model(small_model, tmp_path, "m", verify=False)
    assert stat.S_IMODE(version_dir.stat().st_mode) == 0o755  # not the 0700 of the temp dir it was built in


def test_failed_export_leaves_nothing_behind(tmp_path, small_model, monkeypatch):
    import trainer.export as export

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "write_warmup_requests", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        export_model(small_model, tmp_path, "m", verify=False)
    assert list((tmp_path / "m").iterdir()) == []


def test_a_version_published_meanwhile_is_never_overwritten(tmp_path, small_model, monkeypatch):
    """Another export publishes the version this one chose: this one takes the next, the other stays."""
    import trainer.export as export

    first = export_model(small_model, tmp_path, "m", {"run": "other"}, verify=False)
    real, stale = export.next_version, iter([1])  # what this export saw before the other one published
    monkeypatch.setattr(export, "next_version", lambda base: next(stale, None) or real(base))
    second = export_model(small_model, tmp_path, "m", {"run": "this"}, verify=False)
    assert second.name == "2" and read_model_card(second) == {"run": "this", "model_name": "m", "version": 2}
    assert read_model_card(first) == {"run": "other", "model_name": "m", "version": 1}


def test_an_export_that_does_not_reproduce_keras_is_refused(tmp_path, small_model, monkeypatch):
    import trainer.export as export

    other = build_model(get_preset("seed-best").model)
    other.set_weights([w + 0.1 for w in small_model.get_weights()])
    real = export.serving_archive
    monkeypatch.setattr(export, "serving_archive", lambda model: real(other))  # the wrong graph saved
    with pytest.raises(RuntimeError, match="exported model disagrees with Keras"):
        export_model(small_model, tmp_path, "m")
    assert list((tmp_path / "m").iterdir()) == []


def test_warmup_records_parse_as_predict_requests(mnist_model_dir):
    from tensorflow_serving.apis import prediction_log_pb2

    path = mnist_model_dir / "1" / ASSETS_EXTRA / WARMUP_FILE
    batch_sizes = []
    for record in tf.data.TFRecordDataset(str(path)):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        assert request.model_spec.name == mnist_model_dir.name
        assert request.model_spec.signature_name == SIGNATURE_NAME
        images = tf.make_ndarray(request.inputs[INPUT_NAME])
        assert images.dtype == np.uint8 and images.shape[1:] == (28, 28)
        batch_sizes.append(images.shape[0])
    assert batch_sizes == list(WARMUP_BATCH_SIZES)


def test_saved_model_cli_shows_the_signature(mnist_model_dir):
    result = subprocess.run(
        [str(SAVED_MODEL_CLI), "show", "--all", "--dir", str(mnist_model_dir / "1")],
        capture_output=True, text=True, timeout=120, check=True,
    )
    text = result.stdout
    assert f"signature_def['{SIGNATURE_NAME}']" in text
    assert f"inputs['{INPUT_NAME}']" in text and "DT_UINT8" in text and "(-1, 28, 28)" in text
    assert f"outputs['{OUTPUT_PROBABILITIES}']" in text and f"outputs['{OUTPUT_CLASSES}']" in text


def test_saved_model_cli_run_gives_the_same_classes(mnist_model_dir, mnist_data, tmp_path):
    images = mnist_data.x_test[:20]
    np.save(tmp_path / "images.npy", images)
    result = subprocess.run(
        [str(SAVED_MODEL_CLI), "run", "--dir", str(mnist_model_dir / "2"), "--tag_set", "serve",
         "--signature_def", SIGNATURE_NAME, "--inputs", f"{INPUT_NAME}={tmp_path / 'images.npy'}",
         "--outdir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, check=True,
    )
    assert result.returncode == 0
    cli_classes = np.load(tmp_path / "out" / f"{OUTPUT_CLASSES}.npy")
    signature = tf.saved_model.load(str(mnist_model_dir / "2")).signatures[SIGNATURE_NAME]
    expected = signature(images=tf.constant(images))[OUTPUT_CLASSES].numpy()
    np.testing.assert_array_equal(cli_classes, expected)
    assert np.mean(cli_classes == mnist_data.y_test[:20]) >= 0.8
    json.dumps(cli_classes.tolist())  # plain ints, as a client would print them


def test_a_file_with_a_version_name_is_skipped_not_fatal(tmp_path, small_model):
    """A stray file called 3 (a log, a copy gone wrong): the export takes 4, it does not loop and fail."""
    base = tmp_path / "m"
    base.mkdir()
    (base / "2").mkdir()
    (base / "3").write_text("not a version")
    version_dir = export_model(small_model, tmp_path, "m", verify=False)
    assert version_dir.name == "4" and read_model_card(version_dir)["version"] == 4
    assert (base / "3").read_text() == "not a version"


def test_a_killed_exports_temp_folder_is_removed_once_stale(tmp_path, small_model):
    base = tmp_path / "m"
    (base / ".export-killed" / "variables").mkdir(parents=True)
    (base / ".export-in-progress").mkdir()
    hours_ago = time.time() - 2 * 3600
    os.utime(base / ".export-killed", (hours_ago, hours_ago))
    export_model(small_model, tmp_path, "m", verify=False)
    assert sorted(p.name for p in base.iterdir()) == [".export-in-progress", "1"]
