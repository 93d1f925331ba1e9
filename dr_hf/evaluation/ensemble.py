"""What an ensemble's report says of its members: each member's headline metrics beside those
of the averaged probabilities.

Grading an ensemble is `dr_hf.inference.grade` with several graders (each member keeps its own
preprocessing, the probabilities are averaged image by image); which folders make it up is
`dr_hf.inference.named_models`' (a `dr-hf cv` folder stands for its folds).
"""

from pathlib import Path

import numpy as np

from dr_hf.metrics import compute_dr_metrics

MEMBER_METRICS = ("accuracy", "qwk", "macro_auroc", "referable_auroc", "ece")


def headline_metrics(
    probabilities: np.ndarray, labels: np.ndarray, names: tuple[str, ...] = MEMBER_METRICS
) -> dict:
    """The metrics `names` (by default `MEMBER_METRICS`: accuracy, QWK, macro AUROC,
    referable-DR AUROC and ECE) of one set of probabilities."""
    metrics = compute_dr_metrics(probabilities, labels)
    return {name: metrics[name] for name in names}


def member_metrics(
    paths: list[Path], members: list[dict[str, np.ndarray]], labels: np.ndarray
) -> list[dict]:
    """Each member's model path and headline metrics (`MEMBER_METRICS`, plain; with TTA also
    under "tta"), from its probabilities as `Grading.members` holds them."""
    entries = []
    for path, member in zip(paths, members):
        entry = {"model": str(path)} | headline_metrics(member["plain"].astype(np.float64), labels)
        if "tta" in member:
            entry["tta"] = headline_metrics(member["tta"].astype(np.float64), labels)
        entries.append(entry)
    return entries


__all__ = ["MEMBER_METRICS", "headline_metrics", "member_metrics"]
