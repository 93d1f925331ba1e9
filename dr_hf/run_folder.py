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
      source_counts.json        images per grade and patients per source and split, and
                                photographs found in several sources (SOURCE_COUNTS; runs on
                                several sources)
      best/                     the exported model or adapter, with its model card (BEST)

A model folder (`best/`, `checkpoint-N/`) finds the run's files in itself or in its parent.
`folder_damage` says whether a model folder or checkpoint is whole: a run killed while writing,
or a file cut short on disk, is caught before torch reads it.

A `dr-hf cv` output folder holds one such run per fold, and stands for their `best/` models:

    output_dir/
      fold-K/                   a complete run on fold K's split (fold_folder)
      cv_summary.json, .md      the folds' metrics and the out-of-fold ones (CV_SUMMARY); its
                                "grade_rule" (a `GradeRule.record()`) holds the cut points
                                fitted on the out-of-fold predictions, which an ensemble of
                                the folds' models applies to its averaged outputs
"""

import json
import shutil
import zipfile
from pathlib import Path

import yaml
from safetensors import SafetensorError, safe_open

from dr_hf.grading_rule import GradeRule
from dr_hf.predictions import (
    outputs_of,
    predictions_table,
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
CV_SUMMARY = "cv_summary.json"
TRAINER_STATE = "trainer_state.json"
WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors")
WEIGHT_INDEXES = ("model.safetensors.index.json", "adapter_model.safetensors.index.json")
JSON_FILES = ("config.json", "adapter_config.json", "preprocessor_config.json")
TORCH_SUFFIXES = (".pt", ".pth", ".bin")


def _json_damage(path: Path) -> str | None:
    try:
        json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return f"{path.name} is not readable JSON ({error})"
    return None


def _safetensors_damage(path: Path) -> str | None:
    try:
        with safe_open(path, framework="pt") as weights:
            weights.keys()
    except (OSError, SafetensorError) as error:
        return f"{path.name} is cut short or damaged ({error})"
    return None


def folder_damage(folder: str | Path, checkpoint: bool = False) -> str | None:
    """Why a model folder (`best/`, an adapter) or, with `checkpoint`, a Trainer checkpoint
    cannot be used, naming the file; None when it is whole.

    Checked without loading a tensor: the JSON files parse; the weights (a safetensors file or the
    shards its index lists) exist and their headers cover the file; torch files (`optimizer.pt`,
    `rng_state.pth`, ...) are whole zip archives. A checkpoint also needs its trainer_state.json,
    which the Trainer writes last, naming the folder's own step, and its optimizer state (without
    it the Trainer would resume silently with a fresh optimizer).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return f"{folder} is not a folder"
    for name in JSON_FILES + WEIGHT_INDEXES + ((TRAINER_STATE,) if checkpoint else ()):
        path = folder / name
        if path.is_file() and (damage := _json_damage(path)):
            return damage
    weights = [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
    for index in (folder / name for name in WEIGHT_INDEXES):
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
            missing = [shard for shard in shards if not (folder / shard).is_file()]
            if missing:
                return f"{index.name} lists {', '.join(missing)}, which is missing"
            weights += [folder / shard for shard in shards]
    if not weights:
        return f"no weights file ({' or '.join(WEIGHT_FILES)})"
    for path in weights:
        if damage := _safetensors_damage(path):
            return damage
    for path in sorted(folder.iterdir()):
        if path.suffix in TORCH_SUFFIXES and path.is_file() and not zipfile.is_zipfile(path):
            return f"{path.name} is cut short or damaged (not a whole torch archive)"
    if checkpoint:
        if not (folder / TRAINER_STATE).is_file():
            return f"no {TRAINER_STATE} (the Trainer writes it last)"
        step = json.loads((folder / TRAINER_STATE).read_text()).get("global_step")
        if folder.name.rpartition("-")[2] != str(step):
            return f"{TRAINER_STATE} names step {step}, not the folder's"
        if not any(folder.glob("optimizer*")) and not any(folder.glob("global_step*")):
            return "no optimizer state (optimizer.pt)"
    return None


def partial_folder(folder: str | Path, empty: bool = True) -> Path:
    """Where `folder` is written before it is whole (`<folder>.partial`); with `empty` (the
    process that writes it), what a killed writer left there is removed first.
    `replace_with_partial` then puts it in `folder`'s place."""
    partial = Path(folder).with_name(f"{Path(folder).name}.partial")
    if empty:
        shutil.rmtree(partial, ignore_errors=True)
    return partial


def replace_with_partial(folder: str | Path) -> Path:
    """Put the whole `<folder>.partial` in `folder`'s place (an older `folder` is removed), so a
    reader never sees a half-written model folder."""
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    partial_folder(folder, empty=False).rename(folder)
    return folder


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


def write_validation_predictions(
    output_dir: str | Path, ids, labels, probabilities, rule: GradeRule | None = None
) -> None:
    """The predictions table (`dr_hf.predictions`) of the validation images: image, true grade,
    the grade `rule` decides (argmax by default) with the rule and cut points, and the model's
    outputs (five calibrated probabilities, or a regression score, `probabilities` [N, 1]);
    cross-validation joins the folds' tables into out-of-fold predictions."""
    table = predictions_table(ids, probabilities, labels=labels, rule=rule)
    write_predictions(table, Path(output_dir) / VALIDATION_PREDICTIONS)


def read_validation_predictions(output_dir: str | Path) -> tuple[list[str], list[int], list]:
    """(images, true grades, output rows: five probabilities, or one regression score) of
    `write_validation_predictions`' file."""
    table = read_predictions(Path(output_dir) / VALIDATION_PREDICTIONS, require_labels=True)
    return table["image"].tolist(), table["true_grade"].tolist(), outputs_of(table).tolist()


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


def read_cv_grade_rule(path: str | Path) -> dict | None:
    """The grading rule a `dr-hf cv` output folder recorded in its `CV_SUMMARY` ("grade_rule":
    a `GradeRule.record()`, its cut points fitted on the out-of-fold predictions); None when
    the folder or the record is absent."""
    summary = Path(path) / CV_SUMMARY
    if not summary.is_file():
        return None
    try:
        record = json.loads(summary.read_text()).get("grade_rule")
    except (OSError, ValueError) as error:
        message = f"{summary} is not readable JSON ({error}): run dr-hf cv --summarize."
        raise ValueError(message) from error
    return record or None


def cv_grade_rule(models: list[str | Path | None]) -> dict | None:
    """`read_cv_grade_rule` of the cv folder whose fold models `models` are, all of them and
    nothing else (any order); None for any other set of models."""
    if not models or any(model is None for model in models):
        return None
    folders = {Path(model).resolve().parent.parent for model in models}
    if len(folders) != 1:
        return None
    folder = folders.pop()
    folds = {path.resolve() for path in cv_fold_models(folder)}
    if folds != {Path(model).resolve() for model in models} or len(folds) != len(models):
        return None
    return read_cv_grade_rule(folder)
