"""The predictions table: one schema, one writer and one reader for every file of per-image grades.

Training's `validation_predictions.csv`, `dr-hf evaluate`'s `predictions.csv` and `dr-hf
predict`'s output (CSV, JSON Lines or a JSON array) are this table; `dr-hf compare` and
cross-validation read it back with `read_predictions`. One row per image, the columns in this
order, a group only where it applies:

    image                the image: the dataset's image id, or the file given to predict
    true_grade           the label, when known (validation, evaluate)
    grade, grade_name    the predicted grade, as the grading rule decided it, and its name;
                         for a photograph judged ungradable, grade is empty and grade_name
                         "ungradable" (unless graded on request: --grade-ungradable); both
                         empty in a failed row
    decision             what to do with the photograph, when gradeability was assessed:
                         "graded", or "retake or refer" (ungradable: retake it or refer it
                         for a human reading); empty in a failed row
    grade_rule,          the rule that decided the grade (argmax, or thresholds) and its four
    cut_points           cut points on `score` joined by ";" (empty for argmax)
    score                the continuous grade the cut points apply to: the expected grade
                         sum_k k * prob_k, or a regression model's output
    prob_0 ... prob_4    the five grade probabilities (empty for a regression model)
    referable_prob       P(grade >= 2) (empty for a regression model: its score decides)
    referable            the referable decision (predict; empty when not graded), taken by
    operating_point,     the rule (argmax: the grade >= 2; spec90, spec95, threshold,
    referable_threshold  ensemble_argmax, ensemble_threshold) and its threshold on
                         P(grade >= 2), or on the score of a regression model, if any
    tta_grade, tta_score, tta_prob_0 ... tta_prob_4, tta_referable_prob
                         the same under test-time augmentation (evaluate --tta)
    gradable,            the gradeability verdict, when assessed, and its issues joined by ";"
    quality_issues
    error                why an input could not be graded (predict), on one line; its other
                         cells are empty

Each row's grade is its rule applied to its own cells: the argmax of prob_0 ... prob_4, or the
number of cut points at or below `score`, exactly: scores and cut points are written in full
(a cut point may lie within 1e-6 of a score). The outputs are the model's own in every row that
has no error, graded or not. Probabilities are rounded to 6 decimals. An
empty cell is "" in every format. A new column is added in `predictions_table` (and
`COLUMNS`); every writer and reader follows.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from dr_hf.config.command_arguments import SAVE_FORMATS
from dr_hf.grades import GRADE_NAMES, NUM_GRADES
from dr_hf.grading_rule import GradeRule, check_outputs, continuous_scores, is_regression
from dr_hf.metrics.functional import referable_scores

PROB_COLUMNS = [f"prob_{grade}" for grade in range(NUM_GRADES)]
TTA_COLUMNS = [
    "tta_grade",
    "tta_score",
    *(f"tta_{c}" for c in PROB_COLUMNS),
    "tta_referable_prob",
]
RULE_COLUMNS = ["grade_rule", "cut_points"]
DECISION_COLUMNS = ["referable", "operating_point", "referable_threshold"]
QUALITY_COLUMNS = ["gradable", "quality_issues"]
COLUMNS = [
    "image",
    "true_grade",
    "grade",
    "grade_name",
    "decision",
    *RULE_COLUMNS,
    "score",
    *PROB_COLUMNS,
    "referable_prob",
    *DECISION_COLUMNS,
    *TTA_COLUMNS,
    *QUALITY_COLUMNS,
    "error",
]
LEGACY_NAMES = {"image_id": "image", "predicted_grade": "grade"}
"""Column names of tables written before this schema, renamed on reading."""
DECIMALS = 6
UNGRADABLE = "ungradable"
"""The grade_name of a photograph judged ungradable and therefore not graded."""
GRADED, RETAKE = "graded", "retake or refer"
"""The decisions: a grade was given; or retake the photograph or refer it for a human reading."""


def predictions_table(
    images: list[str],
    outputs: np.ndarray,
    *,
    labels=None,
    tta: np.ndarray | None = None,
    referable: np.ndarray | None = None,
    operating_point: str | None = None,
    referable_threshold: float | None = None,
    quality: list | None = None,
    grade_ungradable: bool = False,
    failures: list[tuple[str, str]] | None = None,
    rule: GradeRule | None = None,
) -> pd.DataFrame:
    """The table of `images` graded with `outputs` ([N, 5] probabilities, or [N, 1] regression
    scores), their grades decided by `rule` (argmax by default); each keyword adds its group.

    `labels`: true grades. `tta`: the TTA outputs. `referable` (decisions), with the
    `operating_point` and `referable_threshold` that took them. `quality`: gradeability verdicts
    (`gradable`, `issues`): an ungradable photograph gets no grade and no referable decision
    (grade_name "ungradable", decision "retake or refer") unless `grade_ungradable`.
    `failures`: (image, reason) rows appended with only their `error`; given (even empty), the
    table has an `error` column.
    """
    n = len(images)
    outputs = check_outputs(outputs)
    rule = rule or GradeRule()
    graded = np.ones(n, bool)
    if quality is not None and not grade_ungradable:
        graded = np.array([bool(verdict.gradable) for verdict in quality], bool).reshape(n)
    grades = rule.grades(outputs)
    columns = {"image": [str(image) for image in images]}
    if labels is not None:
        columns["true_grade"] = [int(label) for label in labels]
    columns["grade"] = [int(g) if ok else "" for g, ok in zip(grades, graded)]
    columns["grade_name"] = [GRADE_NAMES[g] if ok else UNGRADABLE for g, ok in zip(grades, graded)]
    if quality is not None:
        columns["decision"] = [GRADED if ok else RETAKE for ok in graded]
    columns["grade_rule"] = [rule.rule] * n
    columns["cut_points"] = [cut_points_text(rule)] * n
    columns |= _output_columns(outputs, "")
    if referable is not None:
        threshold = "" if referable_threshold is None else round(referable_threshold, DECIMALS)
        columns["referable"] = [bool(r) if ok else "" for r, ok in zip(referable, graded)]
        columns["operating_point"] = [operating_point or ""] * n
        columns["referable_threshold"] = [threshold] * n
    if tta is not None:
        tta = check_outputs(tta)
        columns["tta_grade"] = [int(g) for g in rule.grades(tta)]
        columns |= _output_columns(tta, "tta_")
    if quality is not None:
        columns["gradable"] = [bool(verdict.gradable) for verdict in quality]
        columns["quality_issues"] = [";".join(verdict.issues) for verdict in quality]
    table = pd.DataFrame(columns, columns=list(columns), index=range(n), dtype=object)
    if failures is not None:
        table["error"] = ""
        failed = pd.DataFrame({"image": [str(name) for name, _ in failures]})
        failed["error"] = [" ".join(reason.splitlines()) for _, reason in failures]
        table = pd.concat([table, failed], ignore_index=True) if failures else table
    return table[[column for column in COLUMNS if column in table]].fillna("")


def cut_points_text(rule: GradeRule) -> str:
    """A rule's cut points as the `cut_points` cell holds them ("0.52;1.61;2.47;3.38"), or ""."""
    if rule.rule != "thresholds":
        return ""
    return ";".join(repr(float(point)) for point in rule.cut_points)


