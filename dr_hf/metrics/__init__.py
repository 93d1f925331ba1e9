"""Evaluation of DR graders: the `dr_grading` evaluate module, Trainer metrics, calibration,
screening operating points and bootstrap confidence intervals.

All accuracies, recalls, sensitivities and specificities are fractions in [0, 1].
"""

import functools
from pathlib import Path

import numpy as np
import scipy.special

from dr_hf.metrics.bootstrap import METRIC_FNS, BootstrapCI, bootstrap_ci
from dr_hf.metrics.functional import (
    binary_auroc,
    calibration_bins,
    expected_calibration_error,
    grading_metrics,
    macro_auroc,
    quadratic_weighted_kappa,
    referable_auroc,
    referable_operating_points,
    referable_scores,
    sensitivity_at_specificity,
)

DR_GRADING_PATH = str(Path(__file__).parent / "dr_grading")
"""Folder of the evaluate module: `evaluate.load(DR_GRADING_PATH)` works offline."""

__all__ = [
    "DR_GRADING_PATH",
    "METRIC_FNS",
    "BootstrapCI",
    "binary_auroc",
    "bootstrap_ci",
    "calibration_bins",
    "compute_dr_metrics",
    "expected_calibration_error",
    "grading_metrics",
    "load_dr_grading",
    "macro_auroc",
    "make_compute_metrics",
    "quadratic_weighted_kappa",
    "referable_auroc",
    "referable_operating_points",
    "referable_scores",
    "sensitivity_at_specificity",
    "softmax",
]


@functools.cache
def load_dr_grading():
    """The `DRGrading` evaluate metric, built once; in memory, so it writes no Arrow cache."""
    from dr_hf.metrics.dr_grading.dr_grading import DRGrading

    return DRGrading(keep_in_memory=True)


def compute_dr_metrics(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """All grading metrics (see `grading_metrics`), confusion matrix included. `probabilities`
    are softmax vectors [N, 5]. The same function the `dr_grading` evaluate module computes, called
    directly: the Trainer's evaluation needs no round trip through Arrow."""
    return grading_metrics(probabilities, labels)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    return scipy.special.softmax(np.asarray(logits, dtype=np.float64), axis=1)


def make_compute_metrics():
    """A `Trainer(compute_metrics=...)` function: softmax of the logits, then every scalar metric.

    The confusion matrix is dropped so that the Trainer's logs stay scalar; undefined metrics
    (e.g. the recall of a grade missing from the evaluation split) are logged as nan.
    """

    def compute_metrics(eval_pred) -> dict[str, float]:
        logits = eval_pred.predictions
        if isinstance(logits, tuple | list):  # models that also return hidden states
            logits = logits[0]
        result = compute_dr_metrics(softmax(logits), eval_pred.label_ids)
        return {k: v for k, v in result.items() if k != "confusion_matrix"}

    return compute_metrics
