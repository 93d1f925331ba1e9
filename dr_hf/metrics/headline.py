"""The one function that scores a grader: every headline metric, with 95 % CIs when asked.

Training's evaluation (`make_compute_metrics`), `dr-hf evaluate`, cross-validation, ensembles,
`dr-hf compare` and the `dr_grading` evaluate module all call `compute_dr_metrics`; a metric
added to `functional.grading_metrics` (and, for its interval, to `bootstrap.resampled_metrics`)
reaches all of them.
"""

import logging

import numpy as np
import scipy.special

from dr_hf.grading_rule import GradeRule, is_regression
from dr_hf.metrics.bootstrap import bootstrap_distribution, percentile_interval, resampled_metrics
from dr_hf.metrics.functional import (
    HEADLINE,
    check_inputs,
    grading_metrics,
    referable_operating_points,
)

logger = logging.getLogger(__name__)


def compute_dr_metrics(
    probabilities, labels, bootstrap: int = 0, seed: int = 0, rule: GradeRule | None = None
) -> dict:
    """Every metric of `probabilities` [N, 5] (softmax or ordinal probabilities; or regression
    scores [N, 1]) against integer grades [N], the grades decided by `rule` (argmax by default).

    `grading_metrics`' keys (the `HEADLINE` scalars, per-grade recall, confusion matrix), then
    `referable_operating_points` (sensitivity at 90 % and 95 % specificity, with the thresholds
    on P(grade >= 2), or on the score), and with `bootstrap` resamples `ci95`: the percentile 95 %
    interval of each headline metric, as [lo, hi] (`None` where no resample defines it).
    """
    probs, y = check_inputs(probabilities, labels)
    rule = rule or GradeRule()
    metrics = grading_metrics(probs, y, rule)
    metrics["referable_operating_points"] = referable_operating_points(probs, y)
    grades = rule.grades(probs)
    if bootstrap:
        draws = bootstrap_distribution(
            lambda indices: resampled_metrics(probs, y, indices, grades=grades),
            len(y),
            bootstrap,
            seed,
        )
        lo, hi, skipped = percentile_interval(draws)
        metrics["ci95"] = {}
        undefined = ("macro_auroc", "ece") if is_regression(probs) else ()  # no probabilities
        for k, name in enumerate(HEADLINE):
            if skipped[k] and name not in undefined:
                logger.warning(
                    "%s was undefined on %d of %d resamples.", name, skipped[k], bootstrap
                )
            interval = [float(lo[k]), float(hi[k])]
            metrics["ci95"][name] = interval if skipped[k] < bootstrap else [None, None]
    return metrics


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    return scipy.special.softmax(np.asarray(logits, dtype=np.float64), axis=1)


def model_outputs(logits: np.ndarray) -> np.ndarray:
    """What a model's logits say, as the metrics take it: the softmax of class logits [N, 5]
    (an ordinal model's log-probabilities give its probabilities back), or regression scores
    [N, 1] as they are."""
    logits = np.asarray(logits, dtype=np.float64)
    return logits if is_regression(logits) else softmax(logits)


def make_compute_metrics(rule: GradeRule | None = None):
    """A `Trainer(compute_metrics=...)` function: the model's outputs (`model_outputs`), then
    every scalar metric, the grades decided by `rule` (argmax by default).

    The confusion matrix and operating points are dropped so that the Trainer's logs stay
    scalar; undefined metrics (e.g. the recall of a grade missing from the evaluation split) are
    logged as nan.
    """

    def compute_metrics(eval_pred) -> dict[str, float]:
        logits = eval_pred.predictions
        if isinstance(logits, tuple | list):  # models that also return hidden states
            logits = logits[0]
        result = compute_dr_metrics(model_outputs(logits), eval_pred.label_ids, rule=rule)
        return {k: v for k, v in result.items() if isinstance(v, float)}

    return compute_metrics
