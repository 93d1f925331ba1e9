"""Grading metrics in plain NumPy, fast enough to bootstrap a thousand times.

Everything is derived from one 5x5 confusion matrix (rows = true grade) and, for the AUROCs, from
rank statistics; the tests check each value against scikit-learn. A metric that a sample cannot
define (the recall of a grade that no image has, an AUROC with one class) is `nan`, never a guess.
Accuracies, recalls, sensitivities and specificities are fractions in [0, 1].
"""

import numpy as np
from scipy.stats import rankdata

from dr_hf.grades import NUM_GRADES, REFERABLE_MIN_GRADE


def check_inputs(probabilities, labels) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert: probabilities [N, 5] rows summing to 1, labels [N] grades 0-4."""
    probs = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels)
    if probs.ndim != 2 or probs.shape[1] != NUM_GRADES:
        raise ValueError(
            f"probabilities must have shape [N, {NUM_GRADES}], got {probs.shape}: one softmax "
            "vector per image."
        )
    if y.shape != (probs.shape[0],):
        raise ValueError(f"labels must have shape [{probs.shape[0]}], got {y.shape}.")
    if len(y) == 0:
        raise ValueError("No images to score: probabilities and labels are empty.")
    if not np.all(np.isfinite(probs)):
        raise ValueError("probabilities contain NaN or infinity; check the model's outputs.")
    if not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
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


def confusion(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """5x5 count matrix, rows = true grade, columns = predicted grade."""
    flat = np.bincount(labels * NUM_GRADES + predicted, minlength=NUM_GRADES * NUM_GRADES)
    return flat.reshape(NUM_GRADES, NUM_GRADES)


def _divide(num, den):
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def qwk_from_confusion(cm: np.ndarray) -> float:
    """Quadratic weighted Cohen kappa over the full 0-4 scale (sklearn with labels=range(5)).

    `nan` when chance agreement is already perfect (e.g. every image and prediction one grade).
    """
    n = cm.sum()
    grades = np.arange(len(cm))
    weights = (grades[:, None] - grades[None, :]) ** 2
    expected = np.outer(cm.sum(axis=1), cm.sum(axis=0)) / n
    return float(1.0 - _divide((weights * cm).sum(), (weights * expected).sum()))


def quadratic_weighted_kappa(labels, predicted_grades) -> float:
    """QWK of predicted grades against true grades (both ints 0-4)."""
    return qwk_from_confusion(confusion(np.asarray(labels), np.asarray(predicted_grades)))


def binary_auroc(y_true, scores) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic (ties count half); `nan`
    unless both classes are present."""
    y = np.asarray(y_true, dtype=bool)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def macro_auroc(probabilities, labels) -> float:
    """One-vs-rest AUROC averaged over the grades present in `labels`; `nan` with fewer than two.

    With all five grades present this equals sklearn's `roc_auc_score(multi_class="ovr")`.
    """
    probs, y = np.asarray(probabilities), np.asarray(labels)
    present = np.unique(y)
    if len(present) < 2:
        return float("nan")
    return float(np.mean([binary_auroc(y == g, probs[:, g]) for g in present]))


def referable_scores(probabilities) -> np.ndarray:
    """P(grade >= 2): the probability mass of moderate NPDR or worse."""
    return np.asarray(probabilities)[:, REFERABLE_MIN_GRADE:].sum(axis=1)


def referable_auroc(probabilities, labels) -> float:
    """AUROC of P(grade >= 2) for referable DR; `nan` unless both sides are present."""
    return binary_auroc(np.asarray(labels) >= REFERABLE_MIN_GRADE, referable_scores(probabilities))


def accuracy(probabilities, labels) -> float:
    """Fraction of images whose argmax grade is the true grade."""
    return float(np.mean(np.asarray(probabilities).argmax(axis=1) == np.asarray(labels)))


def qwk(probabilities, labels) -> float:
    """QWK of the argmax grade: the (probabilities, labels) form that `bootstrap_ci` takes."""
    return quadratic_weighted_kappa(labels, np.asarray(probabilities).argmax(axis=1))


def grading_metrics(probabilities, labels) -> dict:
    """Every grading metric of `probabilities` [N, 5] (softmax) against integer grades [N].

    Keys: accuracy, class_0_acc..class_4_acc (recall of each grade, `nan` for a grade absent
    from the labels), qwk, macro_f1 (over the grades in labels or predictions, as sklearn),
    macro_auroc, referable_auroc, referable_sensitivity, referable_specificity (predicted grade
    >= 2 as the operating point) and confusion_matrix (5x5 list of lists, rows = true grade).
    """
    probs, y = check_inputs(probabilities, labels)
    cm = confusion(y, probs.argmax(axis=1))
    tp, support, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    seen = (support + predicted) > 0
    f1 = _divide(2 * tp, support + predicted)
    r = REFERABLE_MIN_GRADE
    metrics = {"accuracy": float(tp.sum() / cm.sum())}
    metrics.update({f"class_{g}_acc": float(v) for g, v in enumerate(_divide(tp, support))})
    metrics.update(
        qwk=qwk_from_confusion(cm),
        macro_f1=float(f1[seen].mean()),
        macro_auroc=macro_auroc(probs, y),
        referable_auroc=referable_auroc(probs, y),
        referable_sensitivity=float(_divide(cm[r:, r:].sum(), cm[r:].sum())),
        referable_specificity=float(_divide(cm[:r, :r].sum(), cm[:r].sum())),
        confusion_matrix=cm.tolist(),
    )
    return metrics


def calibration_bins(
    probabilities, labels, n_bins: int = 15
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(count, accuracy, confidence) per equal-width bin (i/n, (i+1)/n] of the top-label
    probability: images, fraction right and mean confidence in each bin (`nan` where empty)."""
    probs, y = check_inputs(probabilities, labels)
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}.")
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    accuracy = _divide(np.bincount(bins, weights=correct, minlength=n_bins), count)
    mean_confidence = _divide(np.bincount(bins, weights=confidence, minlength=n_bins), count)
    return count, accuracy, mean_confidence


def expected_calibration_error(probabilities, labels, n_bins: int = 15) -> float:
    """Top-label ECE: |accuracy - confidence| of each `calibration_bins` bin, weighted by the
    fraction of images in it (Guo et al. 2017)."""
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
    from sklearn.metrics import roc_curve

    if not 0.0 <= specificity <= 1.0:
        raise ValueError(f"specificity must lie in [0, 1], got {specificity}.")
    y = np.asarray(y_true_binary).astype(bool)
    if y.all() or not y.any():
        return float("nan"), float("nan")
    fpr, tpr, thresholds = roc_curve(y, np.asarray(scores), drop_intermediate=False)
    ok = (1.0 - fpr) >= specificity - 1e-12
    best = np.flatnonzero(ok)[np.argmax(tpr[ok])]
    return float(tpr[best]), float(thresholds[best])


SCREENING_SPECIFICITIES = (0.90, 0.95)


def referable_operating_points(
    probabilities, labels, specificities=SCREENING_SPECIFICITIES
) -> dict[str, dict]:
    """Per target specificity (`spec_90`, `spec_95`): the threshold on P(grade >= 2) that gives
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
