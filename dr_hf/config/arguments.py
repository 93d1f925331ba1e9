"""Dataclass configuration: data, model (LoRA included) and training arguments.

Every field is a YAML key and a command-line flag of the same name (see `dr_hf.config.parsing`).
`DataArguments` and `ModelArguments` import no torch, so the command line's help is quick;
`DRTrainingArguments`, a `TrainingArguments` (which imports torch), lives in
`dr_hf.config.training_arguments` and is importable from here too.
"""

import os
from dataclasses import dataclass, field

from dr_hf.config.speed import default_num_workers
from dr_hf.grades import NUM_GRADES
from dr_hf.grading_rule import GRADE_RULES, HEADS

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
            "argmax on held-out QWK for every seed of the heads benchmark (see docs/benchmarks.md)."
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


def __getattr__(name: str):
    if name == "DRTrainingArguments":  # imports torch and the Trainer's stack: on first use
        from dr_hf.config.training_arguments import DRTrainingArguments

        return DRTrainingArguments
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AUGMENT_ON",
    "CLASS_WEIGHTINGS",
    "DEFAULT_WANDB_PROJECT",
    "DataArguments",
    "LOSS_KINDS",
    "ModelArguments",
    "REGRESSION_LOSSES",
    "default_num_workers",
]
