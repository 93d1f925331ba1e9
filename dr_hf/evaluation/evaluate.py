"""`dr-hf evaluate`: how good a trained grader is on a held-out set, and where it fails.

Writes `metrics.json`, `predictions.csv`, `confusion_matrix.png`, `roc.png` and
`reliability.png` (plus `*_tta.png` with `--tta`) and prints a short table. The data flags are
those of training (`DataArguments`); the preprocessing is the model's own saved record. The report
folder and its files are `dr_hf.evaluation.report`'s.

A held-out set is evaluated whole (`split="all"`, `load_dr_images`: every image once, no split, so
even a set with one image per grade works). `split="validation"` evaluates a run's own validation
split, and reproduces the figures training saved: its data fields (source, validation_split,
split_seed, max_eval_samples...) come from the run's `config.yaml` beside the model, and the
command line's data flags override only what they name.
"""

import logging
import math
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from transformers import default_data_collator

from dr_hf.config.arguments import DataArguments
from dr_hf.data.loading import load_dr_dataset, load_dr_images
from dr_hf.data.prepare import read_prepare_info
from dr_hf.evaluation.predict import auto_workers, grade_batch, load_grader, progress_batches
from dr_hf.evaluation.prediction_io import PROB_COLUMNS
from dr_hf.evaluation.report import (
    check_output_dir,
    default_output_dir,
    format_table,
    prepare_output_dir,
    write_figures,
    write_metrics,
    write_predictions,
)
from dr_hf.grades import REFERABLE_MIN_GRADE
from dr_hf.metrics import (
    bootstrap_ci,
    compute_dr_metrics,
    expected_calibration_error,
    referable_scores,
    sensitivity_at_specificity,
)
from dr_hf.run_folder import RUN_CONFIG, read_run_config

logger = logging.getLogger(__name__)

SPLITS = ("all", "train", "validation")
SCREENING_SPECIFICITIES = (0.90, 0.95)
CI_METRICS = ("qwk", "macro_auroc", "referable_auroc")


