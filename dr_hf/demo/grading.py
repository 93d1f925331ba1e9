"""What the demo page shows, without Gradio: one photograph's answer, several photographs' table.

Grading is `dr_hf.inference.predict`, the function behind `dr-hf predict`: the model
folder's processor, the grading rule (argmax, or cut points on the expected grade or a
regression score) and its cut points, the referable decision and its operating point, and the
failures of files that are not images all come from there, and the table has
`PredictionResult.columns`. The page states the rule that decided the grade; a regression
model's answer shows its score, not probability bars. A
photograph judged ungradable is answered "retake or refer", its grade left to a human reader, as
predict leaves it. The page adds the photograph as the model saw it (`Grader.view`) and, where
grad-cam imports, its Grad-CAM overlay for the predicted grade. Files are
named by their base name on the page and in the CSV, never by the server's upload path.
"""

import csv
import html
import importlib
import logging
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import torch

from dr_hf.data.synthetic import make_synthetic
from dr_hf.demo import NOTICE  # noqa: F401  (re-exported: the page reads it from here)
from dr_hf.grades import GRADE_NAMES, REFERABLE_MIN_GRADE
from dr_hf.grading_rule import GradeRule, cut
from dr_hf.inference import Grader, PredictionResult, open_image, predict
from dr_hf.predictions import row_rule

logger = logging.getLogger(__name__)

PRECISION = 4  # decimals of the probabilities shown on the page
HEATMAP_MODULE = "dr_hf.evaluation.heatmaps"
CSV_NAME = "dr_hf_predictions.csv"
RETAKE_ADVICE = "retake the photograph, or refer it for a human reading"


@dataclass
class PhotoAnswer:
    """The single-photograph tab's outputs; `error` set (and the rest empty) when not graded."""

    summary: str
    model_view: np.ndarray | None = None
    probabilities: pd.DataFrame | None = None
    heatmap: np.ndarray | None = None
    error: str | None = None


def heatmap_module() -> ModuleType | None:
    """`dr_hf.evaluation.heatmaps`, or None (the panel hidden) when grad-cam cannot be imported."""
    try:
        return importlib.import_module(HEATMAP_MODULE)
    except ImportError as error:
        logger.warning("No heatmap panel: %s", error)
        return None


def render_examples(folder: str | Path, size: int = 256) -> list[list[str]]:
    """One synthetic photograph per grade, written to `folder`: [[path, label], ...]."""
    folder = make_synthetic(folder, num_images=25, image_size=size, seed=2024, overwrite=True)
    with open(folder / "train.csv", newline="") as f:
        first = {}
        for row in csv.DictReader(f):
            first.setdefault(int(row["diagnosis"]), row["id_code"])
    return [
        [
            str(folder / "train_images" / f"{first[grade]}.png"),
            f"synthetic, drawn as grade {grade} ({GRADE_NAMES[grade]})",
        ]
        for grade in sorted(first)
    ]


def by_name(result: PredictionResult) -> PredictionResult:
    """The result with every file named by its base name, in its errors too."""

    def short(name: str) -> str:
        return Path(name).name

    failures = [
        (short(name), reason.replace(name, short(name))) for name, reason in result.failures
    ]
    return replace(result, names=[short(name) for name in result.names], failures=failures)


def _grade(grader: Grader, paths: list[str], rule: GradeRule | None = None) -> PredictionResult:
    return by_name(predict(grader, paths, num_workers=0, progress=False, grade_rule=rule))


def grade_photo(
    grader: Grader,
    path: str | None,
    heatmaps: ModuleType | None,
    rule: GradeRule | None = None,
) -> PhotoAnswer:
    """Grade one photograph file as `dr-hf predict` would (by `rule`, default the model's
    saved one), with what the page shows of it; a photograph judged ungradable gets no chart or
    Grad-CAM of a grade it was not given."""
    if not path:
        return PhotoAnswer(message_html("Upload a photograph or pick an example."), error="empty")
    result = _grade(grader, [path], rule)
    if result.failures:
        name, reason = result.failures[0]
        return PhotoAnswer(message_html(f"Could not grade {name}: {reason}"), error=reason)
    row = result.records()[0]
    view, pixel_values = grader.view(open_image(path))  # decoded as predict decodes it
    if row["grade"] == "":
        return PhotoAnswer(summary_html(row), view)
    overlay = heatmap_overlay(grader, view, pixel_values, heatmaps) if heatmaps else None
    return PhotoAnswer(summary_html(row), view, probability_frame(row), overlay)


