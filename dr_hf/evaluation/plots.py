"""The figures of an evaluation: confusion matrix, ROC curves and reliability diagram.

Figures are built with matplotlib's object API (`matplotlib.figure.Figure`), which renders PNGs
with the Agg backend and touches no global pyplot state: safe on servers and in threads.
"""

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from dr_hf.grades import GRADE_NAMES, NUM_GRADES, REFERABLE_MIN_GRADE
from dr_hf.metrics import (
    binary_auroc,
    calibration_bins,
    expected_calibration_error,
    referable_scores,
)

DPI = 120


def _save(figure: Figure, path: str | Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    return Path(path)


def plot_confusion_matrix(confusion: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Counts and row-normalised fractions (recall per true grade) side by side."""
    counts = np.asarray(confusion, dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    figure = Figure(figsize=(12, 5))
    short = [f"{grade}: {name}" for grade, name in enumerate(GRADE_NAMES)]
    panels = (("Counts", counts, "{:d}"), ("Row-normalised (recall)", fractions, "{:.2f}"))
    for index, (name, values, fmt) in enumerate(panels):
        ax = figure.add_subplot(1, 2, index + 1)
        image = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
        for (row, col), value in np.ndenumerate(values):
            colour = "white" if fractions[row, col] > 0.5 else "black"
            ax.text(col, row, fmt.format(value), ha="center", va="center", color=colour)
        ax.set_xticks(range(NUM_GRADES), short, rotation=30, ha="right")
        ax.set_yticks(range(NUM_GRADES), short)
        ax.set_xlabel("Predicted grade")
        ax.set_ylabel("True grade")
        ax.set_title(name)
        figure.colorbar(image, ax=ax, fraction=0.046)
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def plot_roc(
    probabilities: np.ndarray,
    labels: np.ndarray,
    path: str | Path,
    operating_points: dict | None = None,
    title: str = "",
) -> Path:
    """One-vs-rest ROC per grade (left) and referable DR, P(grade >= 2), with the screening
    operating points marked (right). Grades absent from `labels` or present alone are skipped."""
    labels = np.asarray(labels)
    figure = Figure(figsize=(12, 5.5))
    per_grade, referable = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    for grade in range(NUM_GRADES):
        positive = labels == grade
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = roc_curve(positive, probabilities[:, grade])
        auc = binary_auroc(positive, probabilities[:, grade])
        per_grade.plot(fpr, tpr, label=f"{grade} {GRADE_NAMES[grade]} (AUROC {auc:.3f})")
    per_grade.set_title("Per grade, one vs rest")

    positive, scores = labels >= REFERABLE_MIN_GRADE, referable_scores(probabilities)
    if positive.any() and not positive.all():
        fpr, tpr, _ = roc_curve(positive, scores)
        auc = binary_auroc(positive, scores)
        referable.plot(fpr, tpr, color="C3", lw=2, label=f"Referable DR (AUROC {auc:.3f})")
    for name, point in (operating_points or {}).items():
        if point.get("sensitivity") is not None and point.get("specificity") is not None:
            referable.plot(
                1 - point["specificity"],
                point["sensitivity"],
                "o",
                label=f"{name}: sens {point['sensitivity']:.3f} at P >= {point['threshold']:.3f}",
            )
    referable.set_title("Referable DR (grade >= 2)")
    for ax in (per_grade, referable):
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("1 - specificity (false positive rate)")
        ax.set_ylabel("Sensitivity (true positive rate)")
        ax.legend(loc="lower right", fontsize=8)
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def plot_reliability(
    probabilities: np.ndarray,
    labels: np.ndarray,
    path: str | Path,
    n_bins: int = 15,
    title: str = "",
    ece: float | None = None,
) -> Path:
    """Save `reliability_figure` as a PNG."""
    return _save(reliability_figure(probabilities, labels, n_bins, title, ece), path)


def reliability_figure(
    probabilities: np.ndarray,
    labels: np.ndarray,
    n_bins: int = 15,
    title: str = "",
    ece: float | None = None,
) -> Figure:
    """Accuracy against confidence (top-label probability) per bin, with the bins' image counts
    below; the bars would lie on the diagonal for a calibrated grader. The bins are those of
    `expected_calibration_error`; `ece` is the value already computed, if any."""
    count, accuracy, _ = calibration_bins(probabilities, labels, n_bins)
    if ece is None:
        ece = expected_calibration_error(probabilities, labels, n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    figure = Figure(figsize=(6, 7))
    top = figure.add_subplot(4, 1, (1, 3))
    width = 1.0 / n_bins
    top.bar(edges[:-1], np.nan_to_num(accuracy), width=width, align="edge", edgecolor="black")
    top.plot([0, 1], [0, 1], ls="--", color="grey", label="Perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("Accuracy")
    top.set_title(f"{title + ': r' if title else 'R'}eliability (ECE {ece:.3f})")
    top.legend(loc="upper left")
    bottom = figure.add_subplot(4, 1, 4, sharex=top)
    bottom.bar(edges[:-1], count, width=width, align="edge", color="grey")
    bottom.set_xlabel("Confidence (highest grade probability)")
    bottom.set_ylabel("Images")
    return figure


__all__ = ["plot_confusion_matrix", "plot_reliability", "plot_roc", "reliability_figure"]
