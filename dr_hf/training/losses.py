"""Training losses for skewed grade distributions: class weights, focal loss, the regression
loss, and the `compute_loss_func` that hands them to the HF Trainer.

Per head: a softmax head trains with cross-entropy (or focal loss) on its logits; an ordinal
(CORN) head with the same loss on its class log-probabilities, which is the CORN loss of each
image, -log P(true grade) = the sum of its binary cross-entropies over the conditional tasks it
takes part in; a regression head with the mean squared error (or smooth L1) between its score and
the grade, each image weighted by its grade's class weight (the ordinal form of class weights).

Gradient accumulation and data parallelism: when the Trainer is given `compute_loss_func`, it
counts the labels of the whole accumulated batch (`num_items_in_batch`; with the default
`average_tokens_across_devices=True`, summed over all ranks, after which it multiplies the
returned loss by the number of ranks to undo DDP's gradient averaging), does NOT divide the loss
by the accumulation steps, and skips its own label smoother. So with `num_items_in_batch` the loss
here is `sum of per-image losses / num_items_in_batch`: every image of the optimizer step weighs
the same whatever the micro-batch or rank it landed on. Label smoothing must therefore come from
`make_loss_fn(label_smoothing=args.label_smoothing_factor)`.

Class weights with `num_items_in_batch`: the weighted sum is divided by the image count, not by
the sum of the weights as torch's `reduction="mean"` does. The count is what the Trainer
accumulates across micro-batches and ranks; and `class_weights` have mean 1 over the training
images, so the two normalisations agree in expectation. Without `num_items_in_batch` (outside the
Trainer) the loss is torch's weighted mean.
"""

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight
from torch import nn

from dr_hf.config.arguments import CLASS_WEIGHTINGS, LOSS_KINDS, REGRESSION_LOSSES
from dr_hf.grades import NUM_GRADES

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100


def class_weights(
    labels: Sequence[int], num_classes: int = NUM_GRADES, mode: str = "auto"
) -> torch.Tensor | None:
    """Inverse-frequency weights `n / (k * count)`, k = grades present: scikit-learn's
    `compute_class_weight("balanced")` over the grades present.

    Their mean over the training images is 1, so a weighted loss keeps the unweighted scale.
    mode "balanced": always; "none": never (returns None); "auto": only when the largest grade
    has over twice the images of the smallest one present. A grade absent from `labels` gets the
    neutral weight 1.0 (it contributes no training term; a warning names it).
    """
    if mode not in CLASS_WEIGHTINGS:
        raise ValueError(f"class weighting mode={mode!r} is not known: use auto, balanced or none.")
    if mode == "none":
        return None
    y = np.asarray(labels)
    if y.size == 0:
        raise ValueError("Cannot compute class weights from an empty label list.")
    bad = np.flatnonzero((y < 0) | (y >= num_classes) | (y != np.round(y)))
    if len(bad):
        raise ValueError(f"labels[{bad[0]}] = {y[bad[0]]} is not a grade 0-{num_classes - 1}.")
    counts = np.bincount(y.astype(np.int64), minlength=num_classes)
    present = counts > 0
    if mode == "auto" and counts[present].max() <= 2 * counts[present].min():
        logger.info("Grade counts %s are balanced enough: no class weights.", counts.tolist())
        return None
    if not present.all():
        logger.warning(
            "Grades %s have no training images; their class weight is 1.0.",
            np.flatnonzero(~present).tolist(),
        )
    weights = np.ones(num_classes)
    grades = np.flatnonzero(present)
    weights[grades] = compute_class_weight("balanced", classes=grades, y=y.astype(np.int64))
    logger.info("Class weights for counts %s: %s", counts.tolist(), np.round(weights, 3).tolist())
    return torch.tensor(weights, dtype=torch.float32)


