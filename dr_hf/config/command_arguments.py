"""The flags of `dr-hf make-synthetic`, `predict`, `evaluate`, `compare`, `demo` and `export`: one
dataclass per command and the two they share (`ModelsArguments`, `GradeRuleArguments`), read by
`dr_hf.config.command_parser.CommandParser`. Every field is a flag of its name, with the dashed
spelling too (`--batch-size` and `--batch_size`). This module imports no torch, so
`dr-hf COMMAND --help` answers at once; the modules that run the commands use these dataclasses
and their constants (`OPERATING_POINTS`, `SAVE_FORMATS`, the export tolerances).

Field metadata beyond `help`, for what a dataclass field alone cannot say: `positional`
(a positional argument, `nargs` as given), `repeat` (a flag given once per value, such as
`--model A --model B`) and `switch` (a flag without a value: a positional argument after it is
never read as its value).
"""

from dataclasses import dataclass, field

from dr_hf.grading_rule import GRADE_RULES

OPERATING_POINTS = ("spec90", "spec95", "argmax")
SAVE_FORMATS = ("csv", "jsonl", "json")
SPLITS = ("all", "train", "validation")
OPSET = 18
PARITY_TOLERANCE = 1e-4
QWK_TOLERANCE = 0.005
QUANTIZATIONS = ("int8",)


