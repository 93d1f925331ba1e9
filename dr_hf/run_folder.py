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
      validation_predictions.csv  the best model's predictions on the validation split
                                (VALIDATION_PREDICTIONS, a `dr_hf.predictions` table)
      source_counts.json        images per grade per source and split, and photographs found
                                in several sources (SOURCE_COUNTS; runs on several sources)
      best/                     the exported model or adapter, with its model card (BEST)

A model folder (`best/`, `checkpoint-N/`) finds the run's files in itself or in its parent.
"""

import json
from pathlib import Path

import yaml

from dr_hf.predictions import (
    predictions_table,
    probabilities_of,
    read_predictions,
    write_predictions,
)

RUN_CONFIG = "config.yaml"
LEGACY_PREPROCESSING = "dr_hf_preprocessing.json"
EVAL_RESULTS = "eval_results.json"
HISTORY = "training_history.json"
VALIDATION_PREDICTIONS = "validation_predictions.csv"
SOURCE_COUNTS = "source_counts.json"
BEST = "best"


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
    """The predictions table (`dr_hf.predictions`) of the validation images: image, true grade,
    predicted grade and the five (calibrated) probabilities; cross-validation joins the folds'
    tables into out-of-fold predictions."""
    table = predictions_table(ids, probabilities, labels=labels)
    write_predictions(table, Path(output_dir) / VALIDATION_PREDICTIONS)


def read_validation_predictions(output_dir: str | Path) -> tuple[list[str], list[int], list]:
    """(images, true grades, probability rows) of `write_validation_predictions`' file."""
    table = read_predictions(Path(output_dir) / VALIDATION_PREDICTIONS, require_labels=True)
    return table["image"].tolist(), table["true_grade"].tolist(), probabilities_of(table).tolist()
