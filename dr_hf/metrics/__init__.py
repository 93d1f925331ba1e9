"""Evaluation of DR graders on scikit-learn and SciPy: the headline metrics (`compute_dr_metrics`),
the Trainer hook, calibration, screening operating points, bootstrap intervals and the
`dr_grading` evaluate module.

All accuracies, recalls, sensitivities and specificities are fractions in [0, 1].
"""

from pathlib import Path

from dr_hf.metrics.bootstrap import (
    BootstrapCI,
    bootstrap_ci,
    bootstrap_distribution,
    percentile_interval,
    resampled_metrics,
)
from dr_hf.metrics.functional import (
    HEADLINE,
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
from dr_hf.metrics.headline import (
    compute_dr_metrics,
    make_compute_metrics,
    model_outputs,
    softmax,
)

DR_GRADING_PATH = str(Path(__file__).parent / "dr_grading")
"""Folder of the evaluate module: `evaluate.load(DR_GRADING_PATH)` works offline."""

__all__ = [
    "DR_GRADING_PATH",
    "HEADLINE",
    "BootstrapCI",
    "binary_auroc",
    "bootstrap_ci",
    "bootstrap_distribution",
    "calibration_bins",
    "compute_dr_metrics",
    "expected_calibration_error",
    "grading_metrics",
    "macro_auroc",
    "make_compute_metrics",
    "model_outputs",
    "percentile_interval",
    "quadratic_weighted_kappa",
    "referable_auroc",
    "referable_operating_points",
    "referable_scores",
    "resampled_metrics",
    "sensitivity_at_specificity",
    "softmax",
]
