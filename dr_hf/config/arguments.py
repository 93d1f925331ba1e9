"""Dataclass configuration: data, model (LoRA included) and training arguments.

Every field is a YAML key and a command-line flag of the same name (see `dr_hf.config.parsing`).
"""

import logging
import os
from dataclasses import dataclass, field

import torch
from transformers import SchedulerType, TrainingArguments

from dr_hf.config.speed import apply_speed_defaults, default_num_workers
from dr_hf.grades import NUM_GRADES
from dr_hf.grading_rule import GRADE_RULES, HEADS

logger = logging.getLogger(__name__)

DEFAULT_WANDB_PROJECT = "diabetic-retinopathy"

LOSS_KINDS = ("ce", "focal")
REGRESSION_LOSSES = ("mse", "smooth_l1")
CLASS_WEIGHTINGS = ("auto", "balanced", "none")
AUGMENT_ON = ("cpu", "gpu")


@dataclass
class DataArguments:
    """Where the fundus photographs come from and how they are preprocessed."""

    data_dir: list[str] | None = field(
        default=None,
        metadata={
            "help": "Training data: a folder in CSV layout (train.csv + train_images/, APTOS, EyePACS, "
            "IDRiD), a folder of grade sub-folders 0/..4/, or a dataset saved with save_to_disk "
            "(a `dr-hf prepare` output included). Several folders are joined, with a source column."
        },
    )
    train_csv: str | None = field(
        default=None, metadata={"help": "Label CSV, when it is not inside data_dir."}
    )
    image_dir: str | None = field(
        default=None, metadata={"help": "Image folder for train_csv (default: found beside it)."}
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "A Hub dataset name (needs network access)."}
    )
    validation_dir: list[str] | None = field(
        default=None,
        metadata={"help": "Explicit validation data: one or several folders, as data_dir takes."},
    )
    validation_csv: str | None = field(
        default=None, metadata={"help": "Explicit validation CSV (images in validation_image_dir)."}
    )
    validation_image_dir: str | None = field(
        default=None, metadata={"help": "Images of validation_csv."}
    )
    validation_split: float = field(
        default=0.2,
        metadata={
            "help": "Share of the training patients held out when no validation set is given "
            "(stratified by the worse eye's grade; a patient's photographs stay together)."
        },
    )
    split_seed: int = field(default=42, metadata={"help": "Seed of the train/validation split."})
    id_column: str | None = field(
        default=None, metadata={"help": "CSV image-id column (auto-detected)."}
    )
    label_column: str | None = field(
        default=None, metadata={"help": "CSV grade column (auto-detected)."}
    )
    patient_column: str | None = field(
        default=None,
        metadata={
            "help": "CSV (or saved dataset) patient-id column: a patient's photographs stay on "
            "one side of every split (auto-detected: patient_id, patient, subject_id...; without "
            "one, EyePACS names <patient>_left / _right give the patient, else each photograph "
            "is its own patient)."
        },
    )
    eye_column: str | None = field(
        default=None,
        metadata={
            "help": "CSV (or saved dataset) eye column: left / right, L / R, OS / OD, empty for "
            "unknown (auto-detected: eye, laterality, side; else read from EyePACS names)."
        },
    )
    allow_shared_patients: bool = field(
        default=False,
        metadata={
            "help": "Go on, with a warning, when the validation set holds patients who also have "
            "photographs in the training data (refused otherwise: its figures would be optimistic)."
        },
    )
    skip_bad_images: bool = field(
        default=False,
        metadata={"help": "Drop undecodable images (each one is reported) instead of stopping."},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "A random N of the training rows (seeded by split_seed)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "A random N of the validation rows (seeded by split_seed)."}
    )
    image_size: int | None = field(
        default=None,
        metadata={"help": "Training resolution (default: the model's input size, 224 for most)."},
    )
    crop_fov: bool = field(
        default=True, metadata={"help": "Crop the black border around the circular field of view."}
    )
    ben_graham: bool = field(
        default=False,
        metadata={"help": "Ben Graham colour normalisation: subtract the local average colour."},
    )
    augment: bool = field(
        default=True, metadata={"help": "Albumentations augmentation of the training split."}
    )
    augment_on: str = field(
        default="cpu",
        metadata={"help": "cpu: in the workers; gpu: same draws, on the uint8 batch on device."},
    )

    def __post_init__(self):
        for name in ("data_dir", "validation_dir"):  # one folder (a YAML string, a path): a list
            value = getattr(self, name)
            if isinstance(value, (str, os.PathLike)):
                value = [value]
            setattr(self, name, [os.fspath(v) for v in value] if value else None)
        if not 0.0 < self.validation_split < 1.0:
            raise ValueError(
                f"validation_split={self.validation_split} must lie strictly between 0 and 1 (e.g. 0.2)."
            )
        if self.augment_on not in AUGMENT_ON:
            raise ValueError(f"augment_on={self.augment_on!r}: choose one of {AUGMENT_ON}.")
        if self.image_size is not None and self.image_size < 32:
            raise ValueError(f"image_size={self.image_size} is too small: use 32 pixels or more.")


