"""What `dr-hf evaluate` does: how good a trained grader is on a held-out set, and where it fails.

`evaluate_model` writes `metrics.json`, `predictions.csv`, `confusion_matrix.png`, `roc.png` and
`reliability.png` (plus `*_tta.png` with `tta`; no reliability diagram for a regression model);
the command line that parses the flags and prints the table is `dr_hf.cli`'s. The data flags are
those of training (`DataArguments`); the preprocessing is the model's own saved record, and so is
the grading rule (argmax or cut points), unless `--grade-rule` / `--cut-points` say otherwise:
the metrics score the rule's grades, and `metrics.json` records the rule. The report folder and
its files are `dr_hf.evaluation.report`'s.

A held-out set is evaluated whole (`split="all"`, `load_dr_images`: every image once, no split, so
even a set with one image per grade works). `split="validation"` evaluates a run's own validation
split, and reproduces the figures training saved: its data fields (source, validation_split,
split_seed, max_eval_samples...) come from the run's `config.yaml` beside the model, and the
command line's data flags override only what they name.
"""

import logging
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
from datasets import Dataset

from dr_hf.config.arguments import DataArguments
from dr_hf.config.command_arguments import EvaluateArguments
from dr_hf.data.loading import load_dr_dataset, load_dr_images
from dr_hf.data.multisource import common_prepare_info, source_label
from dr_hf.evaluation.ensemble import member_metrics
from dr_hf.evaluation.explain import case_heatmaps
from dr_hf.evaluation.report import (
    check_output_dir,
    default_output_dir,
    prepare_output_dir,
    write_figures,
    write_metrics,
)
from dr_hf.grading_rule import GradeRule
from dr_hf.inference import Grading, grade, grade_rule_for, load_graders, named_models
from dr_hf.metrics import compute_dr_metrics
from dr_hf.predictions import PROB_COLUMNS, predictions_table, write_predictions
from dr_hf.run_folder import RUN_CONFIG, read_run_config

logger = logging.getLogger(__name__)


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


def evaluate_model(
    model_path: str | Path | list,
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
    heatmaps: int = 0,
    grade_rule: str | None = None,
    cut_points=None,
) -> dict:
    """Evaluate a trained model on `data_args`' images and write the report to `output_dir`,
    with Grad-CAM figures of the `heatmaps` most confident errors and correct referrals.

    Without `data_args`, a run's split (`train`/`validation`) is rebuilt from the run's
    config.yaml (see `run_data_fields`); given `data_args` are used as they are. A folder that
    already holds a report is refused unless `overwrite`, before the model or data are loaded.
    Returns what `metrics.json` holds: the plain metrics, and under "tta" the TTA ones.

    The grades follow `grade_rule_for(graders, grade_rule, cut_points)` (by default the rule
    the model saved), which `grade_rule` in `metrics.json` records.

    Several model folders (a list of more than one) are an ensemble: each member grades the
    images with its own preprocessing, the report is that of the averaged outputs, cut after
    averaging (see `dr_hf.evaluation.ensemble`), `model` and `preprocessing` list the
    members', and `members` holds each member's headline metrics, each graded by its own saved
    rule. A list of one is the same as the folder alone.
    """
    paths = named_models(model_path)
    data_args = resolve_data_args(paths[0], data_args, split)
    output_dir = Path(output_dir or report_dir(paths, data_args, split))
    check_output_dir(output_dir, overwrite)
    if heatmaps and len(paths) > 1:
        raise ValueError("Grad-CAM figures (--heatmaps) need one model, not an ensemble.")
    graders = load_graders(paths, retfound_weights, device)
    rule = grade_rule_for(graders, grade_rule, cut_points)
    if heatmaps and graders[0].head == "regression":
        raise ValueError(
            "Grad-CAM figures (--heatmaps) show grade probabilities, which a regression model "
            f"({paths[0]}) does not have: evaluate it without --heatmaps."
        )
    if heatmaps and hasattr(graders[0].model, "session"):
        raise ValueError(
            f"Grad-CAM figures (--heatmaps) need the model's gradients, which the exported ONNX "
            f"folder {paths[0]} does not have: evaluate the PyTorch model folder instead."
        )
    for size in {grader.processor.input_side for grader in graders}:
        if data_args.image_size and data_args.image_size != size:
            logger.warning(
                "image_size=%d is ignored: the model was trained at %d pixels.",
                data_args.image_size,
                size,
            )
    dataset = load_eval_split(data_args, split)
    prepared = common_prepare_info(data_args.data_dir)
    on_data = [grader.for_prepared(prepared) for grader in graders]
    graded = check_graded(grade(on_data, dataset, tta, batch_size, num_workers, progress=None))
    variants = graded.variants
    labels = np.asarray(dataset["label"], dtype=np.int64)
    members = None
    if len(paths) > 1:
        rules = [grade_rule_for(grader) for grader in graders]
        members = member_metrics(paths, graded.members, labels, rules)
    preprocessing = [grader.preprocessing for grader in graders]
    preprocessing = preprocessing[0] if len(graders) == 1 else preprocessing

    header = {
        "model": str(paths[0]) if len(paths) == 1 else [str(path) for path in paths],
        "data": source_label(data_args.data_dir) or data_args.train_csv or data_args.dataset_name,
        "split": split,
        "head": graders[0].head,
        "grade_rule": rule.record() | {"described": rule.describe()},
    }
    if heatmaps:
        figures, grader = output_dir / "heatmaps", graders[0]
        header["heatmaps"] = case_heatmaps(
            grader, dataset, variants["plain"], heatmaps, figures, rule
        )
    quality = graded.quality
    return write_report(
        output_dir,
        header,
        preprocessing,
        dataset,
        variants,
        bootstrap,
        seed,
        quality,
        members,
        rule,
    )


