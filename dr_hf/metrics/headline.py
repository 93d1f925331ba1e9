"""The one function that scores a grader: every headline metric, with 95 % CIs when asked.

Training's evaluation (`make_compute_metrics`), `dr-hf evaluate`, cross-validation, ensembles,
`dr-hf compare` and the `dr_grading` evaluate module all call `compute_dr_metrics`; a metric
added to `functional.grading_metrics` (and, for its interval, to `bootstrap.resampled_metrics`)
reaches all of them.
"""

import logging

import numpy as np
import scipy.special

from dr_hf.metrics.bootstrap import bootstrap_distribution, percentile_interval, resampled_metrics
from dr_hf.metrics.functional import (
    HEADLINE,
    check_inputs,
    grading_metrics,
    referable_operating_points,
)

logger = logging.getLogger(__name__)


def compute_dr_metrics(probabilities, labels, bootstrap: int = 0, seed: int = 0) -> dict:
    """Every metric of `probabilities` [N, 5] (softmax) against integer grades [N].

    `grading_metrics`' keys (the `HEADLINE` scalars, per-grade recall, confusion matrix), then
    `referable_operating_points` (sensitivity at 90 % and 95 % specificity, with the thresholds
    on P(grade >= 2)), and with `bootstrap` resamples `ci95`: the percentile 95 % interval of
    each headline metric, as [lo, hi] (`None` where no resample defines it).
    """
    probs, y = check_inputs(probabilities, labels)
    metrics = grading_metrics(probs, y)
    metrics["referable_operating_points"] = referable_operating_points(probs, y)
    if bootstrap:
        draws = bootstrap_distribution(
            lambda indices: resampled_metrics(probs, y, indices), len(y), bootstrap, seed
        )
        lo, hi, skipped = percentile_interval(draws)
        metrics["ci95"] = {}
        for k, name in enumerate(HEADLINE):
            if skipped[k]:
                logger.warning(
                    "%s was undefined on %d of %d resamples.", name, skipped[k], bootstrap
                )
            interval = [float(lo[k]), float(hi[k])]
            metrics["ci95"][name] = interval if skipped[k] < bootstrap else [None, None]
    return metrics


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    return scipy.special.softmax(np.asarray(logits, dtype=np.float64), axis=1)


def make_compute_metrics():
    """A `Trainer(compute_metrics=...)` function: softmax of the logits, then every scalar metric.

    The confusion matrix and operating points are dropped so that the Trainer's logs stay
    scalar; undefined metrics (e.g. the recall of a grade missing from the evaluation split) are
    logged as nan.
    """

    def compute_metrics(eval_pred) -> dict[str, float]:
        logits = eval_pred.predictions
        if isinstance(logits, tuple | list):  # models that also return hidden states
            logits = logits[0]
        result = compute_dr_metrics(softmax(logits), eval_pred.label_ids)
        return {k: v for k, v in result.items() if isinstance(v, float)}

    return compute_metrics
