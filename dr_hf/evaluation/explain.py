"""Which photographs get a Grad-CAM figure, and where it goes: `dr-hf predict --heatmaps DIR`
(every graded photograph) and `dr-hf evaluate --heatmaps N` (the N most confident errors and
the N most confident correctly referred images). The maps and figures are
`dr_hf.evaluation.heatmaps`'."""

import re
from pathlib import Path

import numpy as np
from datasets import Dataset

from dr_hf.evaluation.heatmaps import heatmaps_for
from dr_hf.grades import REFERABLE_MIN_GRADE
from dr_hf.grading_rule import GradeRule, is_regression
from dr_hf.inference import open_image
from dr_hf.metrics import referable_scores


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("_.") or "image"


def file_heatmaps(grader, names: list[str], out_dir: str | Path) -> list[Path]:
    """One figure per photograph file in `names` (paths as `predict` reports them), named after
    the file; a name shared by two files gets the position in the list as a prefix."""
    stems = [_safe(Path(name).stem) for name in names]
    if len(set(stems)) < len(stems):
        stems = [f"{index:04d}_{stem}" for index, stem in enumerate(stems)]
    return heatmaps_for(grader, [open_image(name) for name in names], out_dir, stems)


def select_cases(
    probabilities: np.ndarray, labels: np.ndarray, count: int, rule: GradeRule | None = None
) -> dict[str, list[int]]:
    """Row indices of the `count` most confident errors (highest top probability among wrong
    grades; for regression scores, the farthest from the true grade) and of the `count`
    correctly referred images most confidently so (true and predicted grade >= 2, highest
    P(grade >= 2) or score); the grades decided by `rule` (argmax by default)."""
    predicted = (rule or GradeRule()).grades(probabilities)
    wrong = np.flatnonzero(predicted != labels)
    if is_regression(probabilities):
        confidence = np.abs(probabilities[:, 0] - labels)
    else:
        confidence = probabilities.max(axis=1)
    errors = wrong[np.argsort(-confidence[wrong], kind="stable")][:count]
    referred = np.flatnonzero((labels >= REFERABLE_MIN_GRADE) & (predicted >= REFERABLE_MIN_GRADE))
    scores = referable_scores(probabilities)[referred]
    referable = referred[np.argsort(-scores, kind="stable")][:count]
    return {"errors": errors.tolist(), "referable": referable.tolist()}


def case_heatmaps(
    grader,
    dataset: Dataset,
    probabilities: np.ndarray,
    count: int,
    out_dir: str | Path,
    rule: GradeRule | None = None,
) -> dict[str, list[str]]:
    """Figures of `select_cases` in `out_dir/errors/` and `out_dir/referable/`, named by image
    id; returns the ids of each group."""
    labels = np.asarray(dataset["label"], dtype=np.int64)
    written = {}
    for group, rows in select_cases(probabilities, labels, count, rule).items():
        ids = [str(dataset[row]["image_id"]) for row in rows]
        images = [dataset[row]["image"] for row in rows]
        if rows:
            heatmaps_for(grader, images, Path(out_dir) / group, [_safe(i) for i in ids])
        written[group] = ids
    return written
