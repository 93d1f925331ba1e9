"""Predicting over an archive: each batch's rows written to the file as soon as it is graded, and
a killed run resumed where it stopped.

`dr-hf predict` writes through here. Rows are in input order, each failure in its place, one row
per input, so the file of a run killed part-way holds the first rows of the uninterrupted run's
file (and at most one torn last line). `resume` drops the torn line and the rows of a batch only
partly written, reads the rows kept with `read_predictions`, and grades only the images not named
in them, in the same batches as the uninterrupted run: with the same `--batch-size` on the same
machine, the finished file is the uninterrupted run's, byte for byte (a batch of other images
can move a probability's last float32 bit, and so its sixth decimal). Memory stays that of a
batch, however many photographs.

CSV and JSON Lines stream; a JSON array cannot grow, so its rows are written whole at the end
(memory then grows with the number of photographs) and it cannot be resumed.
"""

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from dr_hf.inference.grader import Grader, decision_rule, grade_rule_for
from dr_hf.inference.predict import predict, predict_stream
from dr_hf.inference.results import PredictionResult
from dr_hf.predictions import (
    cut_points_text,
    outputs_of,
    read_predictions,
    table_format,
    write_predictions,
)

logger = logging.getLogger(__name__)

SAME_PROBABILITY = 2e-6  # written to 6 decimals; a batch of another size may move the last one


def stream_predictions(
    graders: list[Grader],
    inputs,
    output: str | Path | None = None,
    fmt: str | None = None,
    resume: bool = False,
    **options,
) -> Iterator[PredictionResult]:
    """Grade `inputs` batch by batch (`predict_stream`, with its `options`), appending each
    batch's rows to `output` (CSV on standard output without one) before yielding its result.

    With `resume`, the rows already in `output` are kept and their images not graded again; a
    file of another schema, model or decision rule is refused (`check_resumable`).
    """
    fmt = table_format(output, fmt)
    done: set[str] = set()
    if resume:
        done = set(check_resumable(graders, output, fmt, **options)["image"])
        logger.info("%s: %d row(s) already written; grading the rest.", output, len(done))
    whole = []  # a JSON array's batches, written at the end
    appended = bool(done)
    for part in predict_stream(graders, inputs, skip=done, **options):
        table = part.table()
        if fmt == "json":
            whole.append(table)
        elif len(table):
            write_predictions(table, output, fmt, append=appended)
            appended = True
        yield part
    if fmt == "json":
        tables = [table for table in whole if len(table)] or [_schema(graders, options)]
        write_predictions(pd.concat(tables, ignore_index=True), output, fmt)
    elif not appended and output:  # nothing to grade: still an (empty) table of the schema
        write_predictions(_schema(graders, options), output, fmt)


def check_resumable(graders: list[Grader], output, fmt: str, **options) -> pd.DataFrame:
    """The rows already in `output` that resuming keeps: those of the batches written whole.

    A torn last line (the run was killed while writing) and the rows of a batch only partly
    written (a batch is `batch_size` inputs, one row each) are cut from the file once it is
    known to be resumable, so the rest is graded in the uninterrupted run's batches. Refused,
    the file left as it is, with what to do:
    no output file, a JSON array, a file of other columns, of another grading or decision rule
    (or cut points), of another
    model or preprocessing (its first graded photograph, graded again now, gets other
    probabilities), or ungradable photographs graded otherwise.
    """
    if output is None:
        raise ValueError("--resume needs the --output file of the run to resume.")
    path = Path(output)
    if fmt == "json":
        raise ValueError(
            f"{path}: a JSON array is written whole at the end and cannot be resumed; write CSV "
            "or JSON Lines (.csv, .jsonl) to resume."
        )
    if not path.is_file():
        raise ValueError(f"{path} does not exist: nothing to resume; run without --resume.")
    data = path.read_bytes()
    lines = data[: data.rfind(b"\n") + 1].count(b"\n")  # complete lines: a torn one is dropped
    header = fmt == "csv"
    columns = list(_schema(graders, options).columns)
    if lines <= header:  # killed before its first row was complete
        written = pd.DataFrame(columns=columns)
    else:
        written = read_predictions(path, rows=lines - header)
    if list(written.columns) != columns:
        raise ValueError(
            f"{path} has the columns {','.join(written.columns)}; this run writes "
            f"{','.join(columns)}: it was written by another version or with other options. "
            "Write to a new file, or run without --resume to replace it."
        )
    graded = written[written["error"] == ""]
    if not graded.empty:
        _check_rule(graders, path, graded, options)
        _check_ungradable_policy(path, graded, options.get("grade_ungradable", False))
        _check_same_model(graders, path, graded, options)
    keep = len(written) - len(written) % options.get("batch_size", 32)
    keep_lines(path, keep + header if keep else 0)
    return written.iloc[:keep]


