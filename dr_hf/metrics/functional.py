"""Grading metrics of one set of outputs, each a scikit-learn call on the 0-4 scale.

Outputs are grade probabilities [N, 5] (softmax and ordinal heads) or regression scores [N, 1];
the grades come from a `GradeRule` (argmax by default). A regression model has no class
probabilities, so its macro AUROC and ECE are `nan`; its referable score is the score itself.

A metric that the images cannot define (the recall of a grade no image has, an AUROC with one
class, a kappa whose chance agreement is already perfect) is `nan`, never a guess; scikit-learn's
warning about it is silenced, since the `nan` says it. Accuracies, recalls, sensitivities and
specificities are fractions in [0, 1].
"""

import warnings

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from dr_hf.grades import NUM_GRADES, REFERABLE_MIN_GRADE
from dr_hf.grading_rule import GradeRule, is_regression

GRADES = list(range(NUM_GRADES))
SCREENING_SPECIFICITIES = (0.90, 0.95)
HEADLINE = (
    "accuracy",
    "qwk",
    "macro_f1",
    "macro_auroc",
    "referable_auroc",
    "referable_sensitivity",
    "referable_specificity",
    "ece",
)
"""The scalar metrics every report, comparison and bootstrap interval speaks of."""


def check_inputs(probabilities, labels) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert: outputs [N, 5] probabilities (rows summing to 1) or [N, 1]
    regression scores, labels [N] grades 0-4."""
    probs = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels)
    if probs.ndim != 2 or probs.shape[1] not in (1, NUM_GRADES):
        raise ValueError(
            f"probabilities must have shape [N, {NUM_GRADES}], got {probs.shape}: one softmax "
            "vector per image (or [N, 1], one regression score per image)."
        )
    if y.shape != (probs.shape[0],):
        raise ValueError(f"labels must have shape [{probs.shape[0]}], got {y.shape}.")
    if len(y) == 0:
        raise ValueError("No images to score: probabilities and labels are empty.")
    if not np.all(np.isfinite(probs)):
        raise ValueError("probabilities contain NaN or infinity; check the model's outputs.")
    if not is_regression(probs) and not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        bad = int(np.argmax(np.abs(probs.sum(axis=1) - 1.0)))
        raise ValueError(
            f"Row {bad} of probabilities sums to {probs[bad].sum():.4f}, not 1: pass softmax "
            "probabilities, not logits (make_compute_metrics applies the softmax for you)."
        )
    if y.dtype.kind == "f" and not np.all(y == np.round(y)):
        raise ValueError("labels must be integer grades 0-4.")
    y = y.astype(np.int64)
    bad = np.flatnonzero((y < 0) | (y >= NUM_GRADES))
    if len(bad):
        raise ValueError(f"labels[{bad[0]}] = {y[bad[0]]} is not a grade 0-{NUM_GRADES - 1}.")
    return probs, y


def quadratic_weighted_kappa(labels, predicted_grades) -> float:
    """QWK over the full 0-4 scale (not only the grades present); `nan` when undefined."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return float(
            cohen_kappa_score(labels, predicted_grades, weights="quadratic", labels=GRADES)
        )


def binary_auroc(y_true, scores) -> float:
    """Area under the ROC curve; `nan` unless both classes are present."""
    y = np.asarray(y_true, dtype=bool)
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, scores))


def macro_auroc(probabilities, labels) -> float:
    """One-vs-rest AUROC averaged over the grades present in `labels`; `nan` with fewer than two.

    With all five grades present this is `roc_auc_score(multi_class="ovr")`, which refuses a
    set that misses a grade; the per-grade form scores such a set too.
    """
    probs, y = np.asarray(probabilities), np.asarray(labels)
    present = np.unique(y)
    if len(present) < 2:
        return float("nan")
    return float(np.mean([roc_auc_score(y == g, probs[:, g]) for g in present]))


def referable_scores(probabilities) -> np.ndarray:
    """P(grade >= 2), the probability mass of moderate NPDR or worse; for regression scores
    [N, 1], the score itself."""
    values = np.asarray(probabilities)
    if is_regression(values):
        return values[:, 0].astype(np.float64)
    return values[:, REFERABLE_MIN_GRADE:].sum(axis=1)


def referable_auroc(probabilities, labels) -> float:
    """AUROC of P(grade >= 2) (or of a regression score) for referable DR; `nan` unless both
    sides are present."""
    return binary_auroc(np.asarray(labels) >= REFERABLE_MIN_GRADE, referable_scores(probabilities))


