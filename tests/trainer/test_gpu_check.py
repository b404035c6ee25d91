"""scripts/gpu_check.py, the prepared GPU check: it trains, records, and re-scores what it trained.

The lent GPU machine has JAX and no TensorFlow, so the training path must not need TensorFlow (the
import test below); the check itself runs here on the TensorFlow backend, on a small subset.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO_ROOT, data_dir
from trainer.cli import main
from trainer.export import read_model_card
from trainer.presets import get_preset

CHECK = REPO_ROOT / "scripts" / "gpu_check.py"
# What the check imports to train a preset; what they import in turn is followed below.
TRAINING_PATH = ("trainer.train", "scripts.gpu_check")


def _check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECK), *args], capture_output=True, text=True, timeout=300,
                          cwd=REPO_ROOT)


def _module_imports(module: str) -> set[str]:
    """The modules `module`'s source imports at load time (not inside functions)."""
    tree = ast.parse((REPO_ROOT / (module.replace(".", "/") + ".py")).read_text())
    imported: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    return imported


def test_the_training_path_loads_no_tensorflow():
    seen, todo = set(), list(TRAINING_PATH)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for name in _module_imports(module):
            assert name.split(".")[0] != "tensorflow", f"{module} imports {name} at load time"
            if name.split(".")[0] in ("trainer", "client") and name != "client":
                todo.append(name)
    assert {"trainer.model", "trainer.augment", "trainer.schedules", "trainer.data"} <= seen


@pytest.fixture(scope="module")
def check_out(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("gpu-check")
    run = _check("run", "fast:42", "fast:43", "--limit-train", "600", "--val-size", "1000",
                 "--runs-per-file", "1", "--data-dir", str(data_dir()), "--out", str(out))
    return out, run


def test_run_records_each_run(check_out):
    out, run = check_out
    assert run.returncode == 0, run.stdout + run.stderr[-2000:]
    epochs = get_preset("fast").train.epochs
    assert f"epoch {epochs:3d}/{epochs}" in run.stdout  # progress per epoch
    assert sorted(path.name for path in out.glob("weights*.npz")) == ["weights-2.npz", "weights.npz"]
    results = json.loads((out / "results.json").read_text())
    assert [(r["preset"], r["seed"], r["backend"]) for r in results] == [
        ("fast", 42, "tensorflow"), ("fast", 43, "tensorflow")]
    for result in results:
        assert (result["train_size"], result["val_size"]) == (600, 1000)
        assert result["seconds"] > 0 and 0 < result["test_errors"] < 10_000
        assert abs(result["test_accuracy"] - (1 - result["test_errors"] / 10_000)) < 1e-9
        assert len(result["epoch_seconds"]) == len(result["history"]["val_accuracy"]) == epochs


def test_run_starts_nothing_that_would_pass_the_deadline(tmp_path):
    run = _check("run", "fast:42", "fast:43", "--limit-train", "300", "--deadline-s", "1",
                 "--data-dir", str(data_dir()), "--out", str(tmp_path))
    assert run.returncode == 0, run.stdout + run.stderr[-2000:]
    assert "skipping fast:43" in run.stdout  # fast:42 took longer than the 1 s deadline
    assert [r["seed"] for r in json.loads((tmp_path / "results.json").read_text())] == [42]


def test_verified_networks_export_as_members_that_combine_accepts(check_out, tmp_path):
    out, _ = check_out
    models = tmp_path / "models"
    verified = _check("verify", str(out), "--data-dir", str(data_dir()), "--export", str(models))
    assert verified.returncode == 0, verified.stdout + verified.stderr[-2000:]
    assert verified.stdout.count("10000/10000") == 2  # the same prediction for every test image
    results = json.loads((out / "results.json").read_text())
    for version, result in zip(("1", "2"), results, strict=True):
        card = read_model_card(models / "mnist" / version)
        assert card["trained_on"]["backend"] == result["backend"]
        assert card["metrics"]["test_errors"] == result["test_errors"]
        assert card["config"]["train"]["seed"] == result["seed"]
    combined = [str(models / "mnist" / "1"), str(models / "mnist" / "2")]
    common = ["--data-dir", str(data_dir()), "--models-dir", str(models), "--reports-dir", str(tmp_path)]
    assert main(["combine", *combined, *common]) == 0
    assert read_model_card(models / "mnist" / "3")["preset"] == "combined"


def test_verify_catches_a_false_record(check_out):
    out, _ = check_out

    results = json.loads((out / "results.json").read_text())
    results[0]["test_errors"] += 1
    (out / "results.json").write_text(json.dumps(results))
    assert _check("verify", str(out), "--data-dir", str(data_dir())).returncode == 1


def test_run_names_a_bad_preset():
    run = _check("run", "no-such-preset:1", "--out", "unused")
    assert run.returncode == 2 and "expected PRESET:SEED" in run.stderr


def test_half_weights_bring_back_half_the_bytes_and_verify_as_rounded(tmp_path):
    run = _check("run", "fast:44", "--limit-train", "600", "--val-size", "1000", "--half-weights",
                 "--data-dir", str(data_dir()), "--out", str(tmp_path))
    assert run.returncode == 0, run.stdout + run.stderr[-2000:]
    [result] = json.loads((tmp_path / "results.json").read_text())
    assert result["weights_dtype"] == "float16"
    assert abs(result["test_errors"] - result["float32_test_errors"]) < 100  # rounding moves a few, if any
    stored = np.load(tmp_path / "weights.npz")
    weights = [key for key in stored.files if not key.endswith("predictions")]
    assert {stored[key].dtype for key in weights} == {np.dtype("float16")}
    verified = _check("verify", str(tmp_path), "--data-dir", str(data_dir()))
    assert verified.returncode == 0 and "10000/10000" in verified.stdout, verified.stdout + verified.stderr


def test_a_runs_record_rebuilds_the_crops_and_augmentation_it_trained_with():
    from scripts.gpu_check import run_preset

    record = {"preset": "resnet", "seed": 44, "val_size": 0, "augment_policy": "rotate-crop-grid",
              "augmentor_crops": True}
    preset = run_preset(record)
    train = preset.train
    assert (train.seed, train.val_size, train.augment_policy) == (44, 0, "rotate-crop-grid")
    assert (preset.model.centre_crop, preset.model.train_crop, preset.model.crop_interpolation) == (
        24, 25, "bicubic")
    older = run_preset({"preset": "resnet", "seed": 44})  # written before these options: the preset's own
    assert older == get_preset("resnet").with_overrides(seed=44)