def _output_columns(outputs: np.ndarray, prefix: str) -> dict[str, list]:
    """`score` (in full, so that the row's grade is its cut points applied to it), the five
    probabilities and P(grade >= 2), rounded; for regression scores only `score`, the
    probability cells empty."""
    n = len(outputs)
    columns = {f"{prefix}score": continuous_scores(outputs).tolist()}  # in full: see below
    if is_regression(outputs):
        empty = [""] * n
        return columns | {f"{prefix}{c}": empty for c in (*PROB_COLUMNS, "referable_prob")}
    rounded = np.round(outputs, DECIMALS)
    columns |= {f"{prefix}{c}": rounded[:, g].tolist() for g, c in enumerate(PROB_COLUMNS)}
    scores = np.round(referable_scores(outputs), DECIMALS)
    return columns | {f"{prefix}referable_prob": scores.tolist()}


def table_format(path: str | Path | None = None, fmt: str | None = None) -> str:
    """`fmt`, or else the path's suffix: `.jsonl` JSON Lines, `.json` one JSON array, else CSV."""
    suffix = Path(path).suffix.lower() if path else ""
    fmt = fmt or {".jsonl": "jsonl", ".json": "json"}.get(suffix, "csv")
    if fmt not in SAVE_FORMATS:
        raise ValueError(f"fmt={fmt!r} is not known: choose one of {SAVE_FORMATS}.")
    return fmt


