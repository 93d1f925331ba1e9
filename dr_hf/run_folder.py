"""What a training run's `output_dir` holds, and the one place its file names are written down.

    output_dir/
      config.yaml               the resolved configuration (RUN_CONFIG), Hub token removed
      preprocessor_config.json  how the model wants its input: the FundusImageProcessor, with
      fundus_processor.py,      its code (also in every checkpoint-N/ and in best/); runs made
      preprocessing.py          before it have dr_hf_preprocessing.json (LEGACY_PREPROCESSING)
      checkpoint-N/             Trainer checkpoints (model or adapter, optimizer, trainer_state.json)
      eval_results.json         the best model's validation metrics (EVAL_RESULTS, written by
                                Trainer.save_metrics)
      training_history.json     per-epoch history (HISTORY)
      validation_predictions.csv  the best model's probabilities on the validation split
                                (VALIDATION_PREDICTIONS: image_id, true_grade, prob_0..prob_4)
      source_counts.json        images per grade per source and split, and photographs found
                                in several sources (SOURCE_COUNTS; runs on several sources)
      best/                     the exported model or adapter, with its model card (BEST)

A model folder (`best/`, `checkpoint-N/`) finds the run's files in itself or in its parent.

A `dr-hf cv` output folder holds one such run per fold, and stands for their `best/` models:

    output_dir/
      fold-K/                   a complete run on fold K's split (fold_folder)
      cv_summary.json, .md      the folds' metrics and the out-of-fold ones (CV_SUMMARY)
"""

import csv
import json
from pathlib import Path

import yaml

RUN_CONFIG = "config.yaml"
LEGACY_PREPROCESSING = "dr_hf_preprocessing.json"
EVAL_RESULTS = "eval_results.json"
HISTORY = "training_history.json"
VALIDATION_PREDICTIONS = "validation_predictions.csv"
SOURCE_COUNTS = "source_counts.json"
BEST = "best"
CV_SUMMARY = "cv_summary.json"


def _in_run(model_path: str | Path, name: str) -> Path | None:
    """`name` in the model folder itself, else in the run folder above it."""
    model_path = Path(model_path)
    for path in (model_path / name, model_path.parent / name):
        if path.is_file():
            return path
    return None


def read_run_config(model_path: str | Path) -> dict:
    """The config.yaml training wrote in its output folder, beside best/ and checkpoint-N (or in
    the model folder itself); {} without one."""
    path = _in_run(model_path, RUN_CONFIG)
    if path is None:
        return {}
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not a readable run config: {error}") from error
    return values if isinstance(values, dict) else {}


def write_run_config(output_dir: str | Path, config: dict) -> None:
    (Path(output_dir) / RUN_CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))


def read_preprocessing(model_path: str | Path) -> dict | None:
    """The preprocessing record of a folder saved before preprocessor_config.json existed (a
    `best/` folder, or the run a checkpoint-N belongs to); None without one."""
    path = _in_run(model_path, LEGACY_PREPROCESSING)
    return json.loads(path.read_text()) if path else None


def write_history(output_dir: str | Path, history: dict) -> None:
    (Path(output_dir) / HISTORY).write_text(json.dumps(history, indent=2))


def write_validation_predictions(output_dir: str | Path, ids, labels, probabilities) -> None:
    """One row per validation image: id, true grade and the five (calibrated) probabilities,
    rounded to 8 decimals; cross-validation joins the folds' files into out-of-fold predictions."""
    with open(Path(output_dir) / VALIDATION_PREDICTIONS, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", "true_grade", *(f"prob_{g}" for g in range(5))])
        for image_id, label, row in zip(ids, labels, probabilities):
            writer.writerow([image_id, int(label), *(round(float(p), 8) for p in row)])


def read_validation_predictions(output_dir: str | Path) -> tuple[list[str], list[int], list]:
    """(ids, true grades, probability rows) of `write_validation_predictions`' file."""
    with open(Path(output_dir) / VALIDATION_PREDICTIONS, newline="") as handle:
        rows = list(csv.DictReader(handle))
    probabilities = [[float(row[f"prob_{g}"]) for g in range(5)] for row in rows]
    return (
        [row["image_id"] for row in rows],
        [int(row["true_grade"]) for row in rows],
        probabilities,
    )


def fold_folder(output_dir: str | Path, fold: int) -> Path:
    """The run folder of fold `fold` of a `dr-hf cv` output folder."""
    return Path(output_dir) / f"fold-{fold}"


def cv_fold_models(path: str | Path) -> list[Path]:
    """The `fold-K/best` models of a `dr-hf cv` output folder (one holding `CV_SUMMARY`), in fold
    order; [] for any other folder."""
    path = Path(path)
    if not (path / CV_SUMMARY).is_file():
        return []
    return sorted(path.glob(f"fold-*/{BEST}"), key=lambda p: int(p.parent.name.split("-")[1]))
