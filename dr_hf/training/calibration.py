"""What a run fixes on its validation split before export: a calibrating temperature, folded into
the classifier, and the referable-DR operating points saved with the model.

Temperature scaling (Guo et al. 2017): one scalar T > 0 minimising the negative log-likelihood of
softmax(logits / T) on the validation split. It changes no predicted grade, only how confident
the probabilities are. Dividing the classifier's weight and bias by T gives the same logits / T,
so every consumer of the saved model (dr_hf, `pipeline()`, a LoRA adapter's trained head) gets
calibrated probabilities with no extra step.

The operating points are the thresholds on P(grade >= 2) that reach 90 % and 95 % specificity on
the validation split (on the calibrated probabilities), with the sensitivity each gives; they are
saved in the model's config as `dr_hf_operating_points`, where `dr-hf predict` finds them.
"""

import logging

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from torch import nn

from dr_hf.metrics import expected_calibration_error, softmax
from dr_hf.models.parts import OPERATING_POINTS_KEY, base_model, timm_backbone

logger = logging.getLogger(__name__)

_LOG_T_RANGE = (-3.0, 3.0)  # T between 0.05 and 20


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 minimising the mean negative log-likelihood of softmax(logits / T)."""
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels, np.int64)

    def nll(log_t: float) -> float:
        log_probs = log_softmax(logits / np.exp(log_t), axis=1)
        return float(-log_probs[np.arange(len(labels)), labels].mean())

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


def calibrate(model: nn.Module, logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, dict]:
    """Fit the temperature on validation `logits`, fold it into `model`, and return the calibrated
    logits with a record: the temperature and the validation ECE before and after."""
    temperature = fit_temperature(logits, labels)
    fold_temperature(model, temperature)
    calibrated = np.asarray(logits, np.float64) / temperature
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
