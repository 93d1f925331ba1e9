"""What `dr-hf compare` does: set evaluation reports of the same images side by side.

Each report folder is one `dr-hf evaluate` wrote (`metrics.json`, and `predictions.csv` read with
`dr_hf.predictions.read_predictions`); the metrics are recomputed from its plain outputs
(probabilities, or a regression model's scores) with the grading rule its rows state, so that
every report is scored, and resampled, the same way. Reports on different images, or on
the same images with different true grades, are refused, naming the images.

Every bootstrap draw (`dr_hf.metrics.bootstrap_distribution`, on `scipy.stats.bootstrap`)
resamples one set of image indices and scores all reports on it: the 95 % CIs of each report's
headline metrics and the paired differences between reports come from the same draws. The
two-sided p-value of a difference (QWK, referable-DR AUROC) is twice the share of draws whose
difference lies at or across 0 (on the other side from the observed difference), capped at 1.
DeLong's test is not computed: no maintained implementation is installed with dr_hf, so the
AUROC comparison is the paired bootstrap only, as the outputs say.
"""

import itertools
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import RocCurveDisplay

from dr_hf.evaluation.report import REPORT_FILES, write_metrics
from dr_hf.grades import REFERABLE_MIN_GRADE
from dr_hf.grading_rule import GradeRule
from dr_hf.metrics import (
    HEADLINE,
    bootstrap_distribution,
    compute_dr_metrics,
    percentile_interval,
    referable_scores,
    resampled_metrics,
)
from dr_hf.predictions import outputs_of, read_predictions, rule_of

PAIRED = ("qwk", "referable_auroc")
OUTPUT_FILES = ("comparison.json", "comparison.md", "comparison.png")
PAIRED_TEST = (
    "paired bootstrap: the same resampled images for every report in each draw; two-sided p = "
    "2 x the share of draws whose difference lies at or across 0, capped at 1"
)
DELONG_NOTE = (
    "DeLong's test not computed (no maintained implementation is installed with dr_hf): the "
    "referable-AUROC comparison is the paired bootstrap only"
)


@dataclass
class Report:
    """One report's plain outputs ([N, 5] probabilities or [N, 1] regression scores) and the
    rule that graded them, in its `predictions.csv` row order."""

    folder: Path
    model: str
    ids: list[str]
    labels: np.ndarray
    probabilities: np.ndarray
    rule: GradeRule = GradeRule()

    @property
    def grades(self) -> np.ndarray:
        return self.rule.grades(self.probabilities)


def read_report(folder: str | Path) -> Report:
    """The image ids, true grades, plain outputs and grading rule of a `dr-hf evaluate` report
    folder."""
    folder = Path(folder)
    for name in REPORT_FILES:
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{folder} holds no {name}: give report folders written by dr-hf evaluate."
            )
    model = json.loads((folder / "metrics.json").read_text()).get("model", "")
    table = read_predictions(folder / "predictions.csv", require_labels=True)
    labels = table["true_grade"].to_numpy(dtype=np.int64)
    model = model if isinstance(model, str) else "ensemble of " + ", ".join(model)
    try:
        rule = rule_of(table)
    except ValueError as error:
        raise ValueError(f"{folder / 'predictions.csv'}: {error}") from error
    return Report(folder, model, table["image"].tolist(), labels, outputs_of(table), rule)


def _some(ids: list, limit: int = 10) -> str:
    shown = ", ".join(map(str, ids[:limit]))
    return shown + (f" ... ({len(ids)} in all)" if len(ids) > limit else "")


def align(reports: list[Report]) -> list[Report]:
    """The reports with their rows in the first one's image order; refuses reports on other
    images (naming the missing and extra ids) or with other true grades (naming the images)."""
    first = reports[0]
    aligned = [first]
    for report in reports[1:]:
        missing = sorted(set(first.ids) - set(report.ids))
        extra = sorted(set(report.ids) - set(first.ids))
        if missing or extra:
            lacks = f"lacks {len(missing)} of its images ({_some(missing)})" if missing else ""
            more = f"has {len(extra)} other images ({_some(extra)})" if extra else ""
            raise ValueError(
                f"{report.folder} was evaluated on other images than {first.folder}: it "
                f"{' and '.join(filter(None, (lacks, more)))}. Compare reports of the same data."
            )
        row = {image_id: index for index, image_id in enumerate(report.ids)}
        order = [row[image_id] for image_id in first.ids]
        labels = report.labels[order]
        differ = [i for i, a, b in zip(first.ids, first.labels, labels) if a != b]
        if differ:
            raise ValueError(
                f"{report.folder} and {first.folder} give other true grades for {len(differ)} "
                f"image(s): {_some(differ)}. Compare reports evaluated against the same labels."
            )
        probabilities = report.probabilities[order]
        aligned.append(replace(report, ids=first.ids, labels=labels, probabilities=probabilities))
    return aligned


def headline(report: Report) -> dict[str, float]:
    """The `HEADLINE` metrics of one report's plain outputs, graded by its rule."""
    metrics = compute_dr_metrics(report.probabilities, report.labels, rule=report.rule)
    return {name: metrics[name] for name in HEADLINE}


def bootstrap_draws(reports: list[Report], n: int, seed: int = 0) -> np.ndarray:
    """[reports, HEADLINE, n] metrics: in each draw every report is scored on the same
    resampled image indices (so differences between reports are paired)."""
    labels = reports[0].labels

    grades = [report.grades for report in reports]

    def statistic(indices: np.ndarray) -> np.ndarray:
        return np.stack(
            [
                resampled_metrics(r.probabilities, labels, indices, grades=g)
                for r, g in zip(reports, grades)
            ]
        )

    return bootstrap_distribution(statistic, len(labels), n, seed)


def interval(values: np.ndarray) -> list[float | None]:
    """Percentile 95 % interval of the draws where the value is defined."""
    lo, hi, skipped = percentile_interval(values)
    return [float(lo), float(hi)] if skipped < len(values) else [None, None]


def paired_p_value(differences: np.ndarray, observed: float) -> float:
    """Two-sided paired-bootstrap p-value: twice the share of draws whose difference lies at or
    across 0 on the other side from `observed`, capped at 1 (nan when undefined)."""
    defined = differences[~np.isnan(differences)]
    if not len(defined) or np.isnan(observed):
        return float("nan")
    share = np.mean(defined <= 0) if observed >= 0 else np.mean(defined >= 0)
    return float(min(1.0, 2.0 * share))


def compare_reports(
    reports: list,
    output: str | Path | None = None,
    bootstrap: int = 2000,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Compare report folders of the same images; write `comparison.json`, `comparison.md` and
    `comparison.png` into `output` (default: `comparison` beside the first report) and return
    what `comparison.json` holds. A folder holding a comparison is refused unless `overwrite`."""
    if len(reports) < 2 or bootstrap < 1:
        raise ValueError("Give at least two report folders, and --bootstrap of at least 1.")
    loaded = align([read_report(folder) for folder in reports])
    output = Path(output) if output else Path(reports[0]).parent / "comparison"
    if (output / OUTPUT_FILES[0]).exists() and not overwrite:
        raise FileExistsError(f"{output} already holds a comparison: pass --overwrite.")
    names = [report.folder.name for report in loaded]
    if len(set(names)) < len(names):
        names = [str(report.folder) for report in loaded]
    draws = bootstrap_draws(loaded, bootstrap, seed)
    entries = [
        {"name": name, "folder": str(report.folder), "model": report.model}
        | {"grade_rule": report.rule.describe(), "metrics": headline(report)}
        | {"ci95": {m: interval(draws[k, j]) for j, m in enumerate(HEADLINE)}}
        for k, (name, report) in enumerate(zip(names, loaded))
    ]
    pairs = []
    for a, b in itertools.combinations(range(len(loaded)), 2):
        pair = {"a": names[a], "b": names[b]}
        for metric in PAIRED:
            j = HEADLINE.index(metric)
            observed = entries[a]["metrics"][metric] - entries[b]["metrics"][metric]
            differences = draws[a, j] - draws[b, j]
            pair[metric] = {
                "difference": observed,
                "ci95": interval(differences),
                "p_value": paired_p_value(differences, observed),
            }
        pairs.append(pair)
    result = {"output": str(output), "num_images": len(loaded[0].ids), "bootstrap": bootstrap}
    result |= {"seed": seed, "test": PAIRED_TEST, "delong": DELONG_NOTE}
    output.mkdir(parents=True, exist_ok=True)
    result = write_metrics(
        output / "comparison.json", result | {"reports": entries} | {"pairs": pairs}
    )
    (output / "comparison.md").write_text(comparison_markdown(result))
    plot_referable_rocs(loaded, names, output / "comparison.png")
    return result


def _value(value, ci=None) -> str:
    text = "n/a" if value is None else f"{value:.4f}"
    if ci and None not in ci:
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return text


def comparison_markdown(result: dict) -> str:
    """The metrics table (value [95 % CI] per report) and the paired tests, as Markdown."""
    reports = result["reports"]
    lines = [
        f"# Comparison of {len(reports)} reports on {result['num_images']} images",
        "",
        "| Metric | " + " | ".join(r["name"] for r in reports) + " |",
        "|---|" + "---|" * len(reports),
    ]
    for metric in HEADLINE:
        cells = [_value(r["metrics"][metric], r["ci95"][metric]) for r in reports]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    lines += ["", "## Paired differences (A - B) [95% CI], paired-bootstrap p-values", ""]
    lines.append("| A | B | QWK difference | p (QWK) | referable AUROC difference | p (AUROC) |")
    lines.append("|---|---|---|---|---|---|")
    for pair in result["pairs"]:
        cells = [pair["a"], pair["b"]]
        for metric in PAIRED:
            cells += [_value(pair[metric]["difference"], pair[metric]["ci95"])]
            cells += [_value(pair[metric]["p_value"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Test: {result['test']} ({result['bootstrap']} draws, seed {result['seed']})."]
    lines += [f"{result['delong']}.", "", "Reports:"]
    lines += [
        f"- {r['name']}: {r['folder']} (model {r['model']}; grades by {r['grade_rule']})"
        for r in reports
    ]
    return "\n".join(lines) + "\n"


def plot_referable_rocs(reports: list[Report], names: list[str], path: Path) -> Path:
    """The referable-DR ROC curves, P(grade >= 2) or a regression score, of every report in one
    figure (`RocCurveDisplay`, its legend giving each report's AUROC)."""
    figure = Figure(figsize=(6.5, 6))
    ax = figure.add_subplot(1, 1, 1)
    for name, report in zip(names, reports):
        positive = report.labels >= REFERABLE_MIN_GRADE
        if positive.any() and not positive.all():
            scores = referable_scores(report.probabilities)
            RocCurveDisplay.from_predictions(
                positive, scores, name=name, ax=ax, curve_kwargs={"lw": 2}
            )
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), title="Referable DR (grade >= 2)")
    ax.set(xlabel="1 - specificity (false positive rate)", ylabel="Sensitivity")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


__all__ = [
    "HEADLINE",
    "Report",
    "align",
    "compare_reports",
    "comparison_markdown",
    "paired_p_value",
    "read_report",
]
