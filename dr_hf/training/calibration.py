"""What a run fixes on its validation split before export: a calibrating temperature, folded into
the classifier, the grade rule with its QWK-optimised cut points, and the referable-DR operating
points saved with the model.

Temperature scaling (Guo et al. 2017): one scalar T > 0 minimising the negative log-likelihood of
softmax(logits / T) on the validation split. It changes no predicted grade, only how confident
the probabilities are. Dividing the classifier's weight and bias by T gives the same logits / T,
so every consumer of the saved model (dr_hf, `pipeline()`, a LoRA adapter's trained head) gets
calibrated probabilities with no extra step.

An ordinal (CORN) model's outputs are class log-probabilities computed from four conditional
logits z, which its classifier produces: the temperature divides z (folding it into the Linear
does exactly that), and T minimises the negative log-likelihood of `corn_log_probs(z / T)`; z is
recovered from the validation log-probabilities by `corn_logits`. A regression score has no
probabilities to calibrate: no temperature, and the record says so.

The cut points come after the calibration, on the calibrated outputs: `fit_cut_points` on the
validation split's continuous scores (expected grade, or regression score). The saved
`GradeRule` (the run's `grade_rule`, with those cut points) is stored in the model's config as
`dr_hf_grade_rule`; the fitted cut points are saved whichever rule the model uses, so a later
`--grade-rule thresholds` can use them.

The operating points are the thresholds on P(grade >= 2) that reach 90 % and 95 % specificity on
the validation split (on the calibrated probabilities), with the sensitivity each gives; they are
saved in the model's config as `dr_hf_operating_points`, where `dr-hf predict` finds them.
"""

import logging
from collections.abc import Callable

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from torch import nn

from dr_hf.grading_rule import GRADE_RULE_KEY, GradeRule, continuous_scores, fit_cut_points
from dr_hf.metrics import expected_calibration_error, softmax
from dr_hf.models.ordered_heads import corn_log_probs, corn_logits
from dr_hf.models.parts import OPERATING_POINTS_KEY, base_model, timm_backbone

logger = logging.getLogger(__name__)

_LOG_T_RANGE = (-3.0, 3.0)  # T between 0.05 and 20


def _softmax_log_probs(logits: np.ndarray) -> np.ndarray:
    return log_softmax(logits, axis=1)


def corn_array_log_probs(z: np.ndarray) -> np.ndarray:
    """A CORN head's grade log-probabilities from its K-1 logits as a NumPy array: the
    `log_probs` that `fit_temperature` takes for such a head."""
    return corn_log_probs(torch.from_numpy(z)).numpy()


def fit_temperature(
    logits: np.ndarray,
    labels: np.ndarray,
    log_probs: Callable[[np.ndarray], np.ndarray] = _softmax_log_probs,
) -> float:
    """The T > 0 minimising the mean negative log-likelihood of `log_probs(logits / T)`
    (softmax by default; an ordinal model's CORN log-probabilities of its logits z)."""
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels, np.int64)

    def nll(log_t: float) -> float:
        scaled = log_probs(logits / np.exp(log_t))
        return float(-scaled[np.arange(len(labels)), labels].mean())

    found = minimize_scalar(nll, bounds=_LOG_T_RANGE, method="bounded", options={"xatol": 1e-6})
    if min(abs(found.x - edge) for edge in _LOG_T_RANGE) < 1e-3:
        logger.warning(
            "The calibrating temperature reached the edge of its range (%.3g): the model's "
            "validation predictions carry almost no information; check the training.",
            np.exp(found.x),
        )
    return float(np.exp(found.x))


def classifier(model: nn.Module) -> nn.Module:
    """The layer that produces the logits: the timm classifier, or the trained copy PEFT keeps of
    it (`modules_to_save`) in a LoRA model."""
    head = timm_backbone(model).get_classifier()
    if hasattr(head, "modules_to_save"):
        active = head.active_adapter
        head = head.modules_to_save[active if isinstance(active, str) else active[0]]
    return head


@torch.no_grad()
def fold_temperature(model: nn.Module, temperature: float) -> None:
    """Divide the classifier's weight and bias by `temperature`: the model then returns
    logits / temperature."""
    head = classifier(model)
    if not isinstance(head, nn.Linear | nn.Conv2d):
        raise TypeError(
            f"The classifier is a {type(head).__name__}, not a Linear layer: the temperature cannot "
            "be folded into it. Train with --calibrate false."
        )
    head.weight.div_(temperature)
    if head.bias is not None:
        head.bias.div_(temperature)


NO_TEMPERATURE = (
    "A regression model outputs a score, not class probabilities: there is nothing for a "
    "temperature to calibrate."
)


def calibrate(
    model: nn.Module, logits: np.ndarray, labels: np.ndarray, head: str = "softmax"
) -> tuple[np.ndarray, dict]:
    """Fit the temperature on the model's validation `logits`, fold it into `model`, and return
    the model's logits as they now are with a record: the temperature and the validation ECE
    before and after. An ordinal model's logits are its CORN log-probabilities; the temperature
    divides the conditional logits behind them. A regression model is left as it is (temperature
    None, with the reason)."""
    logits = np.asarray(logits, np.float64)
    if head == "regression":
        return logits, {"temperature": None, "reason": NO_TEMPERATURE}
    if head == "ordinal":
        z = corn_logits(torch.from_numpy(logits)).numpy()
        temperature = fit_temperature(z, labels, log_probs=corn_array_log_probs)
        calibrated = corn_array_log_probs(z / temperature)
    else:
        temperature = fit_temperature(logits, labels)
        calibrated = logits / temperature
    fold_temperature(model, temperature)
    record = {
        "temperature": temperature,
        "ece_before": expected_calibration_error(softmax(logits), labels),
        "ece_after": expected_calibration_error(softmax(calibrated), labels),
    }
    logger.info(
        "Temperature %.3f folded into the classifier: validation ECE %.4f -> %.4f.",
        temperature,
        record["ece_before"],
        record["ece_after"],
    )
    return calibrated, record


def save_operating_points(model: nn.Module, points: dict) -> dict:
    """Store the referable-DR operating points measured on the validation split
    (`compute_dr_metrics`' `referable_operating_points`) in the model's config (the base config
    of a LoRA model, which its adapter's base record saves)."""
    setattr(base_model(model).config, OPERATING_POINTS_KEY, points)
    return points


def save_grade_rule(
    model: nn.Module, outputs: np.ndarray, labels: np.ndarray, rule: str
) -> GradeRule:
    """Fit the four cut points on the validation `outputs` ([N, 5] calibrated probabilities or
    [N, 1] regression scores; `continuous_scores`) for QWK, and store the `GradeRule` of `rule`
    with them, and the fit's figures, in the model's config (`dr_hf_grade_rule`)."""
    cut_points, fit = fit_cut_points(continuous_scores(outputs), labels)
    grade_rule = GradeRule(rule, cut_points)
    setattr(base_model(model).config, GRADE_RULE_KEY, grade_rule.record(**fit))
    logger.info(
        "Cut points %s fitted on the validation split (QWK %.4f at 0.5/1.5/2.5/3.5, %.4f fitted); "
        "the model grades by %s.",
        "/".join(f"{p:.3f}" for p in cut_points),
        fit["qwk_default_cut_points"],
        fit["qwk_fitted"],
        rule,
    )
    return grade_rule
