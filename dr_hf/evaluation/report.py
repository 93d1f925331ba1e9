"""The report folder of `dr-hf evaluate`: where it goes, and what is written into it.

`metrics.json` (NaN as null; `grade_rule` says how outputs became grades), `predictions.csv`
(the `dr_hf.predictions` table, with the true grade and, with TTA, the TTA outputs), the
confusion-matrix, ROC and reliability figures (none for a regression model, which has no grade
probabilities to calibrate), and the fixed-width table printed at the end. A folder already
holding a report is refused before any work, unless told to overwrite it.
"""

import json
import math
import re
from pathlib import Path

import numpy as np

from dr_hf.config.arguments import DataArguments
from dr_hf.evaluation.plots import plot_confusion_matrix, plot_reliability, plot_roc
from dr_hf.grading_rule import is_regression
from dr_hf.metrics import HEADLINE

REPORT_FILES = ("metrics.json", "predictions.csv")
FIGURES = ("confusion_matrix", "roc", "reliability")


def default_output_dir(
    model_path: str | Path, data_args: DataArguments, split: str = "all"
) -> Path:
    """`eval_<model>_<data>` beside the model, `_<split>` added for a run's split:
    outputs/run/best on data/idrid -> outputs/run/eval_best_idrid."""
    model_path = Path(model_path)
    name = f"eval_{model_path.name}_{data_name(data_args)}"
    return model_path.parent / (name if split == "all" else f"{name}_{split}")


def data_name(data_args: DataArguments) -> str:
    """A folder-name-safe name of the data: the data folder's, the label CSV's folder and file, or
    the Hub dataset's."""
    if data_args.data_dir:
        name = "+".join(Path(folder).resolve().name for folder in data_args.data_dir)
    elif data_args.train_csv:
        csv_path = Path(data_args.train_csv).resolve()
        name = f"{csv_path.parent.name}_{csv_path.stem}"
    else:
        name = str(data_args.dataset_name or "data").rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"[^\w.-]+", "_", name).strip("_.") or "data"


def check_output_dir(output_dir: Path, overwrite: bool = False) -> None:
    """Refuse a folder holding an earlier report, before any work: results are never lost."""
    earlier = [name for name in REPORT_FILES if (output_dir / name).exists()]
    if earlier and not overwrite:
        raise FileExistsError(
            f"{output_dir} already holds a report ({', '.join(earlier)}): pass --overwrite "
            "(overwrite=True) to replace it, or --output another folder."
        )


def prepare_output_dir(output_dir: Path) -> None:
    """Create the folder; an overwritten report's figures would outlive it, so drop them."""
    output_dir.mkdir(parents=True, exist_ok=True)
    for figure in FIGURES:
        for suffix in ("", "_tta"):
            (output_dir / f"{figure}{suffix}.png").unlink(missing_ok=True)


def write_figures(
    output_dir: Path,
    probabilities: np.ndarray,
    labels: np.ndarray,
    metrics: dict,
    variant: str = "plain",
) -> None:
    """One variant's confusion matrix, ROC (with the referable operating points) and reliability
    diagram (not for regression scores: no probabilities); a variant other than `plain` gets a
    `_<variant>` file suffix and a TTA title."""
    suffix = "" if variant == "plain" else f"_{variant}"
    title = "" if variant == "plain" else "TTA"
    plot_confusion_matrix(
        metrics["confusion_matrix"], output_dir / f"confusion_matrix{suffix}.png", title
    )
    plot_roc(
        probabilities,
        labels,
        output_dir / f"roc{suffix}.png",
        metrics["referable_operating_points"],
        title,
    )
    if is_regression(probabilities):
        return
    plot_reliability(
        probabilities,
        labels,
        output_dir / f"reliability{suffix}.png",
        title=title,
        ece=metrics["ece"],
    )


def write_metrics(path: Path, results: dict) -> dict:
    """Write `results` as JSON and return them as written (see `json_safe`)."""
    results = json_safe(results)
    path.write_text(json.dumps(results, indent=2) + "\n")
    return results


def json_safe(value):
    """NaN (an undefined metric) becomes null: JSON has no NaN."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def format_table(results: dict) -> str:
    """The headline figures, 95 % CIs and (with TTA) the TTA column, as fixed-width text; an
    ensemble's members get a row each below."""
    variants = [results] + ([results["tta"]] if "tta" in results else [])
    header = f"{'Metric':<34}{'Value':>8}  {'95% CI':<17}" + ("  TTA" if len(variants) > 1 else "")
    rows = [header, "-" * len(header)]
    if results.get("grade_rule"):
        rows.insert(0, f"Grades by {results['grade_rule']['described']}")

    def cell(value) -> str:
        return "     n/a" if value is None else f"{value:8.4f}"

    for key in HEADLINE:
        ci = results.get("ci95", {}).get(key)
        interval = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci and None not in ci else ""
        line = f"{key:<34}{cell(results[key])}  {interval:<17}"
        rows.append(line + ("  " + cell(variants[1][key]).strip() if len(variants) > 1 else ""))
    for name, point in results["referable_operating_points"].items():
        label = f"sensitivity at {round(point['target_specificity'] * 100)}% specificity"
        threshold = point["threshold"]
        on = "score" if results.get("head") == "regression" else "P"
        at = f"{on}>={threshold:.3f}" if threshold is not None else ""
        line = f"{label:<34}{cell(point['sensitivity'])}  {at:<17}"
        if len(variants) > 1:
            line += (
                "  " + cell(variants[1]["referable_operating_points"][name]["sensitivity"]).strip()
            )
        rows.append(line)
    rows += _member_lines(results.get("members"))
    return "\n".join(rows + _gradeability_lines(results.get("gradeability")))


def _member_lines(members: list | None) -> list[str]:
    """An ensemble's members, one row each: its headline metrics and its model folder."""
    if not members:
        return []
    keys = ("accuracy", "qwk", "macro_auroc", "referable_auroc", "ece")
    lines = ["", "Ensemble members (plain, each graded by its own rule):"]
    lines.append("  ".join(f"{key:>15}" for key in keys) + "  model (grade rule)")
    for member in members:
        cells = ["n/a" if member[key] is None else f"{member[key]:.4f}" for key in keys]
        rule = f" ({member['grade_rule']})" if "grade_rule" in member else ""
        lines.append("  ".join(f"{cell:>15}" for cell in cells) + f"  {member['model']}{rule}")
    return lines


def _gradeability_lines(report: dict | None) -> list[str]:
    if not report:
        return []
    total = report["num_gradable"] + report["num_ungradable"]
    lines = ["", f"Gradable: {report['num_gradable']} of {total} images"]
    metrics = report["gradable_metrics"] or {}
    for key in ("qwk", "referable_auroc"):
        if metrics.get(key) is not None:
            lines.append(f"{key + ' on gradable images':<34}{metrics[key]:8.4f}")
    shown = [f"{item['image_id']} ({', '.join(item['issues'])})" for item in report["ungradable"]]
    if shown:
        lines.append(
            "Ungradable (no grade in predictions.csv: retake or refer): "
            + "; ".join(shown[:10])
            + (" ..." if len(shown) > 10 else "")
        )
    return lines


__all__ = [
    "check_output_dir",
    "data_name",
    "default_output_dir",
    "format_table",
    "json_safe",
    "prepare_output_dir",
    "write_figures",
    "write_metrics",
]