def heatmap_overlay(
    grader: Grader, view: np.ndarray, pixel_values: torch.Tensor, heatmaps: ModuleType
) -> np.ndarray | None:
    """Grad-CAM of the predicted grade over the model's view; None (logged) if it fails."""
    try:
        return heatmaps.overlay(view, heatmaps.gradcam(grader, pixel_values[None])[0])
    except Exception:  # an optional panel never costs the grade
        logger.exception("Grad-CAM failed; the page shows the grade without it")
        return None


def is_regression_row(row: dict) -> bool:
    """A regression model's row: a score and no grade probabilities."""
    return row.get("prob_0", "") == ""


def row_grade(row: dict) -> int:
    """The grade the row's rule gives its own cells: the argmax of its probabilities, or the
    number of its cut points at or below its score (also for a photograph left ungraded)."""
    rule = row_rule(row)
    if rule.rule == "thresholds":
        return int(cut([float(row["score"])], rule.cut_points)[0])
    return int(np.argmax([row[f"prob_{g}"] for g in range(len(GRADE_NAMES))]))


def rule_words(rule: GradeRule, regression: bool = False) -> str:
    """How a rule decides a grade, in words: "the most probable grade (argmax)", or "cut
    points 0.52/1.61/2.47/3.38 on the expected grade" (on the regression score)."""
    if rule.rule != "thresholds":
        return "the most probable grade (argmax)"
    points = "/".join(f"{p:.4g}" for p in rule.cut_points)
    return f"cut points {points} on the {'regression score' if regression else 'expected grade'}"


def rule_text(row: dict) -> str:
    """How the row's grade was decided, in words (`rule_words` of its own cells)."""
    return rule_words(row_rule(row), is_regression_row(row))


def probability_frame(row: dict) -> pd.DataFrame | None:
    """The probability bars' data; None (no bars) for a regression model's row."""
    if is_regression_row(row):
        return None
    labels = [f"{grade} {name}" for grade, name in enumerate(GRADE_NAMES)]
    values = [row[f"prob_{grade}"] for grade in range(len(GRADE_NAMES))]
    return pd.DataFrame({"grade": labels, "probability": values})


def _fixed(value) -> str:
    return f"{float(value):.{PRECISION}f}"


def _decision(row: dict) -> str:
    if row["referable"] == "":
        return "<span id='dr-referable'>not decided</span> (ungradable photograph)"
    verdict = "yes" if row["referable"] else "no"
    rule, threshold = html.escape(str(row["operating_point"])), row["referable_threshold"]
    return (
        f"<b id='dr-referable'>{verdict}</b> &mdash; {_referable_score(row)}; operating point "
        f"<code id='dr-operating-point'>{rule}</code>: refer when {_refer_when(row, threshold)}"
    )


def _referable_score(row: dict) -> str:
    """P(grade >= 2), or a regression model's score, which the operating points threshold."""
    if is_regression_row(row):
        return f"score <span id='dr-score'>{_fixed(row['score'])}</span>"
    value = _fixed(row["referable_prob"])
    return f"P(grade &ge; {REFERABLE_MIN_GRADE}) = <span id='dr-referable-prob'>{value}</span>"


def _refer_when(row: dict, threshold) -> str:
    if threshold == "":
        return f"decided grade &ge; {REFERABLE_MIN_GRADE}"
    on = "score" if is_regression_row(row) else f"P(grade &ge; {REFERABLE_MIN_GRADE})"
    return f"{on} &ge; <span id='dr-threshold'>{_fixed(threshold)}</span>"


def _rule_line(row: dict) -> str:
    """The grading rule, and the continuous grade its cut points apply to."""
    score = f"; expected grade <span id='dr-score'>{_fixed(row['score'])}</span>"
    if is_regression_row(row):
        score = ""  # the score is shown with the referable decision
    return f"<p>Grade by <span id='dr-grade-rule'>{html.escape(rule_text(row))}</span>{score}</p>"


