"""Statistics for honest accuracy numbers: Wilson intervals and McNemar's exact test."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Z_95 = 1.959963984540054


@dataclass(frozen=True)
class Interval:
    """A proportion with its confidence interval."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{100 * self.value:.2f}% [{100 * self.low:.2f}, {100 * self.high:.2f}]"


def wilson_interval(successes: int, total: int, z: float = Z_95) -> Interval:
    """Wilson score interval for a binomial proportion (95% by default)."""
    if total <= 0:
        raise ValueError("wilson_interval needs at least one trial")
    if not 0 <= successes <= total:
        raise ValueError(f"successes={successes} outside 0..{total}")
    p = successes / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class McNemarResult:
    """Outcome of McNemar's exact test on two classifiers' paired predictions."""

    only_a_correct: int
    only_b_correct: int
    p_value: float

    def significant(self, alpha: float = 0.05) -> bool:
        return self.p_value < alpha


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemarResult:
    """Two-sided exact McNemar test: a binomial test on the discordant pairs."""
    correct_a = np.asarray(correct_a, dtype=bool)
    correct_b = np.asarray(correct_b, dtype=bool)
    if correct_a.shape != correct_b.shape:
        raise ValueError("both classifiers must be scored on the same images")
    return mcnemar_from_counts(int(np.sum(correct_a & ~correct_b)), int(np.sum(~correct_a & correct_b)))


def mcnemar_from_counts(b: int, c: int) -> McNemarResult:
    """The same test from the discordant counts: b images only A gets right, c only B."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts cannot be negative, got {b} and {c}")
    n = b + c
    if n == 0:
        return McNemarResult(b, c, 1.0)
    k = min(b, c)
    # P(X <= k) for X ~ Binomial(n, 1/2), doubled for a two-sided test; log space avoids overflow.
    log_terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(k + 1)]
    top = max(log_terms)
    tail = math.exp(top + math.log(sum(math.exp(t - top) for t in log_terms)) - n * math.log(2))
    return McNemarResult(b, c, min(1.0, 2 * tail))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts [true, predicted] as an int64 matrix.

    Refuses labels of different lengths (one prediction would otherwise be broadcast over every label)
    and classes outside 0..num_classes-1 (a -1 would otherwise be counted in the last class).
    """
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape:
        raise ValueError(f"true and predicted classes must be two lists of one length, got shapes "
                         f"{list(y_true.shape)} and {list(y_pred.shape)}")
    for name, values in (("true", y_true), ("predicted", y_pred)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"a {name} class outside 0..{num_classes - 1}")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm
