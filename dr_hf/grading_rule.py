"""How a grader's outputs become a grade: the model's head, the rule, and the cut points.

A grader has one of three heads (`HEADS`): `softmax` and `ordinal` output five grade
probabilities, `regression` one continuous grade. Their outputs reach this module as an array
[N, 5] of probabilities or [N, 1] of regression scores.

The grade is decided by a rule (`GRADE_RULES`):
- `argmax`: the most probable grade (probability heads only);
- `thresholds`: four increasing cut points on a continuous grade, the expected grade
  sum_k k * P(k) of the probabilities or the regression output: grade = the number of cut points
  at or below the score. The cut points are fitted on the validation split to maximise quadratic
  weighted kappa (`fit_cut_points`), the "optimised rounder" of the APTOS 2019 leaders.

An ensemble averages its members' outputs, then cuts: the expected grade of the averaged
probabilities is the average of the members' expected grades. The rule and cut points a model
was validated with live in its config (`GRADE_RULE_KEY`), written by training and read by every
consumer through `GradeRule.from_config`.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dr_hf.grades import NUM_GRADES

HEADS = ("softmax", "ordinal", "regression")
GRADE_RULES = ("argmax", "thresholds")
HEAD_KEY = "dr_hf_head"
GRADE_RULE_KEY = "dr_hf_grade_rule"
DEFAULT_CUT_POINTS = (0.5, 1.5, 2.5, 3.5)
_CANDIDATES = 256  # cut-point values tried per coordinate step (score quantiles)
_ROUNDS = 20


def head_of(config) -> str:
    """The head a model config records (`HEAD_KEY`); a config without one is a softmax model."""
    head = getattr(config, HEAD_KEY, None) or "softmax"
    if head not in HEADS:
        raise ValueError(f"config {HEAD_KEY}={head!r} is not known: one of {', '.join(HEADS)}.")
    return head


def is_regression(outputs) -> bool:
    """Whether `outputs` are regression scores [N, 1] (else probabilities [N, 5])."""
    return np.ndim(outputs) == 2 and np.shape(outputs)[1] == 1


def check_outputs(outputs) -> np.ndarray:
    """`outputs` as float64 [N, 5] probabilities or [N, 1] scores, finite; else a clear error."""
    values = np.asarray(outputs, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] not in (1, NUM_GRADES):
        raise ValueError(
            f"A grader's outputs have shape [N, {NUM_GRADES}] (grade probabilities) or [N, 1] "
            f"(a regression score), got {values.shape}."
        )
    if not np.all(np.isfinite(values)):
        raise ValueError("The outputs contain NaN or infinity; check the model.")
    return values


def expected_grade(probabilities) -> np.ndarray:
    """sum_k k * P(grade = k) of each row of [N, 5] probabilities."""
    return np.asarray(probabilities, dtype=np.float64) @ np.arange(NUM_GRADES, dtype=np.float64)


def continuous_scores(outputs) -> np.ndarray:
    """The continuous grade [N] the cut points apply to: the expected grade of probabilities,
    or the regression output itself."""
    values = check_outputs(outputs)
    return values[:, 0] if is_regression(values) else expected_grade(values)


def cut(scores, cut_points: Sequence[float]) -> np.ndarray:
    """Grades [N] of continuous `scores`: how many of the increasing cut points are <= the score."""
    return np.searchsorted(np.asarray(cut_points, np.float64), np.asarray(scores), side="right")


def check_cut_points(cut_points: Sequence[float]) -> tuple[float, ...]:
    """Four finite, strictly increasing cut points, as a tuple of floats; else a clear error."""
    points = tuple(float(p) for p in cut_points)
    if len(points) != NUM_GRADES - 1 or not np.all(np.isfinite(points)):
        raise ValueError(f"cut points: {NUM_GRADES - 1} finite numbers are needed, got {points}.")
    if any(b <= a for a, b in zip(points, points[1:])):
        raise ValueError(f"cut points {points} must increase strictly (grade 1 < 2 < 3 < 4).")
    return points


def fast_qwk(labels: np.ndarray, grades: np.ndarray) -> float:
    """Quadratic weighted kappa over the 0-4 scale, `cohen_kappa_score(weights="quadratic",
    labels=0..4)` without its input checks: the cut-point search calls it thousands of times
    (600 images: about 25 us a call here against 900 us for scikit-learn's); 0.0 where undefined.
    """
    k = NUM_GRADES
    observed = np.bincount(labels * k + grades, minlength=k * k).reshape(k, k).astype(np.float64)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    weights = (np.arange(k)[:, None] - np.arange(k)[None, :]) ** 2
    chance = (weights * expected).sum()
    return 0.0 if chance == 0 else float(1.0 - (weights * observed).sum() / chance)


def fit_cut_points(scores, labels) -> tuple[tuple[float, ...], dict]:
    """The four cut points on continuous `scores` [N] that maximise QWK against integer grades
    `labels` [N], and a record of the fit (QWK at the default cut points and at the fitted ones).

    A coordinate search from 0.5, 1.5, 2.5, 3.5: each cut point in turn moves to the value,
    among score quantiles strictly between its neighbours, that maximises QWK with the others
    held (ties keep the nearest value), until a round changes nothing. Bounded by its
    neighbours, no cut point ever crosses another, and QWK never falls below the default's.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(np.int64).ravel()
    if s.shape != y.shape or not len(s):
        raise ValueError(
            f"scores {s.shape} and labels {y.shape} must be two equal, non-empty lists."
        )
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinity; check the model's outputs.")
    points = np.array(DEFAULT_CUT_POINTS)
    start = best = fast_qwk(y, cut(s, points))
    quantiles = np.unique(np.quantile(s, np.linspace(0, 1, _CANDIDATES)))
    values = np.unique(np.concatenate([quantiles[:-1] + np.diff(quantiles) / 2, quantiles]))
    for _ in range(_ROUNDS):
        moved = False
        for k in range(len(points)):
            low = points[k - 1] if k else -np.inf
            high = points[k + 1] if k + 1 < len(points) else np.inf
            tried = values[(values > low) & (values < high)]
            for value in tried[np.argsort(np.abs(tried - points[k]), kind="stable")]:
                candidate = points.copy()
                candidate[k] = value
                qwk = fast_qwk(y, cut(s, candidate))
                if qwk > best + 1e-12:
                    best, points, moved = qwk, candidate, True
        if not moved:
            break
    fitted = check_cut_points(points)
    return fitted, {"qwk_default_cut_points": start, "qwk_fitted": best, "images": len(s)}


@dataclass(frozen=True)
class GradeRule:
    """How outputs become grades: `argmax`, or `thresholds` with four `cut_points`."""

    rule: str = "argmax"
    cut_points: tuple[float, ...] | None = None

    def __post_init__(self):
        if self.rule not in GRADE_RULES:
            raise ValueError(f"grade rule {self.rule!r} is not known: use argmax or thresholds.")
        if self.rule == "thresholds":
            if self.cut_points is None:
                raise ValueError(
                    "The thresholds rule needs cut points, and this model has none saved (it was "
                    "trained before they were fitted, or without a validation split): use "
                    "--grade-rule argmax, or give --cut-points a,b,c,d."
                )
        if self.cut_points is not None:
            object.__setattr__(self, "cut_points", check_cut_points(self.cut_points))

    def grades(self, outputs) -> np.ndarray:
        """Grades [N] of `outputs` ([N, 5] probabilities or [N, 1] regression scores)."""
        values = check_outputs(outputs)
        if self.rule == "thresholds":
            return cut(continuous_scores(values), self.cut_points)
        if is_regression(values):
            raise ValueError(
                "A regression model has no grade probabilities to take the argmax of: its grade "
                "comes from cut points on its score (--grade-rule thresholds)."
            )
        return values.argmax(axis=1)

    def describe(self) -> str:
        """`argmax`, or `thresholds 0.52/1.61/2.47/3.38`, as predictions rows and reports say."""
        if self.rule == "argmax":
            return "argmax"
        return "thresholds " + "/".join(f"{p:.4g}" for p in self.cut_points)

    def record(self, **fit) -> dict:
        """What a model config stores under `GRADE_RULE_KEY` (with the fit's figures, if any)."""
        cut_points = None if self.cut_points is None else list(self.cut_points)
        return {"rule": self.rule, "cut_points": cut_points, **fit}

    @classmethod
    def from_record(cls, record: dict | None, rule: str | None = None) -> "GradeRule":
        """The saved rule (or `rule` in its place, with the saved cut points); `argmax` for a
        record-less model."""
        record = record or {}
        return cls(rule or record.get("rule") or "argmax", record.get("cut_points"))

    @classmethod
    def from_config(cls, config, rule: str | None = None) -> "GradeRule":
        """The rule a model config saved (see `from_record`), or `rule` with its saved cut points.
        A regression model decides by cut points only: argmax for it is an error."""
        saved = getattr(config, GRADE_RULE_KEY, None) or {}
        if head_of(config) == "regression":
            if rule == "argmax":
                raise ValueError(
                    "A regression model has no grade probabilities to take the argmax of: its "
                    "grade comes from cut points on its score (--grade-rule thresholds)."
                )
            return cls("thresholds", saved.get("cut_points"))
        return cls.from_record(saved, rule)


__all__ = [
    "DEFAULT_CUT_POINTS",
    "GRADE_RULES",
    "GRADE_RULE_KEY",
    "HEADS",
    "HEAD_KEY",
    "GradeRule",
    "check_cut_points",
    "check_outputs",
    "continuous_scores",
    "cut",
    "expected_grade",
    "fast_qwk",
    "fit_cut_points",
    "head_of",
    "is_regression",
]