@dataclass
class ModelArguments:
    """Which grader to build, from which weights, and whether to train it through LoRA."""

    model_name: str = field(
        default="resnet50",
        metadata={
            "help": "A timm architecture (resnet50, efficientnet_b0, convnext_tiny, vit_base_patch16_224...) "
            "or a RETFound variant: retfound (retfound_mae), retfound_dinov2, retfound_tiny."
        },
    )
    pretrained_weights: str | None = field(
        default=None,
        metadata={
            "help": "Initial weights: a local file (.pth/.bin/.safetensors; for RETFound the official "
            "checkpoint) or a Hub id. None trains from timm's random initialisation.",
            "aliases": ["--checkpoint_path", "--checkpoint-path"],
        },
    )
    num_labels: int = field(
        default=NUM_GRADES, metadata={"help": "Number of grades (the 5-point scale: 5)."}
    )
    head: str = field(
        default="softmax",
        metadata={
            "help": "softmax: five logits, cross-entropy; ordinal: CORN, four conditional logits "
            "turned into five class probabilities (rank-consistent); regression: one output, the "
            "continuous grade (see --regression_loss), cut into grades by thresholds."
        },
    )
    grade_rule: str | None = field(
        default=None,
        metadata={
            "help": "How the saved model turns its output into a grade: argmax (the most probable "
            "grade) or thresholds (four cut points on the expected grade, or on the regression "
            "score, fitted for QWK on the validation split). Default: thresholds, which beat "
            "argmax on held-out QWK for every seed of the heads benchmark (see the README)."
        },
    )
    drop_path_rate: float | None = field(
        default=None,
        metadata={"help": "Stochastic depth (default: 0.2 for RETFound, timm's otherwise)."},
    )
    lora: bool = field(
        default=False, metadata={"help": "Train LoRA adapters instead of every weight."}
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(
        default=32, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."}
    )
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "Module names or one regex to adapt (default: attention qkv for ViTs, the last "
            "stage's convolutions for CNNs)."
        },
    )

    def __post_init__(self):
        if self.num_labels != NUM_GRADES:
            raise ValueError(
                f"num_labels={self.num_labels}: dr_hf grades on the 5-point international scale "
                f"(0-4); keep num_labels={NUM_GRADES}."
            )
        if self.head not in HEADS:
            raise ValueError(f"head={self.head!r} is not known: choose one of {', '.join(HEADS)}.")
        if self.grade_rule is None:
            self.grade_rule = "thresholds"
        if self.grade_rule not in GRADE_RULES:
            raise ValueError(
                f"grade_rule={self.grade_rule!r} is not known: choose one of {', '.join(GRADE_RULES)}."
            )
        if self.head == "regression" and self.grade_rule == "argmax":
            raise ValueError(
                "head=regression with grade_rule=argmax: a regression model has one output and no "
                "class probabilities to take the argmax of; use grade_rule=thresholds (the default)."
            )
        if self.lora and self.lora_r < 1:
            raise ValueError(f"lora_r={self.lora_r} must be a positive rank such as 8 or 16.")


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
