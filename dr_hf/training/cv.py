"""k-fold cross-validation: one model per fold, each a complete run in `output_dir/fold-K/`, and
the summary of all folds.

Folds are folds of patients (`dr_hf.data.splits.cv_folds`: a patient's photographs share one fold),
stratified by the worse eye's grade, and by source when several are joined; a seed always gives the
same folds. Their validation sets are disjoint and cover every image once. Each fold is
`run_training` on its split, so it leaves what a normal run leaves (checkpoints, `best/`,
`eval_results.json`, `validation_predictions.csv`) and works under `accelerate launch`. A fold whose
`best/` and results exist is done and skipped; a fold with checkpoints but no results resumes from
its newest complete checkpoint, so a killed run continues at the fold and step it reached. `fold`
runs one fold alone (a SLURM array task, one GPU each); `summarize_cv` then collects the folds from
shared storage.

`cv_summary.json` and `cv_summary.md` hold each metric's per-fold value, mean and standard
deviation, and the out-of-fold metrics: every image graded once, by the model that did not
train on it.

The out-of-fold predictions also fit the cut points of the fold models' ensemble (which averages
their outputs, then cuts): `fit_cut_points` on the out-of-fold continuous scores, saved as
`cv_summary.json`'s `grade_rule` (`GradeRule.record()`, with the folds' rule) and used for the
out-of-fold metrics.
"""

import copy
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import DatasetDict

from dr_hf.config.arguments import DataArguments, DRTrainingArguments, ModelArguments
from dr_hf.data.loading import load_dr_images
from dr_hf.data.splits import cv_folds, patient_count
from dr_hf.grading_rule import GradeRule, continuous_scores, fit_cut_points
from dr_hf.metrics import HEADLINE, compute_dr_metrics
from dr_hf.run_folder import BEST, EVAL_RESULTS, fold_folder, read_validation_predictions
from dr_hf.training.resume import list_checkpoints
from dr_hf.training.run import run_training

logger = logging.getLogger(__name__)


@dataclass
class CVArguments:
    """How the data is cut into folds, and which fold to run."""

    folds: int = field(default=5, metadata={"help": "Number of folds (k)."})
    fold_seed: int = field(default=42, metadata={"help": "Seed of the stratified folds."})
    fold: int | None = field(
        default=None, metadata={"help": "Run this fold alone (0..k-1), e.g. one array task."}
    )

    def __post_init__(self):
        if self.folds < 2:
            raise ValueError(f"folds={self.folds}: cross-validation needs at least 2 folds.")
        if self.fold is not None and not 0 <= self.fold < self.folds:
            raise ValueError(f"fold={self.fold} must lie in 0..{self.folds - 1}.")


def run_cv(
    data_args: DataArguments,
    model_args: ModelArguments,
    training_args: DRTrainingArguments,
    cv_args: CVArguments,
    callbacks: list | None = None,
) -> dict | None:
    """Train the folds (or `cv_args.fold` alone) into `output_dir/fold-K`, then, when every
    fold is done, write and return the summary (None while folds are missing). `callbacks` go to
    every fold's Trainer."""
    if data_args.validation_dir or data_args.validation_csv:
        raise ValueError(
            "Cross-validation holds out each fold of the training data in turn: leave "
            "validation_dir / validation_csv unset (add those images to the training data)."
        )
    images = load_dr_images(data_args)
    folds = cv_folds(images, cv_args.folds, cv_args.fold_seed)
    output_dir = Path(training_args.output_dir)
    todo = range(cv_args.folds) if cv_args.fold is None else [cv_args.fold]
    for fold in todo:
        folder = fold_folder(output_dir, fold)
        if (folder / BEST).is_dir() and (folder / EVAL_RESULTS).is_file():
            logger.info("Fold %d is done (%s): skipped.", fold, folder)
            continue
        resume = "last" if list_checkpoints(folder) else None
        held_out = set(folds[fold].tolist())
        train_rows = [row for row in range(len(images)) if row not in held_out]
        split = DatasetDict(train=images.select(train_rows), validation=images.select(folds[fold]))
        args = copy.copy(training_args)  # the caller's arguments stay as they are
        args.output_dir, args.resume_from_checkpoint = str(folder), resume
        logger.info(
            "Fold %d of %d: %d training images of %d patients, %d validation images of %d.",
            fold,
            cv_args.folds,
            len(train_rows),
            patient_count(split["train"]),
            len(held_out),
            patient_count(split["validation"]),
        )
        run_training(data_args, model_args, args, callbacks, dataset=split)
    if not training_args.should_save or not all(
        (fold_folder(output_dir, k) / EVAL_RESULTS).is_file() for k in range(cv_args.folds)
    ):
        return None
    return summarize_cv(output_dir)


