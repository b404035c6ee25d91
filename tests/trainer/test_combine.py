"""`digits-train combine`: finished exports rebuilt from their cards and averaged into one new version."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from client.contract import DEFAULT_MODEL_NAME, INPUT_NAME, OUTPUT_PROBABILITIES, SIGNATURE_NAME
from trainer.cli import main
from trainer.combine import errors_as_members_are_added, mean_over_pairs, shared_error_ratios
from trainer.export import ASSETS_EXTRA, MODEL_CARD_FILE, existing_versions, read_model_card
from trainer.presets import PRESETS, Preset
from trainer.restore import RestoreError, restore_model

TINY = ["--preset", "seed-best", "--epochs", "1", "--limit-train", "500", "--val-size", "300"]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """models/mnist with 1: seed 1, 2: seed 2 (single networks), 3: a 2-member ensemble (seeds 42, 43),
    4: seed 3 fit with no validation hold-out."""
    root = tmp_path_factory.mktemp("combine")
    common = ["--models-dir", str(root / "models"), "--reports-dir", str(root / "reports")]
    for extra in (["--seed", "1"], ["--seed", "2"], ["--members", "2"], ["--seed", "3", "--val-size", "0"]):
        assert main(["train", *TINY, *extra, *common]) == 0
    return root, common


def probabilities(version_dir, images: np.ndarray) -> np.ndarray:
    """What the exported signature serves for these uint8 images."""
    signature = tf.saved_model.load(str(version_dir)).signatures[SIGNATURE_NAME]
    return signature(**{INPUT_NAME: tf.constant(images)})[OUTPUT_PROBABILITIES].numpy()


def edited_copy(version_dir, target, edit) -> str:
    """A copy of an export whose model card was changed by `edit(card)`."""
    shutil.copytree(version_dir, target)
    card_path = target / ASSETS_EXTRA / MODEL_CARD_FILE
    card = json.loads(card_path.read_text())
    edit(card)
    card_path.write_text(json.dumps(card))
    return str(target)


def test_presets_survive_the_model_card_round_trip():
    for preset in PRESETS.values():
        assert Preset.from_dict(json.loads(json.dumps(preset.to_dict()))) == preset


def test_restored_members_keep_their_own_seeds(exports):
    root, _ = exports
    single, ensemble = restore_model(root / "models/mnist/1"), restore_model(root / "models/mnist/3")
    assert [p.train.seed for p in single.member_presets] == [1] and len(single.members) == 1
    assert [p.train.seed for p in ensemble.member_presets] == [42, 43]
    assert all(p.train.members == 1 for p in ensemble.member_presets)


def test_combined_version_serves_the_average_of_every_member(exports, mnist_data):
    root, common = exports
    models = root / "models" / DEFAULT_MODEL_NAME
    assert main(["combine", str(models / "1"), str(models / "3"), *common]) == 0

    images = mnist_data.x_test[:64]
    single, pair, combined = (probabilities(models / v, images) for v in ("1", "3", "5"))
    assert not np.allclose(single, pair, atol=1e-3)
    # Version 3 already averages two members, so the three-member mean weighs it twice.
    np.testing.assert_allclose(combined, (single + 2 * pair) / 3, atol=1e-5)

    card = read_model_card(models / "5")
    assert [m["seed"] for m in card["members"]] == [1, 42, 43]
    assert [m["source"] for m in card["members"]] == [str(models / "1")] + [str(models / "3")] * 2
    # Each member is rescored on its own validation split: the very images its own training chose on.
    own = read_model_card(models / "1")["metrics"]["val_accuracy"]
    assert card["members"][0]["val_accuracy"] == pytest.approx(own, abs=1e-6)
    assert card["config"]["train"]["members"] == 3 and card["preset"] == "combined"
    served = probabilities(models / "5", mnist_data.x_test).argmax(axis=1)
    assert card["metrics"]["test_errors"] == int(np.sum(served != mnist_data.y_test))
    report = Path(card["report_dir"])
    assert (report / "confusion_matrix.png").is_file() and not (report / "curves.png").exists()
    # The members curve starts at member 1 alone and ends at what the combined graph serves.
    curve = card["test_errors_by_members"]
    assert len(curve) == 3 and (report / "members.png").is_file()
    assert curve[0] == card["members"][0]["test_errors"] and curve[-1] == card["metrics"]["test_errors"]
    # Members 2 and 3 came from one ensemble; each pair's shared errors are in the card.
    shared = np.array(card["shared_errors"])
    assert shared.shape == (3, 3) and np.allclose(shared, shared.T) and np.allclose(np.diag(shared), 1)

    # A combined version is itself a source: its card lists every member's recipe.
    assert main(["combine", str(models / "5"), str(models / "2"), *common]) == 0
    assert [m["seed"] for m in read_model_card(models / "6")["members"]] == [1, 42, 43, 2]


def test_members_of_different_networks_combine_into_one_version(exports, tmp_path, mnist_data):
    root, _ = exports
    common = ["--models-dir", str(tmp_path / "models"), "--reports-dir", str(tmp_path / "reports")]
    models = tmp_path / "models" / DEFAULT_MODEL_NAME
    shutil.copytree(root / "models" / DEFAULT_MODEL_NAME / "1", models / "1")  # seed-best
    assert main(["train", "--preset", "fast", "--epochs", "1", "--limit-train", "500", "--val-size", "300",
                 *common]) == 0
    assert main(["combine", str(models / "1"), str(models / "2"), *common]) == 0

    images = mnist_data.x_test[:64]
    seed_best, fast, combined = (probabilities(models / v, images) for v in ("1", "2", "3"))
    np.testing.assert_allclose(combined, (seed_best + fast) / 2, atol=1e-5)
    card = read_model_card(models / "3")
    assert [m["preset"] for m in card["members"]] == ["seed-best", "fast"]


def test_shared_errors_count_the_images_two_members_both_get_wrong():
    a = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0], bool)  # 4 errors
    b = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0], bool)  # 2 errors, both in common with a
    c = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1], bool)  # 5 errors, none in common
    ratios = shared_error_ratios([a, b, c, np.zeros(9, bool)])
    assert ratios[0, 1] == ratios[1, 0] == pytest.approx(2 / np.sqrt(4 * 2))
    assert ratios[0, 2] == ratios[1, 2] == 0 and ratios[0, 0] == 1
    assert ratios[3, 3] == 0  # a member with no errors shares none
    assert mean_over_pairs(ratios[:3, :3]) == pytest.approx((2 / np.sqrt(8)) / 3)


def test_members_curve_scores_the_running_mean_in_the_order_given():
    labels = np.array([0, 1, 2])
    sure = np.eye(3)[[0, 1, 2]]  # right on all three
    wrong_twice = np.array([[0.1, 0.9, 0.0], [0.0, 0.1, 0.9], [0.0, 0.0, 1.0]])  # two errors, faint ones
    assert errors_as_members_are_added([wrong_twice, sure], labels) == (2, 0)
    assert errors_as_members_are_added([sure, wrong_twice], labels) == (0, 0)
    # A mean of probabilities, not a vote: two faintly wrong members lose to one sure, right one.
    faint = np.array([[0.4, 0.6, 0.0]])
    assert errors_as_members_are_added([faint, faint, np.eye(3)[[0]]], labels[:1]) == (1, 1, 0)


def test_a_member_fit_on_all_images_has_no_validation_score(exports, capsys):
    root, common = exports
    models = root / "models" / DEFAULT_MODEL_NAME
    full = read_model_card(models / "4")
    assert full["dataset"]["val_images"] == 0 and full["metrics"]["val_accuracy"] is None
    assert full["dataset"]["train_images"] == 500 and full["metrics"]["best_epoch"] == 1
    assert main(["combine", str(models / "1"), str(models / "4"), *common]) == 0
    assert "seed 3, 1 epochs, no hold-out, test" in capsys.readouterr().out
    card = read_model_card(sorted(models.iterdir(), key=lambda p: int(p.name))[-1])
    assert [m["val_accuracy"] is None for m in card["members"]] == [False, True]
    assert card["metrics"]["val_accuracy"] is None  # a mean over members that did not all hold out


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda card: card["dataset"].update(name="fashion_mnist"), "on 'fashion_mnist', not 'mnist'"),
        (lambda card: card["dataset"]["sha256"].update(x_test="0" * 64), "different mnist arrays"),
        (lambda card: card["dataset"].pop("sha256"), "records no sha256"),
        (lambda card: card["config"]["model"]["conv_layers"][0].update(filters=8), "do not fit the network"),
        (lambda card: card["config"].pop("model"), "does not describe the network"),
        (lambda card: card["config"]["model"].update(layer_defaults="tensorflow"), "cannot be built"),
        (lambda card: card["config"]["model"].update(trim_border=14), "cannot be built"),
        (lambda card: card.update(member_configs=[]), "lists no network"),
        (lambda card: card.update(dataset="mnist"), "does not say which data"),
    ],
)
def test_combine_refuses_an_export_it_cannot_trust(exports, tmp_path, capsys, edit, message):
    root, common = exports
    bad = edited_copy(root / "models/mnist/2", tmp_path / "bad", edit)
    versions = sorted((root / "models/mnist").iterdir())
    assert main(["combine", str(root / "models/mnist/1"), bad, *common]) == 1
    assert message in capsys.readouterr().err
    assert sorted((root / "models/mnist").iterdir()) == versions  # nothing exported


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        (["1"], "at least two members"),
        (["1", "1"], "listed twice"),
        (["no-such-version", "1"], "no readable model card"),
    ],
)
def test_combine_needs_two_distinct_readable_members(exports, capsys, sources, message):
    root, common = exports
    assert main(["combine", *(str(root / "models/mnist" / s) for s in sources), *common]) == 1
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda v: (v / ASSETS_EXTRA / MODEL_CARD_FILE).write_text("{not json"), "does not describe"),
        (lambda v: shutil.rmtree(v / "variables"), "does not load"),
    ],
)
def test_restore_refuses_a_damaged_export(exports, tmp_path, damage, message):
    root, _ = exports
    damaged = tmp_path / "damaged"
    shutil.copytree(root / "models/mnist/1", damaged)
    damage(damaged)
    with pytest.raises(RestoreError, match=message):
        restore_model(damaged)


def test_restore_refuses_weights_that_do_not_reproduce_the_export(exports, tmp_path):
    root, _ = exports
    # Same weight shapes, another network: the activation changes every output.
    to_tanh = lambda card: card["config"]["model"].update(activation="tanh")  # noqa: E731
    tanh = edited_copy(root / "models/mnist/1", tmp_path / "tanh", to_tanh)
    with pytest.raises(RestoreError, match="does not match the export"):
        restore_model(tanh)


def test_combine_refuses_a_network_given_twice(exports, tmp_path, capsys):
    """A copied export, or a version beside an ensemble that already holds it, is one network, not two."""
    root, _ = exports
    common = ["--models-dir", str(tmp_path / "models"), "--reports-dir", str(tmp_path / "reports")]
    source = root / "models/mnist"
    copy = tmp_path / "copy-of-1"
    shutil.copytree(source / "1", copy)
    assert main(["combine", str(source / "1"), str(copy), *common]) == 1
    error = capsys.readouterr().err
    assert "members 1 and 2" in error and "same network" in error and str(copy) in error
    assert not (tmp_path / "models").exists()  # nothing exported

    assert main(["combine", str(source / "1"), str(source / "2"), *common]) == 0  # -> tmp models/mnist/1
    capsys.readouterr()
    assert main(["combine", str(tmp_path / "models/mnist/1"), str(source / "2"), *common]) == 1
    assert "members 2 and 3" in capsys.readouterr().err
    assert main(["combine", str(source / "3"), str(source / "3") + "/", *common]) == 1  # one path, twice
    assert existing_versions(tmp_path / "models/mnist") == [1]


def test_restore_refuses_an_export_without_the_serving_signature(exports, tmp_path):
    """The same weights re-saved under another signature name: no server or client could call it."""
    root, _ = exports
    loaded = tf.saved_model.load(str(root / "models/mnist/1"))
    renamed = tmp_path / "renamed"
    tf.saved_model.save(loaded, str(renamed), signatures={"predict": loaded.signatures[SIGNATURE_NAME]})
    shutil.copytree(root / "models/mnist/1" / ASSETS_EXTRA, renamed / ASSETS_EXTRA)
    with pytest.raises(RestoreError, match=f"does not serve the '{SIGNATURE_NAME}' signature"):
        restore_model(renamed)
