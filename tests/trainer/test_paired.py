"""Pairing models by the test images each gets wrong: model cards list them, `digits-train compare` tests."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import tensorflow as tf

from client.contract import INPUT_NAME, OUTPUT_CLASSES, SIGNATURE_NAME
from client.stats import mcnemar_exact, mcnemar_from_counts
from trainer.cli import main
from trainer.export import ASSETS_EXTRA, MODEL_CARD_FILE, read_model_card
from trainer.paired import ERROR_INDICES, Misclassified, PairingError, pair, pooled, read_test_errors
from trainer.train import stratified_split

TINY = ["--preset", "seed-best", "--epochs", "1", "--limit-train", "500", "--val-size", "300"]


@pytest.fixture(scope="module")
def two_exports(tmp_path_factory):
    """Versions 1 and 2 of models/mnist: the tiny recipe with seeds 1 and 2, and their report folders."""
    root = tmp_path_factory.mktemp("paired")
    common = ["--models-dir", str(root / "models"), "--reports-dir", str(root / "reports")]
    for seed in ("1", "2"):
        assert main(["train", *TINY, "--seed", seed, *common]) == 0
    versions = [root / "models" / "mnist" / v for v in ("1", "2")]
    reports = [path.parent for path in sorted((root / "reports").glob("*/model_card.json"))]
    return versions, reports


@pytest.fixture(scope="module")
def beside_seed_1(tmp_path_factory):
    """Two more exports with seed 1: batch 50 (the same validation split as version 1 of two_exports,
    another network) and one trained on every image (no split)."""
    root = tmp_path_factory.mktemp("beside")
    common = ["--seed", "1", "--models-dir", str(root / "models"), "--reports-dir", str(root / "reports")]
    assert main(["train", *TINY, "--batch-size", "50", *common]) == 0
    assert main(["train", *TINY[:-2], "--val-size", "0", *common]) == 0
    return [root / "models" / "mnist" / v for v in ("1", "2")]


def served_wrong(version_dir, mnist_data, images=None, labels=None) -> np.ndarray:
    """A mask of the images (the test set unless given) the exported signature classifies wrongly."""
    images, labels = (mnist_data.x_test, mnist_data.y_test) if images is None else (images, labels)
    signature = tf.saved_model.load(str(version_dir)).signatures[SIGNATURE_NAME]
    classes = signature(**{INPUT_NAME: tf.constant(images)})[OUTPUT_CLASSES].numpy()
    return classes != labels


def held_out_wrong(version_dir, mnist_data) -> tuple[np.ndarray, np.ndarray]:
    """The validation split of the tiny recipe with seed 1 (indices into x_train), and a mask of the
    images in it the exported signature classifies wrongly."""
    val = stratified_split(mnist_data.y_train, 300, 1).val
    return val, served_wrong(version_dir, mnist_data, mnist_data.x_train[val], mnist_data.y_train[val])


def described(new_wrong: np.ndarray, old_wrong: np.ndarray) -> str:
    """What `compare` prints for a pair, computed from the two masks of wrongly classified images."""
    expected = mcnemar_exact(~new_wrong, ~old_wrong)
    assert expected.only_a_correct + expected.only_b_correct > 0  # the two models differ somewhere
    return (f"{new_wrong.sum()} errors against {old_wrong.sum()}: only the first right on "
            f"{expected.only_a_correct}, only the second on {expected.only_b_correct}, both wrong on "
            f"{int(np.sum(new_wrong & old_wrong))}; exact McNemar p = {expected.p_value:.3g}")


def without_error_list(version_dir, target) -> str:
    """A copy of an export whose model card predates the list of test errors."""
    shutil.copytree(version_dir, target)
    card_path = target / ASSETS_EXTRA / MODEL_CARD_FILE
    card = json.loads(card_path.read_text())
    del card["metrics"][ERROR_INDICES]
    card_path.write_text(json.dumps(card))
    return str(target)


def test_the_model_card_lists_the_test_images_the_served_model_gets_wrong(two_exports, mnist_data):
    versions, reports = two_exports
    card = read_model_card(versions[0])
    listed = card["metrics"][ERROR_INDICES]
    assert listed == np.flatnonzero(served_wrong(versions[0], mnist_data)).tolist()
    assert len(listed) == card["metrics"]["test_errors"] > 0
    assert json.loads((reports[0] / MODEL_CARD_FILE).read_text())["metrics"][ERROR_INDICES] == listed


def test_compare_is_mcnemar_on_what_the_two_exports_serve(two_exports, mnist_data, capsys):
    versions, _ = two_exports
    wrong = [served_wrong(version, mnist_data) for version in versions]
    assert main(["compare", str(versions[0]), str(versions[1])]) == 0
    assert described(*wrong) in capsys.readouterr().out


def test_an_export_whose_card_predates_the_list_is_scored(two_exports, tmp_path, capsys):
    versions, _ = two_exports
    old = without_error_list(versions[0], tmp_path / "old")
    assert main(["errors", old]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == read_model_card(versions[0])["metrics"][ERROR_INDICES]
    assert "scoring it on the mnist test set" in captured.err


def test_a_list_kept_elsewhere_pairs_like_the_card_it_came_from(two_exports, tmp_path, capsys):
    versions, reports = two_exports
    kept = tmp_path / "seed1.json"
    assert main(["errors", str(reports[0])]) == 0
    kept.write_text(capsys.readouterr().out)
    assert main(["compare", str(versions[1]), str(kept), str(versions[1]), str(versions[0])]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split(": ", 1)[1] == lines[1].split(": ", 1)[1]
    assert lines[2].startswith("pooled over 2 pairs")


def test_pooling_adds_the_discordant_images_of_every_pair():
    a, b, c = (Misclassified(name, frozenset(ix)) for name, ix in
               (("a", {1, 2, 3}), ("b", {3, 4, 5, 6, 7}), ("c", {1})))
    ab, ca = pair(a, b), pair(c, a)
    assert (ab.only_new_right, ab.only_old_right, ab.both_wrong) == (4, 2, 1)
    assert (ca.only_new_right, ca.only_old_right, ca.both_wrong) == (2, 0, 1)
    assert pooled([ab, ca]) == mcnemar_from_counts(6, 2)
    assert ab.mcnemar() == mcnemar_exact(*(~np.isin(np.arange(8), sorted(m.indices)) for m in (a, b)))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ([3, 3], "listed twice"),
        ([-1], "cannot be negative"),
        ([1.0], "list of integers"),
        ([True], "list of integers"),
        ("nine", "neither a model card nor a list"),
        ({"metrics": {}}, "lists no test_error_indices"),
        ({"dataset": {"test_images": 5}, "metrics": {ERROR_INDICES: [5]}}, "past its 5 test images"),
    ],
)
def test_sources_that_name_no_usable_errors_are_refused(tmp_path, capsys, content, message):
    path = tmp_path / "source.json"
    path.write_text(json.dumps(content))
    with pytest.raises(PairingError, match=message):
        read_test_errors(path)
    assert main(["compare", str(path), str(path)]) == 1
    assert message in capsys.readouterr().err


def test_a_report_folder_predating_the_list_is_refused_not_guessed(two_exports, tmp_path, capsys):
    _, reports = two_exports
    folder = tmp_path / "report"
    shutil.copytree(reports[0], folder)
    card = json.loads((folder / MODEL_CARD_FILE).read_text())
    del card["metrics"][ERROR_INDICES]
    (folder / MODEL_CARD_FILE).write_text(json.dumps(card))
    assert main(["errors", str(folder)]) == 1
    assert "pass its exported version" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(name="fashion_mnist"), "on 'fashion_mnist'"),
        (lambda d: d["sha256"].update(y_test="0" * 64), "different test arrays"),
        (lambda d: d.update(test_images=3), "was scored on 3"),
    ],
)
def test_models_scored_on_other_test_images_are_not_paired(two_exports, tmp_path, capsys, edit, message):
    versions, reports = two_exports
    card = json.loads((reports[1] / MODEL_CARD_FILE).read_text())
    edit(card["dataset"])
    listed = card["metrics"][ERROR_INDICES]
    card["metrics"][ERROR_INDICES] = [i for i in listed if i < card["dataset"]["test_images"]]
    other = tmp_path / "other.json"
    other.write_text(json.dumps(card))
    assert main(["compare", str(versions[0]), str(other)]) == 1
    assert message in capsys.readouterr().err


def test_compare_takes_models_in_pairs(two_exports, capsys):
    versions, _ = two_exports
    assert main(["compare", str(versions[0])]) == 2
    assert "in pairs" in capsys.readouterr().err


@pytest.mark.parametrize(("b", "c"), [(15, 7), (30, 17), (17, 30), (0, 9), (400, 350), (7, 7), (4000, 4100)])
def test_the_exact_p_is_the_two_sided_binomial_tail(b, c):
    n, k = b + c, min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    assert mcnemar_from_counts(b, c).p_value == pytest.approx(min(1.0, 2 * tail), rel=1e-9)
    with pytest.raises(ValueError, match="cannot be negative"):
        mcnemar_from_counts(-1, c)


def test_validation_errors_are_the_held_out_images_the_model_gets_wrong(two_exports, mnist_data, capsys):
    version = two_exports[0][0]
    val, wrong = held_out_wrong(version, mnist_data)
    assert main(["errors", "--split", "validation", str(version)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == sorted(val[wrong].tolist())
    assert "validation split (300 images with seed 1 of mnist)" in captured.err
    # The split that chose its epoch: the model card's validation accuracy agrees.
    assert read_model_card(version)["metrics"]["val_accuracy"] == pytest.approx(1 - wrong.mean(), abs=1e-6)


def test_compare_pairs_models_on_the_validation_split_they_share(
    two_exports, beside_seed_1, mnist_data, capsys
):
    new, old = beside_seed_1[0], two_exports[0][0]
    assert main(["compare", "--split", "validation", str(new), str(old)]) == 0
    expected = described(held_out_wrong(new, mnist_data)[1], held_out_wrong(old, mnist_data)[1])
    assert expected in capsys.readouterr().out


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        (lambda two, beside: [two[0][1], two[0][0]], "not the same images"),  # seeds 2 and 1
        (lambda two, beside: [beside[1], two[0][0]], "it has no validation split"),  # --val-size 0
        (lambda two, beside: [two[1][0], two[0][0]], "pass an exported version"),  # a report folder
    ],
)
def test_models_without_one_shared_validation_split_are_not_paired_on_it(
    two_exports, beside_seed_1, capsys, sources, message
):
    assert main(["compare", "--split", "validation", *map(str, sources(two_exports, beside_seed_1))]) == 1
    assert message in capsys.readouterr().err
