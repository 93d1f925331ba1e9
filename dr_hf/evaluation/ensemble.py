"""What an ensemble's report says of its members: each member's headline metrics, graded by its
own saved rule, beside those of the averaged outputs.

Grading an ensemble is `dr_hf.inference.grade` with several graders (each member keeps its own
preprocessing, the outputs are averaged image by image, then cut into grades by the ensemble's
rule); which folders make it up is `dr_hf.inference.named_models`' (a `dr-hf cv` folder stands
for its folds).
"""

from pathlib import Path

import numpy as np

from dr_hf.grading_rule import GradeRule
from dr_hf.metrics import compute_dr_metrics

MEMBER_METRICS = ("accuracy", "qwk", "macro_auroc", "referable_auroc", "ece")


def headline_metrics(
    outputs: np.ndarray,
    labels: np.ndarray,
    names: tuple[str, ...] = MEMBER_METRICS,
    rule: GradeRule | None = None,
) -> dict:
    """The metrics `names` (by default `MEMBER_METRICS`: accuracy, QWK, macro AUROC,
    referable-DR AUROC and ECE) of one set of outputs, graded by `rule` (argmax by default)."""
    metrics = compute_dr_metrics(outputs, labels, rule=rule)
    return {name: metrics[name] for name in names}


def member_metrics(
    paths: list[Path],
    members: list[dict[str, np.ndarray]],
    labels: np.ndarray,
    rules: list[GradeRule] | None = None,
) -> list[dict]:
    """Each member's model path, grading rule and headline metrics (`MEMBER_METRICS`, plain;
    with TTA also under "tta"), from its outputs as `Grading.members` holds them, graded by its
    own rule (`rules`, argmax by default)."""
    entries = []
    for path, member, rule in zip(paths, members, rules or [GradeRule()] * len(paths)):
        entry = {"model": str(path), "grade_rule": rule.describe()}
        entry |= headline_metrics(member["plain"].astype(np.float64), labels, rule=rule)
        if "tta" in member:
            entry["tta"] = headline_metrics(member["tta"].astype(np.float64), labels, rule=rule)
        entries.append(entry)
    return entries


__all__ = ["MEMBER_METRICS", "headline_metrics", "member_metrics"]
