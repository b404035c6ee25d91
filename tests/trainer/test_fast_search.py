"""scripts/fast_search.py: its variants cost less than `fast` and differ from it only where stated."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from trainer.model import build_model
from trainer.presets import get_preset

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fast_search.py"


@pytest.fixture(scope="module")
def search():
    spec = importlib.util.spec_from_file_location("fast_search", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_families_cost_less_than_fast(search):
    fast = search.searched_fast()
    assert fast.train.precision == "float32" and fast == search.candidate("fast-float32")
    three, narrow = search.family("three"), search.family("narrow")
    assert three.model == fast.model and three.train.epochs < fast.train.epochs
    assert narrow.train == fast.train
    assert build_model(narrow.model).count_params() < build_model(fast.model).count_params()


def test_five_epoch_families_differ_from_theirs_only_in_epochs(search):
    for name in ("s2", "k3s2"):
        assert search.family(f"{name}e5") == search.family(name).with_overrides(epochs=5)
    families, knobs, seeds = search.SEARCHES["stride5-"]
    assert families == ("s2e5", "k3s2e5") and set(knobs) <= set(search.KNOBS)
    assert seeds == search.CONFIRM_SEEDS


def flattened_size(preset) -> int:
    """How many features the network's Flatten layer hands to its dense layer."""
    flatten = next(layer for layer in build_model(preset.model).layers if layer.name.startswith("flatten"))
    return flatten.output.shape[-1]


@pytest.mark.parametrize("family, kernel", [("s2", 4), ("k3s2", 3)])
def test_strided_families_replace_only_the_pooled_second_convolution(search, family, kernel):
    fast, strided = search.searched_fast(), search.family(family)
    assert strided.train == fast.train
    (first, second), (fast_first, fast_second) = strided.model.conv_layers, fast.model.conv_layers
    assert first == fast_first and strided.model.dense_units == fast.model.dense_units
    assert (second.strides, second.pool_size, second.kernel_size) == (2, 0, kernel)
    assert (second.filters, second.batch_norm) == (fast_second.filters, fast_second.batch_norm)
    # the first block's 12x12 maps become 5x5 in one step, where fast computes 9x9 and pools them to 4x4
    assert flattened_size(strided) == 5 * 5 * 80 and flattened_size(fast) == 4 * 4 * 80


@pytest.mark.parametrize("family, trim, features", [("t1", 1, 4 * 4 * 80), ("t2", 2, 3 * 3 * 80)])
def test_trimmed_families_change_only_the_input_they_see(search, family, trim, features):
    fast, trimmed = search.searched_fast(), search.family(family)
    assert trimmed.train == fast.train and trimmed.model == replace(fast.model, trim_border=trim)
    # 26x26 -> 23x23 -> 11x11 -> 8x8 -> 4x4, as many features as fast; 24x24 -> 21 -> 10 -> 7 -> 3x3
    assert flattened_size(trimmed) == features
    families, knobs, _ = search.SEARCHES["trim-"]
    assert families == ("t1", "t2") and set(knobs) <= set(search.KNOBS)


def test_fast_is_the_survivor_of_the_trimmed_three_epoch_search(search):
    assert get_preset("fast") == search.candidate("t1e3-k1")
    searched = search.searched_fast()  # what every search compared against
    assert (searched.model.trim_border, searched.train.epochs, searched.train.learning_rate) == (0, 4, 0.03)


def test_the_three_epoch_trim_is_confirmed_on_seeds_no_search_used(search):
    assert search.family("t1e3") == search.family("t1").with_overrides(epochs=3)
    fresh = search.SEARCHES["trim3-"].confirm_seeds
    used = set(search.SCREEN_SEEDS) | set(search.CONFIRM_SEEDS) | {search.STEPS_SEED}
    assert len(fresh) == 5 and not used & set(fresh)