def _check_rule(graders, path: Path, graded: pd.DataFrame, options: dict) -> None:
    rule, threshold = decision_rule(
        graders, options.get("operating_point"), options.get("referable_threshold")
    )
    theirs = (graded["operating_point"].iloc[0], graded["referable_threshold"].iloc[0])
    ours = (rule, "" if threshold is None else str(round(threshold, 6)))
    if theirs != ours:
        raise ValueError(
            f"{path} was decided by operating point {theirs[0]} (threshold {theirs[1] or 'none'}); "
            f"this run decides by {ours[0]} (threshold {ours[1] or 'none'}): give the same "
            "--operating-point / --referable-threshold, or write to a new file."
        )
    grading = grade_rule_for(graders, options.get("grade_rule"), options.get("cut_points"))
    theirs = (graded["grade_rule"].iloc[0], graded["cut_points"].iloc[0])
    ours = (grading.rule, cut_points_text(grading))
    if theirs != ours:
        raise ValueError(
            f"{path} was graded by the rule {theirs[0]} (cut points {theirs[1] or 'none'}); this "
            f"run grades by {ours[0]} (cut points {ours[1] or 'none'}): give the same "
            "--grade-rule / --cut-points, or write to a new file."
        )


def keep_lines(path: Path, count: int) -> None:
    """Cut `path` after its first `count` lines: a row is one line (`predictions_table` keeps
    newlines out of its cells), so this drops a torn last row and a batch only partly written."""
    with open(path, "rb+") as f:
        for _ in range(count):
            f.readline()
        if f.tell() < path.stat().st_size:
            f.truncate(f.tell())
            logger.warning(
                "%s: its last batch was only partly written (the run was killed while writing "
                "it); grading that batch again.",
                path,
            )


def _schema(graders: list[Grader], options: dict) -> pd.DataFrame:
    """A table of no rows with the columns this run writes."""
    outputs = np.zeros((0, graders[0].width))
    rule, threshold = decision_rule(
        graders, options.get("operating_point"), options.get("referable_threshold")
    )
    grading = grade_rule_for(graders, options.get("grade_rule"), options.get("cut_points"))
    quality = [] if options.get("quality", True) else None
    result = PredictionResult([], outputs, [], threshold, rule, quality, grade_rule=grading)
    return result.table()


def _check_ungradable_policy(path: Path, written: pd.DataFrame, grade_ungradable: bool) -> None:
    if "gradable" not in written.columns:
        return
    ungradable = written[written["gradable"] == "False"]
    if ungradable.empty:
        return
    graded = bool((ungradable["grade"] != "").any())
    if graded != grade_ungradable:
        flag = "with" if graded else "without"
        raise ValueError(
            f"{path} was written {flag} --grade-ungradable: resume it {flag} that flag too."
        )


def _check_same_model(graders, path: Path, graded: pd.DataFrame, options: dict) -> None:
    """Grade the file's first graded photograph again: other outputs mean another model."""
    if not Path(graded["image"].iloc[0]).is_file():
        return
    name = graded["image"].iloc[0]
    kept = ("tta", "quality", "grade_rule", "cut_points")
    kept = {key: options[key] for key in kept if key in options}
    again = predict(graders, [name], num_workers=0, progress=False, **kept).outputs
    before = outputs_of(graded.iloc[:1]).astype(np.float64)
    same = again.shape == before.shape
    if not same or not np.allclose(again, before, atol=SAME_PROBABILITY, rtol=0):
        raise ValueError(
            f"{path} was written by another model or with other settings: {name} has "
            f"outputs {before.round(6).tolist()[0]} there and "
            f"{np.round(again, 6).tolist()[:1]} now. Write to a new file, or run without "
            "--resume to replace it."
        )


__all__ = ["check_resumable", "keep_lines", "stream_predictions"]