def _outputs(row: dict) -> str:
    """The probability table, or a regression model's score."""
    if is_regression_row(row):
        return f"<p>Regression score (continuous grade): {_fixed(row['score'])}</p>"
    return _probability_table(row)


def _gradeability(row: dict) -> str:
    if "gradable" not in row:
        return "<span id='dr-gradable'>not assessed</span>"
    if row["gradable"]:
        return "<span id='dr-gradable'>gradable</span>"
    issues = html.escape(str(row.get("quality_issues", "")).replace(";", ", "))
    return f"<span id='dr-gradable'>ungradable</span>: <span id='dr-quality-issues'>{issues}</span>"


def _probability_table(row: dict) -> str:
    cells = "".join(
        f"<tr><td>{g} {name}</td><td id='dr-prob-{g}'>{_fixed(row[f'prob_{g}'])}</td></tr>"
        for g, name in enumerate(GRADE_NAMES)
    )
    return (
        f"<table id='dr-probabilities'><tr><th>grade</th><th>probability</th></tr>{cells}</table>"
    )


def summary_html(row: dict) -> str:
    """One `PredictionResult.records()` row as the page shows it, with stable element ids.

    A graded photograph: its grade in large type, the rule that decided it (argmax, or the cut
    points and the expected grade or score they cut), the probabilities to `PRECISION` decimals
    (a regression model: its score), the referable decision and the gradeability verdict. A
    photograph judged ungradable (not graded): "retake or refer" in large type with the
    verdict's issues; the model's grade and outputs only in a collapsed panel, as the model's
    output rather than a grading.
    """
    image = f"<p>File <code id='dr-image'>{html.escape(row['image'])}</code></p>"
    if row["grade"] == "":
        model_grade = row_grade(row)
        return (
            f"<div id='dr-answer'>{image}<h3 id='dr-headline'>"
            f"<span id='dr-grade-name'>{html.escape(str(row['grade_name']))}</span>: "
            f"<span id='dr-decision'>{RETAKE_ADVICE}</span></h3>"
            f"<p>Gradeability: {_gradeability(row)}</p><p>Referable DR: {_decision(row)}</p>"
            f"<details id='dr-model-output'><summary>The model's output on this photograph "
            f"(not a grading)</summary><p>Model's grade <span id='dr-model-grade'>{model_grade}"
            f"</span>: {GRADE_NAMES[model_grade]}; {_referable_score(row)}</p>"
            f"{_rule_line(row)}{_outputs(row)}</details></div>"
        )
    return (
        f"<div id='dr-answer'>{image}<h3 id='dr-headline'>Grade <span id='dr-grade'>"
        f"{row['grade']}</span>: "
        f"<span id='dr-grade-name'>{html.escape(str(row['grade_name']))}</span></h3>"
        f"{_rule_line(row)}{_outputs(row)}<p>Referable DR: {_decision(row)}</p>"
        f"<p>Gradeability: {_gradeability(row)}</p></div>"
    )


def message_html(text: str) -> str:
    return f"<div id='dr-message' role='alert'><b>{html.escape(text)}</b></div>"


def grade_photos(
    grader: Grader, paths: list[str] | None, folder: str | Path, rule: GradeRule | None = None
) -> tuple[pd.DataFrame, str | None, str]:
    """(table with `dr-hf predict`'s columns, its CSV written under `folder`, a message)."""
    if not paths:
        return pd.DataFrame(), None, "Upload one or more photographs."
    result = _grade(grader, list(paths), rule)
    target = Path(folder) / uuid.uuid4().hex / CSV_NAME
    target.parent.mkdir(parents=True)
    result.save(target)
    rows = [{column: row.get(column, "") for column in result.columns} for row in result.records()]
    message = f"Graded {len(result.names)} photograph(s)."
    if result.failures:
        failed = "; ".join(f"{name} ({reason})" for name, reason in result.failures)
        message += f" Could not grade {len(result.failures)}: {failed}"
    return pd.DataFrame(rows, columns=result.columns), str(target), message
