"""The tutorial's six presets build exactly the networks the tutorial summarised; the newer ones theirs."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from trainer.model import ResidualConv, build_model
from trainer.presets import PRESETS, SEED_PRESETS, ConvLayer, ModelConfig, Preset, get_preset
from trainer.schedules import learning_rate

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


def test_resnet_is_doucets_network_and_recipe():
    preset = get_preset("resnet")
    model = build_model(preset.model)
    assert model.count_params() == 4_736_522
    maps = [tuple(layer.output.shape[1:]) for layer in model.layers if isinstance(layer, ResidualConv)]
    assert maps == [(28, 28, 128), (14, 14, 128), (7, 7, 256), (4, 4, 512)]  # 7 -> 4: pooling rounds up
    assert isinstance(model.layers[-2], keras.layers.GlobalAveragePooling2D)
    train = preset.train
    assert (train.epochs, train.batch_size, train.optimizer, train.learning_rate) == (11, 100, "adam", 4e-4)
    assert (train.schedule, train.beta_2) == ("exponential-anneal", 0.99)
    assert train.augment_policy == "shift-rotate-grid"
    assert train.lr_decay**10 == pytest.approx(0.1)  # tenfold over the 10 decaying epochs


def _norms(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    return [layer.norm if isinstance(layer, ResidualConv) else layer for layer in model.layers
            if isinstance(layer, (ResidualConv, keras.layers.BatchNormalization))]


def _weighted(model: keras.Model) -> list[keras.layers.Layer]:
    layers = [layer.conv if isinstance(layer, ResidualConv) else layer for layer in model.layers]
    return [layer for layer in layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]


def test_pytorch_layer_defaults_give_pytorchs_batch_norm_and_initialisation():
    keras.utils.set_random_seed(0)
    model = build_model(get_preset("resnet").model)
    assert len(_norms(model)) == 7  # four residual blocks and three before the wider convolutions
    assert all((norm.momentum, norm.epsilon) == (0.9, 1e-5) for norm in _norms(model))
    for layer in _weighted(model):
        bound = float(np.prod(layer.kernel.shape[:-1])) ** -0.5  # 1/sqrt(fan_in), as torch.nn.Conv2d draws
        kernel, bias = np.asarray(layer.kernel), np.asarray(layer.bias)
        assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound
        assert kernel.std() == pytest.approx(bound / 3**0.5, rel=0.05)  # uniform over the whole range
        assert np.count_nonzero(bias) == bias.size
    keras_model = build_model(get_preset("resnet").with_model(layer_defaults="keras").model)
    assert all((norm.momentum, norm.epsilon) == (0.99, 1e-3) for norm in _norms(keras_model))
    assert all(not np.asarray(layer.bias).any() for layer in _weighted(keras_model))


def test_a_model_card_rebuilds_the_layer_defaults_it_was_trained_with():
    preset = Preset("tiny", "", ModelConfig((ConvLayer(4, 3, padding="same"), ConvLayer(4, 3, residual=True,
                    batch_norm=True)), (), layer_defaults="pytorch"), get_preset("fast").train)
    trained = build_model(preset.model)
    for norm in _norms(trained):  # variances this small make epsilon (1e-5 against 1e-3) tell
        norm.moving_variance.assign(np.full(norm.moving_variance.shape, 1e-4, np.float32))
    images = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    normed = lambda model: np.asarray(keras.Sequential(model.layers[:3])(images))  # noqa: E731  (no softmax)
    rebuilt = build_model(Preset.from_dict(preset.to_dict()).model)
    rebuilt.set_weights(trained.get_weights())
    np.testing.assert_allclose(normed(rebuilt), normed(trained), rtol=1e-5)
    with_keras_defaults = build_model(preset.with_model(layer_defaults="keras").model)
    with_keras_defaults.set_weights(trained.get_weights())
    assert not np.allclose(normed(with_keras_defaults), normed(trained), rtol=0.01)


def test_unknown_layer_defaults_are_refused():
    with pytest.raises(ValueError, match="unknown layer defaults 'torch'; known: keras, pytorch"):
        build_model(ModelConfig((ConvLayer(4, 3),), (), layer_defaults="torch"))


def test_a_residual_layer_keeps_its_inputs_channels():
    cfg = ModelConfig((ConvLayer(8, 3, padding="same"), ConvLayer(16, 3, residual=True)), ())
    with pytest.raises(ValueError, match="8 channels, not 16"):
        build_model(cfg)


def test_the_input_steps_zoom_into_the_centre_and_standardise_each_image():
    cfg = ModelConfig((ConvLayer(4, 3),), (), centre_crop=25, standardize=True)
    steps = keras.Sequential(build_model(cfg).layers[:3])  # crop, resize, standardise
    framed = np.zeros((2, 28, 28, 1), np.float32)
    framed[:, 0, :] = framed[:, :, 0] = 1.0  # ink only on the outer rows and columns: cropped away
    framed[1, 10:18, 10:18] = 0.5
    out = np.asarray(steps(framed))
    np.testing.assert_array_equal(out[0], 0.0)  # blank after the crop: zero, not NaN
    assert np.isclose(out[1].mean(), 0.0, atol=1e-5) and np.isclose(out[1].std(), 1.0, atol=1e-3)
    ink_rows = np.flatnonzero((out[1] > out[1].min() + 1e-3).any(axis=(1, 2)))
    assert len(ink_rows) > 8  # the centre 8x8 square, zoomed by 28/25


def test_a_trimmed_network_never_sees_the_border_it_trims():
    model = build_model(ModelConfig((ConvLayer(4, 3),), (8,), trim_border=2))
    assert model.get_layer("trim_border").output.shape[1:] == (24, 24, 1)
    rng = np.random.default_rng(0)
    images = rng.random((3, 28, 28, 1), dtype=np.float32)
    framed = images.copy()
    framed[:, :2] = framed[:, -2:] = framed[:, :, :2] = framed[:, :, -2:] = 1.0  # ink on the two-pixel border
    np.testing.assert_array_equal(model.predict(framed, verbose=0), model.predict(images, verbose=0))
    framed[:, 2, 2] += 1.0  # the first pixel inside the border does count
    assert not np.allclose(model.predict(framed, verbose=0), model.predict(images, verbose=0))


@pytest.mark.parametrize("trim", [14, 20, -1])
def test_a_trim_that_leaves_no_image_is_refused(trim):
    with pytest.raises(ValueError, match=f"trim_border {trim} leaves no pixels of a 28x28 image"):
        build_model(ModelConfig((ConvLayer(4, 3),), (), trim_border=trim))


def test_exponential_anneal_decays_smoothly_then_anneals_to_a_thousandth():
    cfg = get_preset("resnet").train
    rate = learning_rate(cfg, steps_per_epoch=100)
    at = lambda step: float(rate(step))  # noqa: E731
    assert at(0) == pytest.approx(4e-4)
    assert at(50) == pytest.approx(4e-4 * cfg.lr_decay**0.5, rel=1e-4)  # within an epoch, not a staircase
    assert at(1000) == pytest.approx(4e-5, rel=1e-4)  # after the 10 decaying epochs
    assert at(1100) == pytest.approx(4e-8, rel=1e-3)
    steps = [at(step) for step in range(0, 1101, 25)]
    assert all(later < earlier for earlier, later in zip(steps, steps[1:], strict=False))


@pytest.mark.parametrize(
    ("flags", "augmentation"),
    [
        ([], "grid distortion ±1 px (4x4 cells), rotation ±10°, shift ±0.0536"),
        # The crop moves each training digit by whole pixels, so the named augmentation has no shift.
        (["--augmentor-crops", "--augment-policy", "rotate-crop-grid"],
         "grid distortion ±1 px (4x4 cells), cropped rotation ±10°"),
    ],
)
def test_resnet_trains_and_exports_its_zoom_without_its_augmentation(
    tmp_path, mnist_data, flags, augmentation
):
    from saved_model_ops import augmentation_ops

    from client.contract import DEFAULT_MODEL_NAME
    from trainer.cli import main
    from trainer.export import check_export, read_model_card
    from trainer.restore import restore_model

    models_dir = tmp_path / "models"
    argv = ["train", "--preset", "resnet", "--epochs", "1", "--limit-train", "300", "--val-size", "100",
            "--models-dir", str(models_dir), "--reports-dir", str(tmp_path / "reports"), *flags]
    assert main(argv) == 0
    version_dir = models_dir / DEFAULT_MODEL_NAME / "1"
    assert read_model_card(version_dir)["augmentation"] == augmentation
    assert augmentation_ops(version_dir) == set()
    # Rebuilt from the model card (crop, zoom and standardisation included), it serves what the export does.
    check_export(version_dir, restore_model(version_dir).model, mnist_data.x_test[:64])
