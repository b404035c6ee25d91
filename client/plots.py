"""Pictures people would rather look at than read: confusion matrices and misclassified digits."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], path: Path, title: str = "") -> Path:
    """Write a labelled confusion-matrix heat map (rows: true class, columns: predicted)."""
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.65 * n, 0.8 + 0.6 * n), dpi=110)
    shown = np.log1p(cm)  # the diagonal dwarfs the errors otherwise
    ax.imshow(shown, cmap="Blues")
    for i in range(n):
        for j in range(n):
            colour = "white" if shown[i, j] > shown.max() * 0.6 else "black"
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "Confusion matrix")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_misclassified(
    images: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    class_names: Sequence[str],
    path: Path,
    limit: int = 100,
) -> Path:
    """Write a gallery of misclassified images titled "true: X" over "pred: Y" (at most `limit`)."""
    wrong = np.flatnonzero(np.asarray(y_true) != np.asarray(y_pred))[:limit]
    ncols = 10
    nrows = max(1, -(-len(wrong) // ncols))
    # Constrained layout keeps each title clear of the row above and of the suptitle; tight_layout did not.
    fig = plt.figure(figsize=(ncols * 1.3, 0.4 + nrows * 1.6), dpi=90, layout="constrained")
    for k, idx in enumerate(wrong):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        ax.imshow(np.asarray(images[idx]).squeeze(), cmap="gray_r")
        # Two lines: on one, Fashion-MNIST's names ("true: Ankle boot pred: Pullover") run into the next.
        ax.set_title(f"true: {class_names[y_true[idx]]}\npred: {class_names[y_pred[idx]]}", fontsize=7)
        ax.axis("off")
    if len(wrong) == 0:
        fig.text(0.5, 0.5, "no misclassified images", ha="center", va="center")
    total_wrong = int(np.sum(np.asarray(y_true) != np.asarray(y_pred)))
    shown = f" (the first {len(wrong)} shown)" if len(wrong) < total_wrong else ""
    fig.suptitle(f"{total_wrong} misclassified{shown}", fontsize=10)
    return save_figure(fig, path)


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Write `fig` to `path` (making its folder) and free it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