class FocalLoss(nn.Module):
    """Multi-class focal loss on logits (Lin et al. 2017): `(1 - p_y)^gamma * CE`.

    The cross-entropy term carries the class `weight` and `label_smoothing` exactly as
    `F.cross_entropy` does, so gamma=0 is cross-entropy. Easy images (p_y near 1) fade out.
    `forward(..., num_items_in_batch=n)` returns the summed loss over n (see the module docstring);
    otherwise the weighted mean as in torch. Labels equal to -100 are ignored.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        weight: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}.")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing}.")
        self.gamma = gamma
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", weight, persistent=False)

    def forward(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        logits = logits.float()
        weight = None if self.weight is None else self.weight.to(logits.device, logits.dtype)
        labels = labels.to(logits.device).long()
        losses = F.cross_entropy(
            logits,
            labels,
            weight=weight,
            ignore_index=IGNORE_INDEX,
            reduction="none",
            label_smoothing=self.label_smoothing,
        )
        valid = labels != IGNORE_INDEX
        if self.gamma > 0:
            p_true = logits.softmax(dim=-1).gather(1, labels.clamp(min=0)[:, None])[:, 0]
            losses = (1.0 - p_true).pow(self.gamma) * losses
        if num_items_in_batch is not None:
            return losses.sum() / num_items_in_batch
        if weight is None:
            return losses.sum() / valid.sum()
        return losses.sum() / weight[labels.clamp(min=0)][valid].sum()


class RegressionLoss(nn.Module):
    """Squared error (`kind="mse"`) or smooth L1 (Huber with beta 1) between a regression score
    [N, 1] and the grade, each image weighted by `weight[grade]` when given.

    Reduction as `FocalLoss`: with `num_items_in_batch`, the sum over it; otherwise the weighted
    mean. Labels equal to -100 are ignored.
    """

    def __init__(self, kind: str = "mse", weight: torch.Tensor | None = None):
        super().__init__()
        if kind not in REGRESSION_LOSSES:
            raise ValueError(
                f"regression_loss={kind!r} is not known: choose one of {', '.join(REGRESSION_LOSSES)}."
            )
        self.kind = kind
        self.register_buffer("weight", weight, persistent=False)

    def forward(
        self,
        scores: torch.Tensor,
        labels: torch.Tensor,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        if scores.ndim != 2 or scores.shape[1] != 1:
            raise ValueError(
                f"A regression loss needs one score per image ([N, 1]), got {tuple(scores.shape)}: "
                "train with --head regression, or pick a softmax/ordinal head's loss."
            )
        scores = scores[:, 0].float()
        labels = labels.to(scores.device).long()
        valid = labels != IGNORE_INDEX
        target = labels.clamp(min=0).to(scores.dtype)
        if self.kind == "mse":
            losses = F.mse_loss(scores, target, reduction="none")
        else:
            losses = F.smooth_l1_loss(scores, target, reduction="none", beta=1.0)
        weight = valid.to(scores.dtype)
        if self.weight is not None:
            weight = weight * self.weight.to(scores.device, scores.dtype)[labels.clamp(min=0)]
        losses = losses * weight
        if num_items_in_batch is not None:
            return losses.sum() / num_items_in_batch
        return losses.sum() / weight.sum()


def _logits(outputs) -> torch.Tensor:
    if isinstance(outputs, torch.Tensor):
        return outputs
    if hasattr(outputs, "logits"):
        return outputs.logits
    if isinstance(outputs, dict):
        return outputs["logits"]
    return outputs[0]


def make_loss_fn(
    kind: str = "ce",
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    focal_gamma: float = 2.0,
    head: str = "softmax",
    regression_loss: str = "mse",
):
    """The Trainer's `compute_loss_func`: `fn(outputs, labels, num_items_in_batch=None) -> loss`.

    Softmax and ordinal heads: kind "ce" (cross-entropy) or "focal" on the logits (an ordinal
    model's logits are its CORN log-probabilities); regression: `regression_loss` on the score.
    `weight` from `class_weights`. `outputs` may be a ModelOutput, a dict with "logits", a tuple
    whose first item is the logits, or the logits.
    """
    check_loss_settings(head, kind, label_smoothing)
    if head == "regression":
        criterion = RegressionLoss(regression_loss, weight=weight)
    else:
        criterion = FocalLoss(
            gamma=focal_gamma if kind == "focal" else 0.0,
            weight=weight,
            label_smoothing=label_smoothing,
        )

    def compute_loss(outputs, labels, num_items_in_batch=None):
        if labels is None:
            raise ValueError("The batch has no 'labels': the grading loss needs them.")
        return criterion(_logits(outputs), labels, num_items_in_batch=num_items_in_batch)

    compute_loss.criterion = criterion
    return compute_loss


def check_loss_settings(head: str, kind: str, label_smoothing: float) -> None:
    """Refuse loss settings a head cannot use, saying what to change."""
    if kind not in LOSS_KINDS:
        raise ValueError(f"loss={kind!r} is not known: choose one of {', '.join(LOSS_KINDS)}.")
    if head != "regression":
        return
    if kind == "focal":
        raise ValueError(
            "loss=focal with head=regression: the focal loss weighs class probabilities, which a "
            "regression head has none of; choose --regression_loss mse or smooth_l1 instead."
        )
    if label_smoothing:
        raise ValueError(
            f"label_smoothing_factor={label_smoothing} with head=regression: label smoothing "
            "spreads a target over classes, which a regression score has none of; set it to 0."
        )


def training_loss(
    args, labels: Sequence[int], num_classes: int = NUM_GRADES, head: str = "softmax"
):
    """The run's `compute_loss_func` from its arguments (`loss`, `class_weighting`,
    `label_smoothing_factor`, `focal_gamma`, `regression_loss`), the model's head and the
    training labels, and the class weights used."""
    weights = class_weights(labels, num_classes, args.class_weighting)
    loss_fn = make_loss_fn(
        args.loss,
        weight=weights,
        label_smoothing=args.label_smoothing_factor,
        focal_gamma=args.focal_gamma,
        head=head,
        regression_loss=args.regression_loss,
    )
    return loss_fn, weights
