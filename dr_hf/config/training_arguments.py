"""`DRTrainingArguments`: transformers' `TrainingArguments` with dr_hf's defaults and fields.

Apart from `dr_hf.config.arguments` because `TrainingArguments` imports torch.
"""

import logging
from dataclasses import dataclass, field

import torch
from transformers import SchedulerType, TrainingArguments

from dr_hf.config.arguments import (
    CLASS_WEIGHTINGS,
    DEFAULT_WANDB_PROJECT,
    LOSS_KINDS,
    REGRESSION_LOSSES,
)
from dr_hf.config.speed import apply_speed_defaults, default_num_workers

logger = logging.getLogger(__name__)


@dataclass
class DRTrainingArguments(TrainingArguments):
    """`TrainingArguments` with dr_hf's defaults and the few fields the Trainer lacks."""

    output_dir: str = field(
        default="outputs/run", metadata={"help": "Everything the run writes goes here."}
    )
    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to checkpoint."})
    save_total_limit: int | None = field(
        default=3, metadata={"help": "Checkpoints kept (the best is never deleted)."}
    )
    load_best_model_at_end: bool = field(
        default=True, metadata={"help": "Restore the best checkpoint at the end."}
    )
    metric_for_best_model: str | None = field(
        default="qwk", metadata={"help": "Metric that picks the best checkpoint."}
    )
    num_train_epochs: float = field(
        default=3.0, metadata={"help": "Training epochs.", "aliases": ["--epochs"]}
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "A checkpoint folder to resume from, or `last` for the newest complete one.",
            "aliases": ["--resume"],
        },
    )
    run_name: str | None = field(
        default=None,
        metadata={
            "help": "Run name (W&B's too).",
            "aliases": ["--wandb-run-name", "--wandb_run_name"],
        },
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate."})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay."})
    lr_scheduler_type: str = field(
        default="cosine",
        metadata={"help": "cosine (default), linear, reduce_lr_on_plateau, constant..."},
    )
    warmup_steps: float = field(
        default=0.1, metadata={"help": "Warm-up steps; a value below 1 is a ratio."}
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Must stay False: the on-the-fly transform needs the image column."},
    )
    logging_strategy: str = field(default="epoch", metadata={"help": "When to log training loss."})
    dataloader_num_workers: int = field(
        default_factory=default_num_workers,
        metadata={"help": "Image reading workers per rank (default: its cores - 1, at most 8)."},
    )
    dataloader_persistent_workers: bool | None = field(
        default=None, metadata={"help": "Keep workers between epochs (default: with workers)."}
    )
    dataloader_prefetch_factor: int | None = field(
        default=None, metadata={"help": "Batches each worker loads ahead (default 4 with workers)."}
    )
    channels_last: bool | None = field(
        default=None, metadata={"help": "Channels-last model and inputs (default: CNNs on CUDA)."}
    )

    loss: str = field(
        default="ce", metadata={"help": f"Training loss: one of {', '.join(LOSS_KINDS)}."}
    )
    class_weighting: str = field(
        default="auto",
        metadata={
            "help": "Cross-entropy class weights from the training split: auto (on when the largest "
            "grade is over twice the smallest), balanced (always), none."
        },
    )
    regression_loss: str = field(
        default="mse",
        metadata={
            "help": "Loss of a regression head (--head regression) on the grade: mse or smooth_l1, "
            "weighted per image by its grade's class weight."
        },
    )
    focal_gamma: float = field(
        default=2.0, metadata={"help": "Focusing parameter of the focal loss."}
    )
    layer_decay: float | None = field(
        default=None, metadata={"help": "Layer-wise learning-rate decay for ViTs (RETFound: 0.65)."}
    )
    calibrate: bool = field(
        default=True,
        metadata={
            "help": "At the end, fit a temperature on the validation split and fold it into the "
            "classifier, so that the saved model's probabilities are calibrated."
        },
    )
    wandb_project: str | None = field(
        default=None,
        metadata={
            "help": f"W&B project (with --wandb); default: $WANDB_PROJECT, else {DEFAULT_WANDB_PROJECT!r}."
        },
    )
    wandb_tags: list[str] | None = field(
        default=None, metadata={"help": "W&B run tags (with --wandb)."}
    )

    def __post_init__(self):
        if self.loss not in LOSS_KINDS:
            raise ValueError(
                f"loss={self.loss!r} is not known: choose one of {', '.join(LOSS_KINDS)}."
            )
        if self.regression_loss not in REGRESSION_LOSSES:
            raise ValueError(
                f"regression_loss={self.regression_loss!r} is not known: choose one of "
                f"{', '.join(REGRESSION_LOSSES)}."
            )
        if self.class_weighting not in CLASS_WEIGHTINGS:
            raise ValueError(
                f"class_weighting={self.class_weighting!r} is not known: choose one of "
                f"{', '.join(CLASS_WEIGHTINGS)}."
            )
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise ValueError(
                f"layer_decay={self.layer_decay} must lie in (0, 1], e.g. 0.65 for RETFound."
            )
        apply_speed_defaults(self)
        if not torch.cuda.is_available():
            # The Trainer ignores fp16 on a CPU without a word and needs use_cpu for bf16.
            if self.fp16:
                logger.warning("fp16 needs a CUDA GPU: training in float32 on the CPU instead.")
                self.fp16 = False
            if self.bf16 and not self.use_cpu:
                logger.warning(
                    "bf16 on a machine without CUDA: training on the CPU (use_cpu=True)."
                )
                self.use_cpu = True
        super().__post_init__()
        if self.lr_scheduler_type == SchedulerType.REDUCE_ON_PLATEAU:
            # A plateau schedule: halve the rate after 3 evaluations without improvement,
            # watching the metric that picks the best checkpoint in its own direction.
            kwargs = dict(self.lr_scheduler_kwargs or {})
            kwargs.setdefault("mode", "max" if self.greater_is_better else "min")
            kwargs.setdefault("factor", 0.5)
            kwargs.setdefault("patience", 3)
            self.lr_scheduler_kwargs = kwargs


__all__ = ["DRTrainingArguments"]
