"""`predict`: grades, referable decisions and gradeability of photographs, for notebooks and
`dr-hf predict`. One model or several (an ensemble, their outputs averaged, then cut into
grades by the grading rule), through the one loop `grade_stream`; `predict_stream` yields each
batch's result as it is done, for an archive, and `predict` returns them all as one."""

import inspect
import logging
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path

import torch

from dr_hf.grading_rule import GradeRule
from dr_hf.inference.grade import Grading, bind_arguments, grade_stream
from dr_hf.inference.grader import Grader, decision_rule, grade_rule_for, load_grader
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


def predict_stream(
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
    skip: Collection[str] = (),
    grade_rule: str | GradeRule | None = None,
    cut_points: Sequence[float] | str | None = None,
) -> Iterator[PredictionResult]:
    """`predict`, one `PredictionResult` per batch as it is graded, its rows in input order
    (failures in their place). Memory stays that of a batch however many images there are. The
    models load and the rules are checked when it is called, before the first batch."""
    _, batches, decide = _plan(locals())
    return (decide(graded) for graded in batches)


def predict(model, inputs, *args, **options) -> PredictionResult:
    """Grade image files, folders of images, PIL images or RGB arrays in batches; the
    parameters are `predict_stream`'s.

    `model` is a `Grader`, a model folder or a loaded model, or a list of them: several are an
    ensemble whose outputs are averaged, each member with its own preprocessing. The grades
    follow `grade_rule_for(graders, grade_rule, cut_points)`: by default the rule the model
    saved (an ensemble: argmax, or the cut points of the dr-hf cv folder it comes from).
    Unreadable files are collected in `failures` (logged one by one); every other image is
    graded, and with `quality` (the default) gets its gradeability verdict (the first model's):
    a photograph judged ungradable keeps its probabilities but gets no grade and no referable
    decision ("retake or refer"), unless `grade_ungradable` (research runs). The referable
    decision follows `decision_rule(graders, operating_point, referable_threshold)`. Images
    named in `skip` are left out.
    """
    call = bind_arguments(predict_stream, model, inputs, *args, **options)
    graders, batches, decide = _plan(call)
    return decide(Grading.join(list(batches), graders, call["tta"], call["quality"]))


predict.__signature__ = inspect.signature(predict_stream).replace(
    return_annotation=PredictionResult
)


def _plan(call: dict) -> tuple[list[Grader], Iterator[Grading], Callable]:
    """From `predict_stream`'s arguments: the graders, their batches (failures logged), and
    what turns a `Grading` into a `PredictionResult` by the grading and referable rules."""
    graders = as_graders(call["model"], call["retfound_weights"], call["device"])
    rule, threshold = decision_rule(graders, call["operating_point"], call["referable_threshold"])
    grading = grade_rule_for(graders, call["grade_rule"], call["cut_points"])
    batches = grade_stream(
        graders,
        call["inputs"],
        call["tta"],
        call["batch_size"],
        call["num_workers"],
        call["progress"],
        call["quality"],
        call["skip"],
    )

    def decide(graded: Grading) -> PredictionResult:
        return _result(graded, call["tta"], rule, threshold, call["grade_ungradable"], grading)

    return graders, _logged(batches), decide


def _logged(batches: Iterator[Grading]) -> Iterator[Grading]:
    for graded in batches:
        for name, reason in graded.failures:
            logger.warning("Could not grade %s: %s", name, reason)
        yield graded


def _result(
    graded: Grading,
    tta: bool,
    rule: str,
    threshold: float | None,
    grade_ungradable: bool,
    grading: GradeRule,
) -> PredictionResult:
    return PredictionResult(
        graded.names,
        graded.variants["tta" if tta else "plain"],
        graded.failures,
        threshold,
        operating_point=rule,
        quality=graded.quality,
        grade_ungradable=grade_ungradable,
        order=graded.order,
        grade_rule=grading,
    )


__all__ = ["as_graders", "predict", "predict_stream"]