@pytest.mark.parametrize("family", ["three", "narrow", "s2", "k3s2", "s2e5", "k3s2e5", "t1", "t2", "t1e3"])
def test_knobs_change_only_what_costs_no_time(search, family):
    base = asdict(search.family(family))
    free = {"optimizer", "learning_rate", "label_smoothing"}
    for knob in search.KNOBS:
        variant = asdict(search.candidate(f"{family}-{knob}"))
        changed = {key for key in base["train"] if variant["train"][key] != base["train"][key]}
        assert variant["model"] == base["model"] and changed <= free, knob
    assert search.candidate("three-k0") == search.family("three")


def test_the_precision_phase_changes_only_the_arithmetic(search):
    float32, bfloat16 = search.candidate("fast-float32"), search.candidate("fast-bfloat16")
    assert (float32.train.precision, bfloat16.train.precision) == ("float32", "bfloat16")
    assert bfloat16.with_overrides(precision="float32") == float32
    assert search.candidate("fast") == get_preset("fast")


def test_confirm_takes_each_familys_best_screened_variant(search, tmp_path, monkeypatch):
    rows = [{"candidate": name, "val": val} for name, val in
            [("three-k1", 0.992), ("three-k1", 0.994), ("three-k3", 0.9935), ("three-k3", 0.9935),
             ("narrow-k0", 0.990), ("narrow-k2", 0.991)]]
    (tmp_path / "fast_search_screen.json").write_text(json.dumps(rows))
    monkeypatch.setattr(search, "RESULTS_DIR", tmp_path)
    assert search.best_of_screen("three") == "three-k3"
    assert search.best_of_screen("narrow") == "narrow-k2"


def test_confirm_refuses_a_screen_without_the_family(search, tmp_path, monkeypatch):
    (tmp_path / "fast_search_screen.json").write_text(json.dumps([{"candidate": "three-k0", "val": 0.99}]))
    monkeypatch.setattr(search, "RESULTS_DIR", tmp_path)
    with pytest.raises(SystemExit, match="no narrow variant"):
        search.best_of_screen("narrow")


def test_the_stride_phases_search_their_own_families_from_their_own_screen(search, tmp_path, monkeypatch):
    old = [{"candidate": "three-k0", "val": 0.99}, {"candidate": "narrow-k0", "val": 0.99}]
    new = [{"candidate": name, "val": val} for name, val in
           [("s2-k0", 0.991), ("s2-k2", 0.993), ("k3s2-k4", 0.992), ("k3s2-k7", 0.990)]]
    (tmp_path / "fast_search_screen.json").write_text(json.dumps(old))
    (tmp_path / "fast_search_stride-screen.json").write_text(json.dumps(new))
    monkeypatch.setattr(search, "RESULTS_DIR", tmp_path)
    survivors = [search.best_of_screen(fam, "stride-") for fam in search.SEARCHES["stride-"].families]
    assert survivors == ["s2-k2", "k3s2-k4"]
    with pytest.raises(SystemExit, match="no s2 variant; run screen first"):
        search.best_of_screen("s2")


def test_the_trim_speed_phase_times_fast_and_the_t1_survivor_in_turn(search, tmp_path, monkeypatch):
    screened = [{"candidate": name, "val": val} for name, val in
                [("t1-k0", 0.992), ("t1-k3", 0.993), ("t2-k1", 0.995)]]
    (tmp_path / "fast_search_trim-screen.json").write_text(json.dumps(screened))
    monkeypatch.setattr(search, "RESULTS_DIR", tmp_path)
    seconds = {"fast-float32": 30.0, "t1-k3": 27.0}
    monkeypatch.setattr(search, "run", lambda name, seed, dataset: {
        "candidate": name, "seed": seed, "fit_seconds": seconds[name], "cpu_seconds": seconds[name]})
    rows = search.trim_speed(dataset=None)
    assert [row["candidate"] for row in rows] == ["fast-float32", "t1-k3"] * search.SPEED_ROUNDS
    assert {row["seed"] for row in rows} == {search.STEPS_SEED}
    assert [row["round"] for row in rows[:4]] == [0, 0, 1, 1]
