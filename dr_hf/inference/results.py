"""The file side of `predict`: gathering the images to grade, and writing the grades out.

Inputs are files, folders (searched recursively), PIL images or RGB arrays; a missing path or an
image-less folder becomes a named failure in its place, never a silent drop. Results are a
`PredictionResult`, saved as CSV, JSON Lines or one JSON array, its rows in input order.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from dr_hf.data.files import IMAGE_EXTENSIONS
from dr_hf.errors import listing
from dr_hf.grades import REFERABLE_MIN_GRADE
from dr_hf.grading_rule import GradeRule, continuous_scores, is_regression
from dr_hf.metrics import referable_scores
from dr_hf.predictions import PROB_COLUMNS, SAVE_FORMATS, predictions_table, write_predictions

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Missing:
    """An input that names no photograph (a missing path, a folder without images): graded as a
    failed row with this reason, in its place among the others."""

    reason: str


def collect_inputs(inputs: Iterable) -> tuple[list, list[str]]:
    """(sources, names) in input order: files as given, folders' images (recursively, sorted),
    PIL images and arrays as `image_<i>`; a missing path or an image-less folder is a `Missing`
    source under its own name."""
    if isinstance(inputs, str | Path | Image.Image | np.ndarray):
        inputs = [inputs]
    sources, names = [], []
    for i, item in enumerate(inputs):
        if isinstance(item, Image.Image | np.ndarray):
            sources.append(item)
            names.append(f"image_{i}")
            continue
        path = Path(item)
        if path.is_dir():
            files = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            found = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
            if skipped := [p.relative_to(path).as_posix() for p in files if p not in set(found)]:
                logger.warning(
                    "%s: %d file(s) skipped, not a photograph by extension (%s): %s",
                    path,
                    len(skipped),
                    " ".join(IMAGE_EXTENSIONS),
                    listing(skipped),
                )
            if not found:
                sources.append(Missing(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder"))
                names.append(str(path))
            sources += found
            names += [str(p) for p in found]
        elif path.is_file():
            sources.append(path)
            names.append(str(path))
        else:
            sources.append(Missing("file not found"))
            names.append(str(path))
    return sources, names


@dataclass
class PredictionResult:
    """Grades of the images that could be read, in input order, and why the others could not.

    `outputs` are the model's (or the ensemble's averaged): [N, 5] grade probabilities, or
    [N, 1] regression scores. The grade is `grade_rule`'s (argmax, or cut points on the
    expected grade or score). The referable decision is `operating_point`'s: `argmax` (the
    decided grade >= 2), or a saved operating point (`spec90`, `spec95`) or a given threshold
    (`threshold`), which refer when P(grade >= 2), or a regression score, reaches
    `referable_threshold`; every row names the grading rule and cut points, and the
    referable rule and threshold, that decided it. `quality` holds each image's gradeability
    verdict (`gradable`, `issues`), when it was assessed: an ungradable photograph keeps its
    verdict and outputs but gets no grade and no referable decision (retake or refer), unless
    `grade_ungradable`.
    """

    names: list[str]
    outputs: np.ndarray
    failures: list[tuple[str, str]] = field(default_factory=list)
    referable_threshold: float | None = None
    operating_point: str | None = None
    quality: list | None = None
    grade_ungradable: bool = False
    order: list[int] | None = None
    """The input position of each row, graded ones then failures (see `Grading.order`)."""
    grade_rule: GradeRule = field(default_factory=GradeRule)

    def __post_init__(self):
        if self.operating_point is None:
            self.operating_point = "argmax" if self.referable_threshold is None else "threshold"

    @property
    def probabilities(self) -> np.ndarray:
        """[N, 5] grade probabilities; a regression model has none (a clear error: see
        `outputs` and `scores`)."""
        if is_regression(self.outputs):
            raise ValueError(
                "A regression model gives a score per image, not grade probabilities: read "
                "`outputs` or `scores`."
            )
        return self.outputs

    @property
    def scores(self) -> np.ndarray:
        """[N] continuous grades: the expected grade, or the regression score."""
        return continuous_scores(self.outputs)

    @property
    def grades(self) -> np.ndarray:
        """[N] grades decided by `grade_rule`."""
        return self.grade_rule.grades(self.outputs)

    @property
    def referable(self) -> np.ndarray:
        """Grade >= 2 decided, or P(grade >= 2) (a regression score) >= `referable_threshold`
        when one is set."""
        if self.referable_threshold is None:
            return self.grades >= REFERABLE_MIN_GRADE
        return referable_scores(self.outputs) >= self.referable_threshold

    def table(self):
        """The predictions table (`dr_hf.predictions`), in input order: each failure, with its
        `error`, where its input was (after the graded images when `order` is not known)."""
        table = predictions_table(
            self.names,
            self.outputs,
            rule=self.grade_rule,
            referable=self.referable,
            operating_point=self.operating_point,
            referable_threshold=self.referable_threshold,
            quality=self.quality,
            grade_ungradable=self.grade_ungradable,
            failures=self.failures,
        )
        if self.order is None:
            return table
        return table.iloc[np.argsort(self.order, kind="stable")].reset_index(drop=True)

    def records(self) -> list[dict]:
        """One dict per row of `table`."""
        return self.table().to_dict(orient="records")

    @property
    def columns(self) -> list[str]:
        return list(self.table().columns)

    def save(self, path: str | Path | None = None, fmt: str | None = None) -> None:
        """`dr_hf.predictions.write_predictions`: CSV, JSON Lines or a JSON array."""
        write_predictions(self.table(), path, fmt)


__all__ = ["PROB_COLUMNS", "SAVE_FORMATS", "Missing", "PredictionResult", "collect_inputs"]