def write_predictions(
    table: pd.DataFrame,
    path: str | Path | None = None,
    fmt: str | None = None,
    append: bool = False,
):
    """Write the table as CSV, JSON Lines or one JSON array (`table_format`); CSV on standard
    output without a path.

    With `append`, the rows go after those already there, so a long run writes each batch as it
    is graded: CSV gets its header only in a file that is new or empty (on standard output,
    never), JSON Lines its lines; a JSON array cannot grow and is refused. Every row ends with
    a newline, so a run killed while writing leaves at most one torn last line.
    """
    fmt = table_format(path, fmt)
    if append and fmt == "json":
        raise ValueError(
            "A JSON array cannot be written row by row: write CSV or JSON Lines (.csv, .jsonl)."
        )
    header = not append or (path is not None and _is_empty(path))
    handle = open(path, "a" if append else "w", newline="") if path else sys.stdout
    try:
        if fmt == "csv":
            table.to_csv(handle, index=False, header=header, lineterminator="\n")
        else:
            rows = table.to_dict(orient="records")
            if fmt == "json":
                handle.write(json.dumps(rows, indent=1) + "\n")
            else:
                handle.writelines(json.dumps(row) + "\n" for row in rows)
    finally:
        if path:
            handle.close()
        else:
            handle.flush()


def _is_empty(path: str | Path) -> bool:
    path = Path(path)
    return not path.exists() or path.stat().st_size == 0


def read_predictions(
    path: str | Path, require_labels: bool = False, rows: int | None = None
) -> pd.DataFrame:
    """A predictions CSV (or JSON Lines file, `.jsonl`) as a DataFrame of strings (numbers
    parsed where noted below), older column names renamed (`LEGACY_NAMES`).

    Refuses, naming the file, a table without `image` or the model's outputs (the probabilities,
    or `score` for a regression model), or `true_grade` when `require_labels`, with an image
    listed twice, or with a value that is not a number in a graded row (a row with an `error`
    has no outputs and is kept as it is). A regression table's graded rows have empty
    probability cells, which stay "". With `rows`, only the first rows are read (those a
    writer killed part-way completed).
    """
    path = Path(path)
    if table_format(path) == "jsonl":
        with open(path) as f:
            lines = [line for line in f if line.strip()][:rows]
        records = [json.loads(line) for line in lines]
        table = pd.DataFrame(records, dtype=object).map(str).rename(columns=LEGACY_NAMES)
    else:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, nrows=rows)
        table = table.rename(columns=LEGACY_NAMES)
    failed = table["error"] != "" if "error" in table.columns else pd.Series(False, table.index)
    regression = _is_regression_table(table, failed)
    outputs = ["score"] if regression else PROB_COLUMNS
    required = ["image", *(["true_grade"] if require_labels else []), *outputs]
    missing = [column for column in required if column not in table.columns]
    if missing or table.empty:
        lacks = f"the column(s) {', '.join(missing)}" if missing else "any image"
        raise ValueError(f"{path} lacks {lacks}: give a predictions table written by dr-hf.")
    doubled = table["image"][table["image"].duplicated()].unique().tolist()
    if doubled:
        shown = ", ".join(doubled[:10]) + (
            f" ... ({len(doubled)} in all)" if len(doubled) > 10 else ""
        )
        raise ValueError(f"{path} lists images more than once: {shown}.")
    numeric = [c for c in (*outputs, "score", "true_grade") if c in table.columns]
    for column in dict.fromkeys(numeric):
        values = pd.to_numeric(table.loc[~failed, column], errors="coerce")
        if values.isna().any():
            row = values.index[values.isna()][0]
            raise ValueError(
                f"{path}, line {row + 2} ({table['image'][row]}): {column} = "
                f"{table[column][row]!r} is not a number."
            )
        table[column] = table[column].astype(object)
        table.loc[~failed, column] = values.astype(int if column == "true_grade" else float)
    return table