@dataclass
class MakeSyntheticArguments:
    """The synthetic set `dr-hf make-synthetic` writes (`dr_hf.data.synthetic.make_synthetic`)."""

    output: str = field(
        metadata={
            "help": "Folder to create: train.csv + train_images/ (APTOS layout), or with "
            "--patients trainLabels.csv + train/ (EyePACS layout)."
        }
    )
    num_images: int | None = field(
        default=None,
        metadata={
            "help": "Independent photographs to draw (APTOS layout); 200 when neither this "
            "nor --patients is given."
        },
    )
    patients: int | None = field(
        default=None,
        metadata={
            "help": "Patients to draw instead, both eyes each (N_left.jpeg, N_right.jpeg; "
            "EyePACS layout): the two eyes share the patient's look and mostly the grade."
        },
    )
    image_size: int = field(default=256, metadata={"help": "Width in pixels."})
    height: int | None = field(default=None, metadata={"help": "Height (default: square)."})
    seed: int = field(default=0, metadata={"help": "Seed of the drawing."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing synthetic set."})
    lesion_masks: bool = field(
        default=False,
        metadata={"help": "Also write lesion_masks/<image>.png: 255 where a lesion was drawn."},
    )

    def __post_init__(self):
        if self.num_images is not None and self.patients is not None:
            raise ValueError(
                f"--num-images {self.num_images} and --patients {self.patients} were both "
                "given: --num-images draws independent photographs (APTOS layout), --patients "
                "both eyes of each patient (EyePACS layout); pass one of them."
            )


@dataclass
class ModelsArguments:
    """Which models grade: `named_models(model, models_file)` turns them into model folders."""

    model: list[str] = field(
        default_factory=list,
        metadata={
            "repeat": True,
            "metavar": "DIR",
            "help": "best/, a checkpoint-N or a LoRA adapter folder, or a dr-hf cv output folder "
            "(its folds' best/ models). Repeat it for an ensemble (probabilities averaged): "
            "--model A --model B.",
        },
    )
    models_file: str | None = field(
        default=None,
        metadata={
            "metavar": "FILE",
            "help": "A text file naming one model folder per line (blank lines and # comments "
            "skipped; relative paths start from the file's folder), graded after the --model ones.",
        },
    )


@dataclass
class GradeRuleArguments:
    """How outputs become grades (see `dr_hf.inference.grade_rule_for`)."""

    grade_rule: str | None = field(
        default=None,
        metadata={
            "choices": GRADE_RULES,
            "help": "argmax (the most probable grade) or thresholds (the model's QWK-fitted cut "
            "points on the expected grade, or on a regression score). Default: the rule saved "
            "with the model; an ensemble: argmax, or the cut points its dr-hf cv folder fitted "
            "on out-of-fold predictions (members' own cut points do not apply to the average).",
        },
    )
    cut_points: str | None = field(
        default=None,
        metadata={
            "metavar": "A,B,C,D",
            "help": "Grade by these four increasing cut points on the expected grade (or the "
            "regression score) instead of the saved ones.",
        },
    )


@dataclass
class PredictArguments:
    """What `dr-hf predict` grades, how, and where the rows go."""

    inputs: list[str] = field(
        default_factory=list,
        metadata={"positional": True, "nargs": "*", "metavar": "IMAGE_OR_FOLDER"},
    )
    images: list[str] = field(
        default_factory=list,
        metadata={
            "action": "extend",
            "metavar": "IMAGE_OR_FOLDER",
            "help": "Images or folders to grade, as the positional names are (both may be given).",
        },
    )
    output: str | None = field(
        default=None,
        metadata={
            "help": "preds.csv, preds.jsonl (JSON Lines) or preds.json (one JSON array); default: "
            "CSV on standard output. CSV and JSON Lines are written batch by batch, in input "
            "order, as the photographs are graded; a JSON array is written whole at the end."
        },
    )
    resume: bool = field(
        default=False,
        metadata={
            "switch": True,
            "help": "Continue a killed run: keep the rows already in --output (CSV or JSON "
            "Lines) and grade only the photographs not named there; with the same --batch-size, "
            "the file ends as an uninterrupted run's.",
        },
    )
    format: str | None = field(
        default=None, metadata={"choices": SAVE_FORMATS, "help": "Overrides the file suffix."}
    )
    tta: bool = field(
        default=False, metadata={"switch": True, "help": "Average over flips and rot90."}
    )
    batch_size: int = field(default=32, metadata={"help": "Images per forward pass."})
    device: str | None = field(
        default=None, metadata={"help": "cuda, cuda:1, cpu (default: CUDA when available)."}
    )
    num_workers: int | None = field(default=None, metadata={"help": "Decoding workers."})
    retfound_weights: str | None = field(
        default=None,
        metadata={
            "help": "Base weights of a RETFound adapter, when the recorded path is not found here."
        },
    )
    referable_threshold: float | None = field(
        default=None,
        metadata={
            "help": "Refer when P(grade >= 2), or a regression model's score, reaches this "
            "threshold (overrides --operating-point)."
        },
    )
    operating_point: str | None = field(
        default=None,
        metadata={
            "choices": OPERATING_POINTS,
            "help": "Referable decision: the threshold saved with the model for 90%% or 95%% "
            "specificity on its validation split, or the decided grade >= 2 (argmax); default: "
            "spec90 where the model has it, else argmax.",
        },
    )
    heatmaps: str | None = field(
        default=None,
        metadata={
            "metavar": "DIR",
            "help": "Also write each graded photograph with a Grad-CAM overlay for its predicted "
            "grade, beside the grade and probabilities, as DIR/<name>.png.",
        },
    )
    grade_ungradable: bool = field(
        default=False,
        metadata={
            "switch": True,
            "help": "Research runs: give a grade and referable decision to photographs judged "
            "ungradable too. By default they get none: grade_name 'ungradable', decision "
            "'retake or refer' (their probabilities and quality_issues are kept).",
        },
    )
    only_gradable: bool = field(
        default=False,
        metadata={
            "switch": True,
            "help": "The default (ungradable photographs get no grade); accepted for earlier "
            "scripts.",
        },
    )

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}.")
        if self.grade_ungradable and self.only_gradable:
            raise ValueError("--grade-ungradable and --only-gradable contradict each other.")
        if self.resume and not self.output:
            raise ValueError("--resume needs the --output file of the run to resume.")


@dataclass
class EvaluateArguments:
    """How to evaluate and where the report goes; the models come from `ModelsArguments`, the
    grading rule from `GradeRuleArguments`, the data from DataArguments' flags."""

    output: str | None = field(
        default=None,
        metadata={
            "help": "Report folder (default: eval_<model>_<data>[_<split>] beside the model)."
        },
    )
    overwrite: bool = field(
        default=False, metadata={"help": "Replace the report already in the output folder."}
    )
    tta: bool = field(default=False, metadata={"help": "Also report flip/rot90-averaged figures."})
    bootstrap: int = field(
        default=1000, metadata={"help": "Bootstrap resamples of the 95%% CIs (0: none)."}
    )
    split: str = field(
        default="all",
        metadata={
            "choices": SPLITS,
            "help": "all (a held-out set), or the validation / train split of a run's data.",
        },
    )
    batch_size: int = field(default=32, metadata={"help": "Images per forward pass."})
    num_workers: int | None = field(default=None, metadata={"help": "Decoding workers."})
    device: str | None = field(default=None, metadata={"help": "Default: CUDA when available."})
    retfound_weights: str | None = field(
        default=None, metadata={"help": "Base weights of a RETFound adapter, if not found."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the bootstrap."})
    heatmaps: int = field(
        default=0,
        metadata={
            "help": "Write Grad-CAM figures of the N most confident errors and the N most "
            "confident correct referrals into <output>/heatmaps/."
        },
    )

    def __post_init__(self):
        if self.split not in SPLITS:
            raise ValueError(f"split={self.split!r} is not known: choose one of {SPLITS}.")
        if self.bootstrap < 0 or self.batch_size < 1:
            raise ValueError("bootstrap must be >= 0 and batch_size >= 1.")


@dataclass
class CompareArguments:
    """Which `dr-hf evaluate` reports `dr-hf compare` sets side by side."""

    reports: list[str] = field(
        default_factory=list,
        metadata={
            "positional": True,
            "nargs": "+",
            "metavar": "REPORT",
            "help": "Report folders (2 or more).",
        },
    )
    output: str | None = field(
        default=None, metadata={"help": "Folder to write (default: comparison/ beside the first)."}
    )
    bootstrap: int = field(default=2000, metadata={"help": "Bootstrap draws."})
    seed: int = field(default=0, metadata={"help": "Seed of the bootstrap."})
    overwrite: bool = field(
        default=False, metadata={"switch": True, "help": "Replace an earlier comparison."}
    )


@dataclass
class DemoArguments:
    """The model `dr-hf demo` serves and where; the grading rule comes from
    `GradeRuleArguments`."""

    model: str = field(metadata={"help": "best/, a checkpoint-N or a LoRA adapter folder."})
    host: str = field(
        default="127.0.0.1",
        metadata={
            "help": "Address to bind (127.0.0.1: this machine only; 0.0.0.0 opens it to the "
            "network)."
        },
    )
    port: int = field(default=7860, metadata={"help": "Port to serve on."})
    retfound_weights: str | None = field(
        default=None,
        metadata={
            "help": "Base weights of a RETFound adapter, when the recorded path is not found here."
        },
    )
    device: str | None = field(
        default=None, metadata={"help": "cuda, cuda:1, cpu (default: CUDA when available)."}
    )
    share: bool = field(
        default=False, metadata={"help": "Also make a public gradio.live link (off by default)."}
    )
    max_file_size: str = field(default="20mb", metadata={"help": "Upload limit."})
    export_space: str | None = field(
        default=None,
        metadata={
            "metavar": "DIR",
            "help": "Write a Hugging Face Space folder serving this model to DIR (with this "
            "grading rule), then exit.",
        },
    )


@dataclass
class ExportArguments:
    """What `dr-hf export` exports, to where, and what it checks."""

    model: str = field(
        metadata={
            "positional": True,
            "metavar": "MODEL",
            "help": "best/, a checkpoint-N or an adapter folder.",
        }
    )
    output: str = field(metadata={"metavar": "DIR", "help": "A new (or empty) folder."})
    format: str = field(default="onnx", metadata={"choices": ("onnx",), "help": "Only ONNX."})
    opset: int = field(default=OPSET, metadata={"help": "ONNX opset."})
    tolerance: float = field(
        default=PARITY_TOLERANCE,
        metadata={"help": "Largest probability difference to PyTorch accepted."},
    )
    retfound_weights: str | None = field(
        default=None,
        metadata={
            "metavar": "FILE",
            "help": "The base weights an adapter was trained on, when its recorded path is not "
            "here.",
        },
    )
    quantize: str | None = field(
        default=None,
        metadata={
            "choices": QUANTIZATIONS,
            "help": "Quantise to int8 (CNNs statically, calibrated on --data or synthetic "
            "photographs; ViTs' matrix products dynamically); the change is printed and written "
            "to quantization.json.",
        },
    )
    data: str | None = field(
        default=None,
        metadata={
            "metavar": "DIR",
            "help": "A labelled set (a data_dir) on which --quantize measures QWK and referable "
            "AUROC.",
        },
    )
    qwk_tolerance: float = field(
        default=QWK_TOLERANCE,
        metadata={"help": "Largest QWK drop on --data that int8 may cause."},
    )


__all__ = [
    "OPERATING_POINTS",
    "OPSET",
    "PARITY_TOLERANCE",
    "QUANTIZATIONS",
    "QWK_TOLERANCE",
    "SAVE_FORMATS",
    "SPLITS",
    "CompareArguments",
    "DemoArguments",
    "EvaluateArguments",
    "ExportArguments",
    "GradeRuleArguments",
    "MakeSyntheticArguments",
    "ModelsArguments",
    "PredictArguments",
]