@dataclass
class EvaluateArguments:
    """What to evaluate and where the report goes (the data comes from DataArguments' flags)."""

    model: str = field(
        metadata={"help": "A training output: best/, a checkpoint-N or a LoRA adapter folder."}
    )
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
        default=1000, metadata={"help": "Bootstrap resamples of the 95% CIs (0: none)."}
    )
    split: str = field(
        default="all",
        metadata={"help": "all (a held-out set), or the validation / train split of a run's data."},
    )
    batch_size: int = field(default=32, metadata={"help": "Images per forward pass."})
    num_workers: int | None = field(default=None, metadata={"help": "Decoding workers."})
    device: str | None = field(default=None, metadata={"help": "Default: CUDA when available."})
    retfound_weights: str | None = field(
        default=None, metadata={"help": "Base weights of a RETFound adapter, if not found."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the bootstrap."})

    def __post_init__(self):
        if self.split not in SPLITS:
            raise ValueError(f"split={self.split!r} is not known: choose one of {SPLITS}.")
        if self.bootstrap < 0 or self.batch_size < 1:
            raise ValueError("bootstrap must be >= 0 and batch_size >= 1.")


def load_eval_split(data_args: DataArguments, split: str = "all") -> Dataset:
    """The images to evaluate: every image of the source (`all`), or one split of it."""
    if split == "all":
        return load_dr_images(data_args)
    if split == "validation":  # the split is made before the decode check: skip the training rows
        data_args = replace(data_args, max_train_samples=0)
    return load_dr_dataset(data_args)[split]


def run_data_fields(model_path: str | Path) -> dict:
    """The DataArguments fields of the run that saved `model_path` (its `config.yaml`, see
    `dr_hf.models.graders.run_config`); {} without one."""
    names = {item.name for item in fields(DataArguments) if item.init}
    return {key: value for key, value in read_run_config(model_path).items() if key in names}


def clinical_metrics(
    probabilities: np.ndarray, labels: np.ndarray, bootstrap: int = 1000, seed: int = 0
) -> dict:
    """Training's metrics plus ECE, referable-DR sensitivity at 90 % and 95 % specificity with
    their thresholds on P(grade >= 2), and percentile-bootstrap 95 % CIs of QWK and AUROCs."""
    metrics = compute_dr_metrics(probabilities, labels)
    metrics["ece"] = expected_calibration_error(probabilities, labels)
    scores, referable = referable_scores(probabilities), np.asarray(labels) >= REFERABLE_MIN_GRADE
    points = {}
    for target in SCREENING_SPECIFICITIES:
        sensitivity, threshold = sensitivity_at_specificity(scores, referable, target)
        specificity = (
            float(np.mean(scores[~referable] < threshold)) if not math.isnan(threshold) else None
        )
        points[f"spec_{round(target * 100)}"] = {
            "target_specificity": target,
            "sensitivity": sensitivity,
            "specificity": specificity,
            "threshold": threshold,
        }
    metrics["referable_operating_points"] = points
    if bootstrap:
        metrics["ci95"] = {
            name: list(bootstrap_ci(name, probabilities, labels, n=bootstrap, seed=seed))
            for name in CI_METRICS
        }
    return metrics


def evaluate_model(
    model_path: str | Path,
    data_args: DataArguments | None = None,
    output_dir: str | Path | None = None,
    tta: bool = False,
    bootstrap: int = 1000,
    split: str = "all",
    batch_size: int = 32,
    num_workers: int | None = None,
    device: str | None = None,
    retfound_weights: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Evaluate a trained model on `data_args`' images and write the report to `output_dir`.

    Without `data_args`, a run's split (`train`/`validation`) is rebuilt from the run's
    config.yaml (see `run_data_fields`); given `data_args` are used as they are. A folder that
    already holds a report is refused unless `overwrite`. Returns what `metrics.json` holds: the
    plain metrics, and under "tta" the TTA ones.
    """
    model_path = Path(model_path)
    if data_args is None:
        run_fields = run_data_fields(model_path) if split != "all" else {}
        if not run_fields:
            raise ValueError(
                f"No data to evaluate {model_path} on: give the data flags (--data DIR), or "
                f"--split validation for a model whose run folder holds its {RUN_CONFIG}."
            )
        data_args = DataArguments(**run_fields)
    output_dir = Path(output_dir or default_output_dir(model_path, data_args, split))
    check_output_dir(output_dir, overwrite)

    # ---- Model and the preprocessing it was trained with ------------------------------------
    grader = load_grader(model_path, retfound_weights, device)
    record = grader.preprocessing
    if data_args.image_size and data_args.image_size != record["image_size"]:
        logger.warning(
            "image_size=%d is ignored: the model was trained at %d pixels.",
            data_args.image_size,
            record["image_size"],
        )

    # ---- Data -------------------------------------------------------------------------------
    dataset = load_eval_split(data_args, split)
    labels = np.asarray(dataset["label"], dtype=np.int64)
    ids = list(dataset["image_id"])
    prepared = read_prepare_info(data_args.data_dir) if data_args.data_dir else None
    loader = torch.utils.data.DataLoader(
        dataset.with_transform(grader.transform(prepared)),
        batch_size=batch_size,
        num_workers=auto_workers(len(dataset)) if num_workers is None else num_workers,
        collate_fn=_collate,
        pin_memory=grader.device.type == "cuda",
    )

    # ---- Predictions ------------------------------------------------------------------------
    plain_chunks, tta_chunks = [], []
    for batch in progress_batches(loader, len(dataset)):
        plain, averaged = grade_batch(grader, batch["pixel_values"], tta)
        plain_chunks.append(plain.double().numpy())
        if tta:
            tta_chunks.append(averaged.double().numpy())
    variants = {"plain": np.concatenate(plain_chunks)}
    if tta:
        variants["tta"] = np.concatenate(tta_chunks)

    # ---- Metrics, predictions, figures ------------------------------------------------------
    prepare_output_dir(output_dir)
    results = {
        "model": str(model_path),
        "data": data_args.data_dir or data_args.train_csv or data_args.dataset_name,
        "split": split,
        "num_images": len(labels),
        "grade_counts": np.bincount(labels, minlength=len(PROB_COLUMNS)).tolist(),
        "preprocessing": record,
        "bootstrap": bootstrap,
    }
    for name, probabilities in variants.items():
        metrics = clinical_metrics(probabilities, labels, bootstrap, seed)
        write_figures(output_dir, probabilities, labels, metrics, name)
        if name == "plain":
            results |= metrics
        else:
            results[name] = metrics
    write_predictions(output_dir / "predictions.csv", ids, labels, variants)
    results = write_metrics(output_dir / "metrics.json", results)
    logger.info("Evaluation report written to %s", output_dir)
    return results


def _collate(items: list[dict]) -> dict:
    return default_data_collator(items) | {"index": list(range(len(items))), "errors": []}


def evaluate_main(argv: list[str]) -> int:
    """`dr-hf evaluate --model PATH --data DIR [--output DIR] [--tta] [--bootstrap N]`."""
    from transformers import HfArgumentParser

    argv = ["--data_dir" if arg == "--data" else arg for arg in argv]
    argv = [f"--data_dir={arg[7:]}" if arg.startswith("--data=") else arg for arg in argv]
    parser = HfArgumentParser((EvaluateArguments, DataArguments), prog="dr-hf evaluate")
    try:
        eval_args, data_args = parser.parse_args_into_dataclasses(argv)
        run_fields = run_data_fields(eval_args.model) if eval_args.split != "all" else {}
        if run_fields:  # the run's data as defaults: flags given here still win
            parser.set_defaults(**run_fields)
            eval_args, data_args = parser.parse_args_into_dataclasses(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    except ValueError as error:
        print(f"dr-hf evaluate: {error}", file=sys.stderr)
        return 2
    options = asdict(eval_args)
    try:
        results = evaluate_model(options.pop("model"), data_args, options.pop("output"), **options)
    except (OSError, ValueError) as error:  # missing files, an earlier report, DataError...
        print(f"dr-hf evaluate: {error}", file=sys.stderr)
        return 2
    output = eval_args.output or default_output_dir(eval_args.model, data_args, eval_args.split)
    print(f"\n{results['num_images']} images ({results['split']}), model {results['model']}")
    print(format_table(results))
    print(
        f"\nReport: {output} (metrics.json, predictions.csv, confusion_matrix/roc/reliability.png)"
    )
    return 0


__all__ = [
    "EvaluateArguments",
    "clinical_metrics",
    "evaluate_main",
    "evaluate_model",
    "load_eval_split",
    "run_data_fields",
]
