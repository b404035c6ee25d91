"""The tutorial's six presets build exactly the networks the tutorial summarised."""

from __future__ import annotations

import pytest

from trainer.model import build_model
from trainer.presets import PRESETS, SEED_PRESETS, get_preset

TUTORIAL_PARAMS = {
    "seed-baseline": 626_280,
    "seed-dropout": 626_280,
    "seed-dense200": 1_252_380,
    "seed-dense50": 313_230,
    "seed-2conv": 166_500,
    "seed-best": 60_806,
}


@pytest.mark.parametrize("name", sorted(TUTORIAL_PARAMS))
def test_seed_preset_parameter_count_matches_tutorial(name):
    assert build_model(get_preset(name).model).count_params() == TUTORIAL_PARAMS[name]


def test_seed_presets_use_tutorial_training_settings():
    assert [p.name for p in SEED_PRESETS] == list(TUTORIAL_PARAMS)
    for preset in SEED_PRESETS:
        assert preset.train.optimizer == "rmsprop" and preset.train.learning_rate == 0.001
        expected = (200, 40) if preset.name == "seed-best" else (50, 10)
        assert (preset.train.batch_size, preset.train.epochs) == expected, preset.name


def test_dropout_layers_where_the_tutorial_put_them():
    rates = {name: [layer.rate for layer in build_model(PRESETS[name].model).layers if hasattr(layer, "rate")]
             for name in TUTORIAL_PARAMS}
    assert rates["seed-baseline"] == []
    assert rates["seed-best"] == [0.4]
    for name in ("seed-dropout", "seed-dense200", "seed-dense50", "seed-2conv"):
        assert rates[name] == [0.5], name


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(KeyError, match="seed-best"):
        get_preset("nope")


def test_overrides_replace_only_given_fields():
    preset = get_preset("seed-best").with_overrides(epochs=3, seed=None)
    assert preset.train.epochs == 3
    assert preset.train.seed == get_preset("seed-best").train.seed
    assert get_preset("seed-best").train.epochs == 40  # registry entry untouched


def test_m5_is_the_papers_network_with_bests_training():
    model = build_model(get_preset("m5").model)
    last_map = [layer for layer in model.layers if layer.name.startswith("conv2d")][-1]
    assert tuple(last_map.output.shape[1:]) == (8, 8, 160)  # five unpadded 5x5 convolutions: 28 -> 8
    assert model.count_params() == 1_129_610
    assert get_preset("m5").train == get_preset("best").train