def _is_regression_table(table: pd.DataFrame, failed: pd.Series) -> bool:
    """A regression model's table: a `score` and no probabilities in its graded rows."""
    if "score" not in table.columns:
        return False
    probs = [column for column in PROB_COLUMNS if column in table.columns]
    return not probs or bool((table.loc[~failed, probs] == "").all(axis=None))


def probabilities_of(table: pd.DataFrame, prefix: str = "") -> np.ndarray:
    """[N, 5] float64 probabilities of the table's rows (`prefix` "tta_" for the TTA ones); a
    regression model's table has none (a clear error: see `outputs_of`)."""
    outputs = outputs_of(table, prefix)
    if is_regression(outputs):
        raise ValueError(
            "This predictions table is a regression model's: it has a score per image and no "
            "grade probabilities."
        )
    return outputs


def outputs_of(table: pd.DataFrame, prefix: str = "") -> np.ndarray:
    """The model's outputs of the table's rows, as the metrics take them: [N, 5] float64
    probabilities, or [N, 1] regression scores for a regression model's table."""
    columns = [prefix + column for column in PROB_COLUMNS]
    failed = table["error"] != "" if "error" in table.columns else pd.Series(False, table.index)
    if _is_regression_table(table, failed):
        return table[[prefix + "score"]].to_numpy(dtype=np.float64)
    return table[columns].to_numpy(dtype=np.float64)


def rule_of(table: pd.DataFrame) -> GradeRule:
    """The grading rule its `grade_rule` and `cut_points` columns say decided the table's
    grades; argmax for a table written before they existed. A table of several rules, or of a
    rule its own cells do not state in full, is refused."""
    if "grade_rule" not in table.columns:
        return GradeRule()
    graded = table[table["grade_rule"] != ""]
    pairs = set(zip(graded["grade_rule"], graded["cut_points"]))
    if len(pairs) > 1:
        raise ValueError(
            f"The predictions table mixes grading rules ({sorted(pairs)}): one table, one rule."
        )
    if not pairs:
        return GradeRule()
    rule, cut_points = pairs.pop()
    return row_rule({"grade_rule": rule, "cut_points": cut_points})


def row_rule(row) -> GradeRule:
    """The grading rule one row's `grade_rule` and `cut_points` cells state (argmax when it has
    none: a row written before they existed)."""
    cut_points = str(row.get("cut_points", "") or "")
    points = [float(p) for p in cut_points.split(";")] if cut_points else None
    return GradeRule(row.get("grade_rule") or "argmax", points)


__all__ = [
    "COLUMNS",
    "GRADED",
    "RETAKE",
    "RULE_COLUMNS",
    "UNGRADABLE",
    "PROB_COLUMNS",
    "SAVE_FORMATS",
    "cut_points_text",
    "outputs_of",
    "predictions_table",
    "probabilities_of",
    "read_predictions",
    "row_rule",
    "rule_of",
    "table_format",
    "write_predictions",
]