def check_graded(graded: Grading) -> Grading:
    """`graded` when every image of the labelled set was graded; otherwise an error naming the
    images that were not (a metric on fewer images would look like one on all of them)."""
    if graded.failures:
        listed = "; ".join(f"{name}: {reason}" for name, reason in graded.failures[:10])
        raise ValueError(
            f"{len(graded.failures)} image(s) of the evaluation set could not be graded ({listed}): "
            "fix or remove them."
        )
    return graded


def report_dir(model_path: str | Path | list, data_args: DataArguments, split: str = "all") -> Path:
    """The default report folder: `default_output_dir` of one model; for an ensemble,
    `eval_ensemble_<data>` beside the first member."""
    paths = named_models(model_path)
    first = paths[0] if len(paths) == 1 else paths[0].parent / "ensemble"
    return default_output_dir(first, data_args, split)


def resolve_data_args(
    model_path: Path, data_args: DataArguments | None, split: str
) -> DataArguments:
    """`data_args` as given, or else the data of the run that saved the model (for a run's
    split): a held-out set (`all`) has no run record to fall back on."""
    if data_args is not None:
        return data_args
    run_fields = run_data_fields(model_path) if split != "all" else {}
    if not run_fields:
        raise ValueError(
            f"No data to evaluate {model_path} on: give the data flags (--data DIR), or "
            f"--split validation for a model whose run folder holds its {RUN_CONFIG}."
        )
    return DataArguments(**run_fields)


def gradeability_report(
    ids: list,
    labels: np.ndarray,
    outputs: np.ndarray,
    quality: list,
    rule: GradeRule | None = None,
):
    """Counts of gradable and ungradable images, the ungradable ones with their issues, and the
    metrics on the gradable ones, graded by `rule` (no bootstrap; None when fewer than two are
    gradable)."""
    gradable = np.array([verdict.gradable for verdict in quality], bool)
    ungradable = [
        {"image_id": image_id, "issues": list(verdict.issues)}
        for image_id, verdict in zip(ids, quality)
        if not verdict.gradable
    ]
    metrics = None
    if gradable.sum() >= 2:
        metrics = compute_dr_metrics(outputs[gradable], labels[gradable], rule=rule)
    return {
        "num_gradable": int(gradable.sum()),
        "num_ungradable": int((~gradable).sum()),
        "ungradable": ungradable,
        "gradable_metrics": metrics,
    }


def write_report(
    output_dir: Path,
    header: dict,
    preprocessing: dict | list,
    dataset: Dataset,
    variants: dict[str, np.ndarray],
    bootstrap: int = 1000,
    seed: int = 0,
    quality: list | None = None,
    members: list[dict] | None = None,
    rule: GradeRule | None = None,
) -> dict:
    """Score each variant's outputs against the dataset's labels, the grades decided by `rule`
    (argmax by default), and write metrics, predictions and figures; `header` (model, data,
    split, grading rule) opens `metrics.json`. Returns what it holds.

    The plain metrics sit at the top level of `metrics.json`, another variant's under its name.
    With the images' gradeability verdicts (`quality`), `gradeability` holds the counts, the
    ungradable images and their issues, and the plain metrics on the gradable images alone; the
    metrics at the top cover every image, while `predictions.csv` gives an ungradable image no
    grade (grade_name "ungradable", decision "retake or refer") beside its probabilities.
    An ensemble's `members` (each member's model and headline metrics) are added as they are.
    """
    labels = np.asarray(dataset["label"], dtype=np.int64)
    prepare_output_dir(output_dir)
    results = header | {
        "num_images": len(labels),
        "grade_counts": np.bincount(labels, minlength=len(PROB_COLUMNS)).tolist(),
        "preprocessing": preprocessing,
        "bootstrap": bootstrap,
    }
    for name, outputs in variants.items():
        metrics = compute_dr_metrics(outputs, labels, bootstrap, seed, rule=rule)
        write_figures(output_dir, outputs, labels, metrics, name)
        if name == "plain":
            results |= metrics
        else:
            results[name] = metrics
    ids = list(dataset["image_id"])
    if quality is not None:
        results["gradeability"] = gradeability_report(ids, labels, variants["plain"], quality, rule)
    if members is not None:
        results["members"] = members
    table = predictions_table(
        ids, variants["plain"], labels=labels, tta=variants.get("tta"), quality=quality, rule=rule
    )
    write_predictions(table, output_dir / "predictions.csv")
    results = write_metrics(output_dir / "metrics.json", results)
    logger.info("Evaluation report written to %s", output_dir)
    return results


__all__ = [
    "EvaluateArguments",
    "evaluate_model",
    "load_eval_split",
    "report_dir",
    "resolve_data_args",
    "run_data_fields",
    "write_report",
]
