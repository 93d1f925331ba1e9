"""The file side of `predict`: gathering the images to grade, and writing the grades out.

Inputs are files, folders (searched recursively), PIL images or RGB arrays; a missing path or an
image-less folder becomes a named failure, never a silent drop. Results are a
`PredictionResult`, saved as CSV, JSON Lines or one JSON array.
"""

import csv
import json
import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from dr_hf.data.files import IMAGE_EXTENSIONS
from dr_hf.errors import listing
from dr_hf.grades import GRADE_NAMES, NUM_GRADES, REFERABLE_MIN_GRADE
from dr_hf.metrics import referable_scores

logger = logging.getLogger(__name__)

PROB_COLUMNS = [f"prob_{grade}" for grade in range(NUM_GRADES)]
SAVE_FORMATS = ("csv", "jsonl", "json")


def collect_inputs(inputs: Iterable) -> tuple[list, list[str], list[tuple[str, str]]]:
    """(sources, names, failures): files as given, folders' images (recursively, sorted), PIL
    images and arrays as `image_<i>`; a missing path or an image-less folder is a failure."""
    if isinstance(inputs, str | Path | Image.Image | np.ndarray):
        inputs = [inputs]
    sources, names, failures = [], [], []
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
                failures.append((str(path), f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder"))
            sources += found
            names += [str(p) for p in found]
        elif path.is_file():
            sources.append(path)
            names.append(str(path))
        else:
            failures.append((str(path), "file not found"))
    return sources, names, failures


@dataclass
class PredictionResult:
    """Grades of the images that could be read, in input order, and why the others could not.

    The referable decision is `operating_point`'s: `argmax` (predicted grade >= 2), or a saved
    operating point (`spec90`, `spec95`) or a given threshold (`threshold`), which refer when
    P(grade >= 2) >= `referable_threshold`; every row names the rule and the threshold that
    decided it. `quality` holds each graded image's gradeability verdict (`gradable`, `issues`),
    when it was assessed; with `only_gradable`, ungradable images keep their verdict and
    probabilities but no grade or referable decision.
    """

    names: list[str]
    probabilities: np.ndarray
    failures: list[tuple[str, str]] = field(default_factory=list)
    referable_threshold: float | None = None
    operating_point: str | None = None
    quality: list | None = None
    only_gradable: bool = False

    def __post_init__(self):
        if self.operating_point is None:
            self.operating_point = "argmax" if self.referable_threshold is None else "threshold"

    @property
    def grades(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @property
    def referable(self) -> np.ndarray:
        """Grade >= 2 predicted, or P(grade >= 2) >= `referable_threshold` when one is set."""
        if self.referable_threshold is None:
            return self.grades >= REFERABLE_MIN_GRADE
        return referable_scores(self.probabilities) >= self.referable_threshold

    def records(self) -> list[dict]:
        """One dict per input: graded images first, then failures with their `error`."""
        rows = []
        grades, referable = self.grades, self.referable
        scores = referable_scores(self.probabilities)
        threshold = "" if self.referable_threshold is None else round(self.referable_threshold, 6)
        for i, name in enumerate(self.names):
            grade, verdict = int(grades[i]), self.quality[i] if self.quality else None
            graded = verdict is None or verdict.gradable or not self.only_gradable
            row = {"image": name, "grade": grade if graded else ""}
            row["grade_name"] = GRADE_NAMES[grade] if graded else ""
            row |= {c: round(float(p), 6) for c, p in zip(PROB_COLUMNS, self.probabilities[i])}
            row |= {"referable_prob": round(float(scores[i]), 6)}
            row |= {"referable": bool(referable[i]) if graded else ""}
            row |= {"operating_point": self.operating_point, "referable_threshold": threshold}
            if verdict is not None:
                row |= {"gradable": verdict.gradable, "quality_issues": ";".join(verdict.issues)}
            rows.append(row | {"error": ""})
        return rows + [{"image": name, "error": reason} for name, reason in self.failures]

    @property
    def columns(self) -> list[str]:
        columns = ["image", "grade", "grade_name", *PROB_COLUMNS, "referable_prob", "referable"]
        columns += ["operating_point", "referable_threshold"]
        columns += ["gradable", "quality_issues"] if self.quality is not None else []
        return columns + ["error"]

    def save(self, path: str | Path | None = None, fmt: str | None = None) -> None:
        """CSV, JSON Lines (`.jsonl`) or a JSON array (`.json`), by `fmt` or else the path's
        suffix; CSV on stdout without a path."""
        suffix = Path(path).suffix.lower() if path else ""
        fmt = fmt or {".jsonl": "jsonl", ".json": "json"}.get(suffix, "csv")
        if fmt not in SAVE_FORMATS:
            raise ValueError(f"fmt={fmt!r} is not known: choose one of {SAVE_FORMATS}.")
        handle = open(path, "w", newline="") if path else sys.stdout
        try:
            if fmt == "json":
                json.dump(self.records(), handle, indent=1)
                handle.write("\n")
            elif fmt == "jsonl":
                for row in self.records():
                    handle.write(json.dumps(row) + "\n")
            else:
                writer = csv.DictWriter(handle, fieldnames=self.columns)
                writer.writeheader()
                writer.writerows(self.records())
        finally:
            if path:
                handle.close()


__all__ = ["PROB_COLUMNS", "SAVE_FORMATS", "PredictionResult", "collect_inputs"]