def grading_metrics(probabilities, labels, rule: GradeRule | None = None) -> dict:
    """Every grading metric of `probabilities` [N, 5] (or regression scores [N, 1]) against
    integer grades [N], the grades decided by `rule` (argmax by default).

    Keys: accuracy, class_0_acc..class_4_acc (recall of each grade, `nan` for a grade absent
    from the labels), qwk, macro_f1 (over the grades in labels or predictions, as sklearn),
    macro_auroc, referable_auroc, referable_sensitivity, referable_specificity (predicted grade
    >= 2 as the operating point), ece (`expected_calibration_error`) and confusion_matrix (5x5
    list of lists, rows = true grade). Regression scores have no macro AUROC or ECE (`nan`).
    """
    probs, y = check_inputs(probabilities, labels)
    predicted = (rule or GradeRule()).grades(probs)
    referable, referred = y >= REFERABLE_MIN_GRADE, predicted >= REFERABLE_MIN_GRADE
    recall = recall_score(y, predicted, labels=GRADES, average=None, zero_division=np.nan)
    metrics = {"accuracy": float(np.mean(predicted == y))}
    metrics.update({f"class_{g}_acc": float(v) for g, v in enumerate(recall)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        sensitivity = recall_score(referable, referred, zero_division=np.nan)
        specificity = recall_score(~referable, ~referred, zero_division=np.nan)
    regression = is_regression(probs)
    metrics.update(
        qwk=quadratic_weighted_kappa(y, predicted),
        macro_f1=float(f1_score(y, predicted, average="macro")),
        macro_auroc=float("nan") if regression else macro_auroc(probs, y),
        referable_auroc=referable_auroc(probs, y),
        referable_sensitivity=float(sensitivity),
        referable_specificity=float(specificity),
        ece=float("nan") if regression else expected_calibration_error(probs, y),
        confusion_matrix=confusion_matrix(y, predicted, labels=GRADES).tolist(),
    )
    return metrics


def calibration_bins(
    probabilities, labels, n_bins: int = 15
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(count, accuracy, confidence) per equal-width bin (i/n, (i+1)/n] of the top-label
    probability: images, fraction right and mean confidence in each bin (`nan` where empty).

    The bins are `sklearn.calibration.calibration_curve`'s (strategy "uniform"), whose values on
    the filled bins these are; it returns no counts, which the ECE weights by.
    """
    probs, y = check_inputs(probabilities, labels)
    if is_regression(probs):
        raise ValueError("Calibration needs grade probabilities; a regression score has none.")
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}.")
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == y
    bins = np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1)[1:-1], confidence)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        accuracy = np.bincount(bins, weights=correct, minlength=n_bins) / count
        mean_confidence = np.bincount(bins, weights=confidence, minlength=n_bins) / count
    return count, accuracy, mean_confidence


def expected_calibration_error(probabilities, labels, n_bins: int = 15) -> float:
    """Top-label ECE: |accuracy - confidence| of each `calibration_bins` bin, weighted by the
    fraction of images in it (Guo et al. 2017); scikit-learn has no ECE."""
    count, accuracy, confidence = calibration_bins(probabilities, labels, n_bins)
    filled = count > 0
    gap = np.abs(accuracy[filled] - confidence[filled])
    return float((count[filled] * gap).sum() / count.sum())


def sensitivity_at_specificity(scores, y_true_binary, specificity: float) -> tuple[float, float]:
    """The highest sensitivity whose specificity is at least `specificity`, and its threshold
    (positive when score >= threshold), read off sklearn's full ROC curve.

    For referable DR pass `referable_scores(probabilities)` and `labels >= 2`; screening reports
    use 0.90 and 0.95. Returns (nan, nan) unless both classes are present.
    """
    if not 0.0 <= specificity <= 1.0:
        raise ValueError(f"specificity must lie in [0, 1], got {specificity}.")
    y = np.asarray(y_true_binary).astype(bool)
    if y.all() or not y.any():
        return float("nan"), float("nan")
    fpr, tpr, thresholds = roc_curve(y, np.asarray(scores), drop_intermediate=False)
    ok = (1.0 - fpr) >= specificity - 1e-12
    best = np.flatnonzero(ok)[np.argmax(tpr[ok])]
    return float(tpr[best]), float(thresholds[best])


def referable_operating_points(
    probabilities, labels, specificities=SCREENING_SPECIFICITIES
) -> dict[str, dict]:
    """Per target specificity (`spec_90`, `spec_95`): the threshold on P(grade >= 2) (on the
    score, for regression scores) that gives
    the highest referable-DR sensitivity at that specificity or more, with the sensitivity and
    specificity it reaches on these images. Thresholds are None where a class is missing."""
    probs, y = check_inputs(probabilities, labels)
    scores, referable = referable_scores(probs), y >= REFERABLE_MIN_GRADE
    points = {}
    for target in specificities:
        sensitivity, threshold = sensitivity_at_specificity(scores, referable, target)
        found = np.isfinite(threshold)
        points[f"spec_{round(target * 100)}"] = {
            "target_specificity": target,
            "sensitivity": sensitivity,
            "specificity": float(np.mean(scores[~referable] < threshold)) if found else None,
            "threshold": threshold if found else None,
        }
    return points
