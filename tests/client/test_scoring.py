"""The evaluation's numbers on hand-made answers, checked against published or hand-counted values."""

from __future__ import annotations

import numpy as np
import pytest

from client.datasets import LabelledImages
from client.eval_report import comparison_verdict
from client.evaluation import EvalRun, score
from client.stats import confusion_matrix, mcnemar_exact, mcnemar_from_counts, wilson_interval


@pytest.mark.parametrize(
    ("successes", "total", "low", "high"),
    # Newcombe (1998), Statistics in Medicine 17:857, table I, method 3 (Wilson score, no correction).
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_interval_matches_published_values(successes, total, low, high):
    interval = wilson_interval(successes, total)
    assert interval.value == pytest.approx(successes / total)
    assert (interval.low, interval.high) == (pytest.approx(low, abs=5e-5), pytest.approx(high, abs=5e-5))


def test_mcnemar_counts_name_which_classifier_was_right():
    correct_a = np.array([True, True, True, False, True])
    correct_b = np.array([False, False, True, True, True])
    result = mcnemar_exact(correct_a, correct_b)
    assert (result.only_a_correct, result.only_b_correct) == (2, 1)


def _run(predicted: list[int], classes: int = 3) -> EvalRun:
    probabilities = np.eye(classes, dtype=np.float32)[predicted]
    return EvalRun(np.array(predicted), probabilities, np.array([0.01]), 1.0, "m", 1)


def test_confusion_rows_are_true_classes_and_per_class_scores_follow():
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    predicted = [0, 0, 0, 1, 1, 1, 1, 2]  # class 1: 4 predicted, 2 of them right; 2 actual, both found
    data = LabelledImages(np.zeros((8, 28, 28), np.uint8), labels, ("a", "b", "c"), "hand-made")
    scores = score(_run(predicted), data)
    assert confusion_matrix(labels, predicted, 3)[0, 1] == 1  # [true 0, predicted 1]
    assert scores.confusion.tolist() == [[3, 1, 0], [0, 2, 0], [0, 1, 1]]
    b = scores.per_class[1]
    assert (b.name, b.precision, b.recall, b.support) == ("b", 0.5, 1.0, 2)
    assert b.f1 == pytest.approx(2 / 3)
    c = scores.per_class[2]
    assert (c.precision, c.recall, c.support) == (1.0, 0.5, 2)
    assert scores.errors == 2 and scores.accuracy.value == 0.75


@pytest.mark.parametrize(("b", "c", "better"), [(2, 30, 2), (30, 2, 1)])
def test_the_verdict_names_the_version_that_is_right_more_often(b, c, better):
    first = {"model": {"version": 1}, "accuracy": {"value": 0.9}}
    second = {"model": {"version": 2}, "accuracy": {"value": 0.9 + (c - b) / 1000}}
    verdict = comparison_verdict(first, second, mcnemar_from_counts(b, c))
    assert verdict.startswith(f"v{better} is significantly better")


def test_a_difference_that_is_not_significant_says_which_way_it_went():
    first = {"model": {"version": 1}, "accuracy": {"value": 0.990}}
    second = {"model": {"version": 2}, "accuracy": {"value": 0.992}}
    verdict = comparison_verdict(first, second, mcnemar_from_counts(10, 12))
    assert verdict.startswith("no significant difference between v1 and v2 (+0.20 points for v2, ")
    assert verdict.endswith("only v1 right on 10, only v2 right on 12)")


@pytest.mark.parametrize(
    ("y_true", "y_pred", "words"),
    [([0, 1, 2], [0], "one length"), ([0, 1, 2], [0, 1, -1], "predicted class outside 0..2"),
     ([0, 3, 2], [0, 1, 2], "true class outside 0..2")],
)  # fmt: skip
def test_the_confusion_matrix_refuses_what_it_would_otherwise_miscount(y_true, y_pred, words):
    with pytest.raises(ValueError, match=words):
        confusion_matrix(np.array(y_true), np.array(y_pred), 3)
