"""Ensembles of graders: several saved models whose probabilities are averaged.

Each member keeps its own preprocessing (its folder's `FundusImageProcessor`, see
`dr_hf.evaluation.predict.load_grader`): every member grades the photographs as it was trained to,
and the five grade probabilities are then averaged, image by image (aligned by name).

The referable decision of an ensemble is taken on the averaged probabilities: the predicted grade
(`argmax`) unless a threshold on the averaged P(grade >= 2) is given. The operating points saved
with the members (`spec90`, `spec95`) were tuned on each member's own probabilities and do not
apply to the average; the rows of an ensemble's predictions name the rule `ensemble_argmax` or
`ensemble_threshold`.
"""

from pathlib import Path

import numpy as np
from datasets import Dataset

from dr_hf.config.arguments import DataArguments
from dr_hf.evaluation.predict import Grader, grade_dataset, load_grader, predict
from dr_hf.evaluation.prediction_io import PredictionResult
from dr_hf.evaluation.report import default_output_dir
from dr_hf.metrics import compute_dr_metrics

MEMBER_METRICS = ("accuracy", "qwk", "macro_auroc", "referable_auroc", "ece")


def model_paths(model_path: str | Path | list) -> list[Path]:
    """The model folder(s) as a list of paths, a `dr-hf cv` output folder standing for its folds'
    `fold-K/best` models; refuses an empty list."""
    paths = (
        [Path(model_path)] if isinstance(model_path, str | Path) else list(map(Path, model_path))
    )
    paths = [fold for path in paths for fold in _cv_folds(path) or [path]]
    if not paths:
        raise ValueError("No model to evaluate: give at least one model folder (--model DIR).")
    return paths


def _cv_folds(path: Path) -> list[Path]:
    """The `fold-K/best` folders of a cross-validation output folder, in fold order ([] for any
    other folder)."""
    if not (path / "cv_summary.json").is_file():
        return []
    folds = sorted(path.glob("fold-*/best"), key=lambda p: int(p.parent.name.split("-")[1]))
    return folds


def report_dir(model_path: str | Path | list, data_args: DataArguments, split: str = "all") -> Path:
    """The default report folder: `default_output_dir` of one model; for an ensemble,
    `eval_ensemble_<data>` beside the first member."""
    paths = model_paths(model_path)
    first = paths[0] if len(paths) == 1 else paths[0].parent / "ensemble"
    return default_output_dir(first, data_args, split)


def load_graders(
    model_paths, retfound_weights: str | None = None, device: str | None = None
) -> list[Grader]:
    """One `Grader` per model folder, each with its own processor."""
    return [load_grader(path, retfound_weights, device) for path in model_paths]


def ensemble_predict(
    graders: list[Grader],
    inputs,
    tta: bool = False,
    batch_size: int = 32,
    num_workers: int | None = None,
    progress: bool | None = None,
    referable_threshold: float | None = None,
    operating_point: str | None = None,
    quality: bool = True,
    only_gradable: bool = False,
) -> PredictionResult:
    """Grade `inputs` (as `predict` takes them) with every member and average the probabilities.

    Each member runs `predict` with its own preprocessing; the probabilities are aligned by image
    name, and an image that any member could not grade is a failure (the union of the members'
    failures, each named once). The gradeability verdicts are the first member's. The referable
    decision is the averaged predicted grade >= 2 (`ensemble_argmax`), or the averaged
    P(grade >= 2) >= `referable_threshold` (`ensemble_threshold`): the members' saved operating
    points do not apply to the average, so `operating_point` may only be None or "argmax".
    """
    if not graders:
        raise ValueError("An ensemble needs at least one model.")
    if operating_point not in (None, "argmax"):
        raise ValueError(
            f"operating_point={operating_point!r}: the members' saved operating points do not "
            "apply to an ensemble's averaged probabilities; use --operating-point argmax or "
            "--referable-threshold P."
        )
    results = [
        predict(
            grader,
            inputs,
            tta=tta,
            batch_size=batch_size,
            num_workers=num_workers,
            progress=progress,
            operating_point="argmax",
            quality=quality and index == 0,
        )  # fmt: skip
        for index, grader in enumerate(graders)
    ]
    failed: dict[str, str] = {}
    for name, reason in (pair for result in results for pair in result.failures):
        failed.setdefault(name, reason)
    failures = list(failed.items())
    rows = [{name: i for i, name in enumerate(result.names)} for result in results]
    first = results[0]
    kept = [i for i, name in enumerate(first.names) if name not in failed]
    kept = [i for i in kept if all(first.names[i] in row for row in rows)]
    names = [first.names[i] for i in kept]
    stacked = [result.probabilities[[row[n] for n in names]] for result, row in zip(results, rows)]
    probabilities = np.mean(stacked, axis=0) if names else first.probabilities[:0]
    rule = "ensemble_argmax" if referable_threshold is None else "ensemble_threshold"
    return PredictionResult(
        names, probabilities, failures, referable_threshold, operating_point=rule,
        quality=[first.quality[i] for i in kept] if first.quality is not None else None,
        only_gradable=only_gradable,
    )  # fmt: skip


def headline_metrics(
    probabilities: np.ndarray, labels: np.ndarray, names: tuple[str, ...] = MEMBER_METRICS
) -> dict:
    """The metrics `names` (by default `MEMBER_METRICS`: accuracy, QWK, macro AUROC,
    referable-DR AUROC and ECE) of one set of probabilities."""
    metrics = compute_dr_metrics(probabilities, labels)
    return {name: metrics[name] for name in names}


def grade_dataset_ensemble(
    graders: list[Grader],
    model_paths: list[Path],
    dataset: Dataset,
    prepared: dict | None = None,
    tta: bool = False,
    batch_size: int = 32,
    num_workers: int | None = None,
) -> tuple[dict[str, np.ndarray], list, list[dict] | None]:
    """`grade_dataset` per member, averaged: (variants, quality, members).

    `variants` holds the mean plain (and with `tta`, TTA) probabilities, `quality` the first
    member's gradeability verdicts, and `members` each member's model path and headline metrics
    (`MEMBER_METRICS`, plain; with `tta` also under "tta") on the dataset's labels. One grader
    is no ensemble: `grade_dataset`'s own (variants, quality), and None for `members`.
    """
    if len(graders) == 1:
        return *grade_dataset(graders[0], dataset, prepared, tta, batch_size, num_workers), None
    labels = np.asarray(dataset["label"], dtype=np.int64)
    graded = [
        grade_dataset(grader, dataset, prepared, tta, batch_size, num_workers) for grader in graders
    ]
    variants = {
        name: np.mean([member[name] for member, _ in graded], axis=0) for name in graded[0][0]
    }
    members = []
    for path, (member, _) in zip(model_paths, graded):
        entry = {"model": str(path)} | headline_metrics(member["plain"], labels)
        if "tta" in member:
            entry["tta"] = headline_metrics(member["tta"], labels)
        members.append(entry)
    return variants, graded[0][1], members


__all__ = [
    "MEMBER_METRICS",
    "ensemble_predict",
    "grade_dataset_ensemble",
    "headline_metrics",
    "load_graders",
    "model_paths",
    "report_dir",
]
