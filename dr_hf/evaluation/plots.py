"""The figures of an evaluation: confusion matrix, ROC curves and reliability diagram, drawn by
scikit-learn's `ConfusionMatrixDisplay`, `RocCurveDisplay` and `CalibrationDisplay`.

Figures are built with matplotlib's object API (`matplotlib.figure.Figure`), which renders PNGs
with the Agg backend and touches no global pyplot state: safe on servers and in threads.
"""

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.calibration import CalibrationDisplay
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

from dr_hf.grades import GRADE_NAMES, NUM_GRADES, REFERABLE_MIN_GRADE
from dr_hf.grading_rule import is_regression
from dr_hf.metrics import calibration_bins, expected_calibration_error, referable_scores

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
    panels = (("Counts", counts, "d"), ("Row-normalised (recall)", fractions, ".2f"))
    for index, (name, values, fmt) in enumerate(panels):
        ax = figure.add_subplot(1, 2, index + 1)
        display = ConfusionMatrixDisplay(values, display_labels=short)
        display.plot(ax=ax, cmap="Blues", values_format=fmt, xticks_rotation=30)
        ax.set(xlabel="Predicted grade", ylabel="True grade", title=name)
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
    operating points marked (right). Grades absent from `labels` or present alone are skipped.
    Regression scores [N, 1] have no per-grade probabilities: the referable panel alone, on
    the score."""
    labels = np.asarray(labels)
    regression = is_regression(probabilities)
    figure = Figure(figsize=(6.5, 5.5) if regression else (12, 5.5))
    if regression:
        per_grade, referable = None, figure.add_subplot(1, 1, 1)
    else:
        per_grade, referable = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    for grade in range(0 if regression else NUM_GRADES):
        positive = labels == grade
        if positive.any() and not positive.all():
            name = f"{grade} {GRADE_NAMES[grade]}"
            RocCurveDisplay.from_predictions(
                positive, probabilities[:, grade], name=name, ax=per_grade
            )
    if per_grade is not None:
        per_grade.set_title("Per grade, one vs rest")
    on = "score" if regression else "P"

    positive, scores = labels >= REFERABLE_MIN_GRADE, referable_scores(probabilities)
    if positive.any() and not positive.all():
        style = {"color": "C3", "lw": 2}
        RocCurveDisplay.from_predictions(
            positive, scores, name="Referable DR", ax=referable, curve_kwargs=style
        )
    for name, point in (operating_points or {}).items():
        if point.get("sensitivity") is not None and point.get("specificity") is not None:
            referable.plot(
                1 - point["specificity"],
                point["sensitivity"],
                "o",
                label=f"{name}: sens {point['sensitivity']:.3f} at {on} >= "
                f"{point['threshold']:.3f}",
            )
    referable.set_title("Referable DR (grade >= 2)")
    for ax in filter(None, (per_grade, referable)):
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
    """Accuracy against confidence (top-label probability) per bin (`CalibrationDisplay`), with
    the bins' image counts below; the curve would lie on the diagonal for a calibrated grader.
    The bins are those of `expected_calibration_error`; `ece` is the value already computed,
    if any."""
    count, accuracy, confidence = calibration_bins(probabilities, labels, n_bins)
    if ece is None:
        ece = expected_calibration_error(probabilities, labels, n_bins)
    filled = count > 0
    top_label = np.asarray(probabilities).max(axis=1)
    display = CalibrationDisplay(accuracy[filled], confidence[filled], top_label)
    figure = Figure(figsize=(6, 7))
    top = figure.add_subplot(4, 1, (1, 3))
    display.plot(ax=top, name="Grader")
    top.set(xlim=(0, 1), ylim=(0, 1), xlabel="", ylabel="Accuracy")
    top.set_title(f"{title + ': r' if title else 'R'}eliability (ECE {ece:.3f})")
    top.legend(loc="upper left")
    width, edges = 1.0 / n_bins, np.linspace(0.0, 1.0, n_bins + 1)
    bottom = figure.add_subplot(4, 1, 4, sharex=top)
    bottom.bar(edges[:-1], count, width=width, align="edge", color="grey")
    bottom.set_xlabel("Confidence (highest grade probability)")
    bottom.set_ylabel("Images")
    return figure


__all__ = ["plot_confusion_matrix", "plot_reliability", "plot_roc", "reliability_figure"]