def summarize_cv(output_dir: str | Path) -> dict:
    """Collect the `fold-K/` results of `output_dir` into `cv_summary.json` and `cv_summary.md`."""
    output_dir = Path(output_dir)
    folders = sorted(output_dir.glob("fold-*"), key=lambda p: int(p.name.split("-")[1]))
    missing = [p.name for p in folders if not (p / EVAL_RESULTS).is_file()]
    if not folders or missing:
        raise FileNotFoundError(
            f"{output_dir}: {'no fold-K folders' if not folders else 'no results yet in ' + ', '.join(missing)}"
            ": run the missing folds (dr-hf cv --fold K) first."
        )
    per_fold = [json.loads((p / EVAL_RESULTS).read_text()) for p in folders]
    ids, labels, outputs = [], [], []
    for folder in folders:
        fold_ids, fold_labels, fold_outputs = read_validation_predictions(folder)
        ids += fold_ids
        labels += fold_labels
        outputs += fold_outputs
    if len(set(ids)) != len(ids):
        raise ValueError(
            f"{output_dir}: the folds' validation sets overlap; they were cut differently."
        )
    if len({len(row) for row in outputs}) > 1:
        raise ValueError(
            f"{output_dir}: some folds hold probabilities and others regression scores; the "
            "folds were trained with different heads. Train them all with the same --head."
        )
    outputs, labels = np.asarray(outputs, np.float64), np.asarray(labels)
    rules = {(results.get("grade_rule") or {}).get("rule") or "argmax" for results in per_fold}
    if len(rules) > 1:
        raise ValueError(
            f"{output_dir}: the folds were saved with different grade rules ({sorted(rules)}); "
            "train them all with the same --grade_rule."
        )
    cut_points, fit = fit_cut_points(continuous_scores(outputs), labels)
    ensemble_rule = GradeRule(rules.pop(), cut_points)
    out_of_fold = compute_dr_metrics(outputs, labels, rule=ensemble_rule)
    out_of_fold = {k: v for k, v in out_of_fold.items() if isinstance(v, float)}
    table = {}
    for name in HEADLINE:
        values = [results.get(name) for results in per_fold]
        finite = [v for v in values if isinstance(v, float) and np.isfinite(v)]
        table[name] = {
            "folds": values,
            "mean": float(np.mean(finite)) if finite else None,
            "std": float(np.std(finite, ddof=1)) if len(finite) > 1 else None,
            "out_of_fold": out_of_fold[name],
        }
    summary = {
        "folds": len(folders),
        "num_images": len(ids),
        "metrics": table,
        "out_of_fold": out_of_fold,
        "grade_rule": ensemble_rule.record(**fit),
    }
    (output_dir / "cv_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (output_dir / "cv_summary.md").write_text(summary_markdown(summary))
    return summary


def summary_markdown(summary: dict) -> str:
    folds = summary["folds"]
    header = (
        "| metric | "
        + " | ".join(f"fold {k}" for k in range(folds))
        + " | mean | sd | out of fold |"
    )
    lines = [
        f"{folds}-fold cross-validation, {summary['num_images']} images (each graded once, by "
        "the fold model that did not train on it, for the out-of-fold column).",
        "",
        header,
        "|" + "---|" * (folds + 4),
    ]

    def cell(value) -> str:
        return "-" if value is None or not np.isfinite(value) else f"{value:.4f}"

    for name, row in summary["metrics"].items():
        cells = [cell(v) for v in row["folds"]] + [cell(row["mean"]), cell(row["std"])]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {cell(row['out_of_fold'])} |")
    rule = summary.get("grade_rule")
    if rule and rule.get("cut_points"):
        cuts = "/".join(f"{c:.4g}" for c in rule["cut_points"])
        lines += [
            "",
            f"The fold models grade by {rule['rule']}. Cut points of their ensemble (averaged "
            f"outputs, then cut), fitted for QWK on the out-of-fold predictions: {cuts} "
            f"(QWK {rule['qwk_default_cut_points']:.4f} at 0.5/1.5/2.5/3.5, {rule['qwk_fitted']:.4f} "
            "fitted; the out-of-fold column grades with them under the thresholds rule).",
        ]
    return "\n".join(lines) + "\n"
