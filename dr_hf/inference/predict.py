"""`predict`: grades, referable decisions and gradeability of photographs, for notebooks and
`dr-hf predict`. One model or several (an ensemble, their probabilities averaged), through the
one loop `grade`."""

import logging
from pathlib import Path

import torch

from dr_hf.inference.grade import grade
from dr_hf.inference.grader import Grader, decision_rule, load_grader
from dr_hf.inference.results import PredictionResult

logger = logging.getLogger(__name__)


def as_graders(
    models, retfound_weights: str | None = None, device: str | None = None
) -> list[Grader]:
    """A grader, a model folder or a loaded model, or a list of them, as a list of graders."""
    if isinstance(models, Grader | str | Path | torch.nn.Module):
        models = [models]
    return [
        model if isinstance(model, Grader) else load_grader(model, retfound_weights, device)
        for model in models
    ]


def predict(
    model,
    inputs,
    tta: bool = False,
    batch_size: int = 32,
    device: str | None = None,
    retfound_weights: str | None = None,
    num_workers: int | None = None,
    progress: bool | None = None,
    referable_threshold: float | None = None,
    operating_point: str | None = None,
    quality: bool = True,
    grade_ungradable: bool = False,
) -> PredictionResult:
    """Grade image files, folders of images, PIL images or RGB arrays in batches.

    `model` is a `Grader`, a model folder or a loaded model, or a list of them: several are an
    ensemble whose probabilities are averaged, each member with its own preprocessing.
    Unreadable files are collected in `failures` (logged one by one); every other image is
    graded, and with `quality` (the default) gets its gradeability verdict (the first model's):
    a photograph judged ungradable keeps its probabilities but gets no grade and no referable
    decision ("retake or refer"), unless `grade_ungradable` (research runs). The referable
    decision follows
    `decision_rule(graders, operating_point, referable_threshold)`.
    """
    graders = as_graders(model, retfound_weights, device)
    rule, threshold = decision_rule(graders, operating_point, referable_threshold)
    graded = grade(graders, inputs, tta, batch_size, num_workers, progress, quality)
    for name, reason in graded.failures:
        logger.warning("Could not grade %s: %s", name, reason)
    return PredictionResult(
        graded.names,
        graded.variants["tta" if tta else "plain"],
        graded.failures,
        threshold,
        operating_point=rule,
        quality=graded.quality,
        grade_ungradable=grade_ungradable,
    )


__all__ = ["as_graders", "predict"]
