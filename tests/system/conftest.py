"""System-test helpers: bench/'s process helpers, and the shared model's right answers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def load_bench_module(name: str) -> ModuleType:
    """Import bench/<name>.py (bench/ is scripts, not a package); its process helpers are reused here."""
    bench = str(REPO_ROOT / "bench")
    if bench not in sys.path:
        sys.path.insert(0, bench)  # bench scripts import their sibling `common`
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def bench_common() -> ModuleType:
    return load_bench_module("common")


@pytest.fixture(scope="session")
def bench_serve() -> ModuleType:
    return load_bench_module("serve_bench")


@pytest.fixture(scope="session")
def bench_soak() -> ModuleType:
    return load_bench_module("soak")


@pytest.fixture(scope="session")
def bench_train() -> ModuleType:
    return load_bench_module("train_bench")


@pytest.fixture(scope="session")
def test_digits(mnist_data, mnist_model_dir):
    """(images uint8 [8,28,28], the served version's in-process classes [8]) for checking answers."""
    import tensorflow as tf

    from client.contract import INPUT_NAME, OUTPUT_CLASSES, SIGNATURE_NAME

    images = mnist_data.x_test[:8]
    latest = max((p for p in mnist_model_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    signature = tf.saved_model.load(str(latest)).signatures[SIGNATURE_NAME]
    return images, signature(**{INPUT_NAME: tf.constant(images)})[OUTPUT_CLASSES].numpy()
