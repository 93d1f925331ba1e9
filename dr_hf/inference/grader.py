"""A `Grader`: a trained model with the `FundusImageProcessor` it was validated with, on its
device, the grading rule that turns its outputs into grades (`grade_rule_for`) and the referable
decision its predictions follow (`decision_rule`).

The model is any folder training produced (full model, `best/`, `checkpoint-N`, LoRA adapter) or
a model already in memory, or a folder `dr-hf export --format onnx` wrote (run by onnxruntime).
Preprocessing is never re-specified: it is the model folder's
processor (its `preprocessor_config.json`, which `pipeline()` reads too). Folders saved before the
processor existed carry `dr_hf_preprocessing.json` instead, which is read in its place.
"""

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from transformers.utils import IMAGE_PROCESSOR_NAME

from dr_hf.config.command_arguments import OPERATING_POINTS
from dr_hf.data.fundus_processor import FundusImageProcessor, normalize
from dr_hf.data.prepare import steps_to_apply
from dr_hf.grades import NUM_GRADES
from dr_hf.grading_rule import GRADE_RULES, GradeRule, head_of
from dr_hf.inference.onnx_model import OnnxModel, is_onnx_folder
from dr_hf.models.parts import base_model, operating_points
from dr_hf.run_folder import cv_grade_rule, read_preprocessing

logger = logging.getLogger(__name__)


def model_view(processor: FundusImageProcessor, image) -> tuple[np.ndarray, torch.Tensor]:
    """One decoded photograph (PIL image or RGB array) as `processor`'s model sees it: uint8
    (size, size, 3), what figures show, and its normalised `pixel_values` (3, size, size), what
    the model grades."""
    pixels = processor.pixels(image)
    return pixels, torch.from_numpy(normalize(pixels, processor.image_mean, processor.image_std))


@dataclass
class Grader:
    """A model in eval mode on its device, with the processor it was validated with."""

    model: torch.nn.Module  # or an OnnxModel, called the same way
    processor: FundusImageProcessor
    device: torch.device
    folder: Path | None = None  # the model folder it was loaded from, if any

    @property
    def config(self):
        """The model's config (an exported folder's config.json, for an OnnxModel): its head,
        grading rule and operating points."""
        return getattr(base_model(self.model), "config", None)

    @property
    def head(self) -> str:
        """`softmax`, `ordinal` or `regression` (`dr_hf.grading_rule.head_of`)."""
        return head_of(self.config)

    @property
    def width(self) -> int:
        """Outputs per image: five grade probabilities, or one regression score."""
        return 1 if self.head == "regression" else NUM_GRADES

    @property
    def name(self) -> str:
        return str(self.folder) if self.folder else f"a {self.head} model"

    @property
    def preprocessing(self) -> dict:
        """The processor's settings, as evaluation reports record them."""
        p = self.processor
        return {
            "image_size": p.input_side,
            "crop_fov": p.crop_fov,
            "ben_graham": p.ben_graham,
            "mean": list(p.image_mean),
            "std": list(p.image_std),
        }

    def view(self, image) -> tuple[np.ndarray, torch.Tensor]:
        """One decoded photograph as the model sees it (see `model_view`)."""
        return model_view(self.processor, image)

    def for_prepared(self, prepared: dict | None) -> "Grader":
        """This grader for images of a source whose `dr-hf prepare` record is `prepared`: the
        crop or Ben Graham step already done there is not repeated."""
        p = self.processor
        crop, ben_graham = steps_to_apply(p.crop_fov, p.ben_graham, prepared)
        if (crop, ben_graham) == (p.crop_fov, p.ben_graham):
            return self
        processor = copy.deepcopy(p)
        processor.crop_fov, processor.ben_graham = crop, ben_graham
        return replace(self, processor=processor)


def load_processor(folder: str | Path) -> FundusImageProcessor | None:
    """The processor saved in a model folder (or, for a checkpoint of a run still going, in the
    run folder); for a folder saved before processors were, one built from its
    `dr_hf_preprocessing.json`; None when there is neither."""
    folder = Path(folder)
    for candidate in (folder, folder.parent):
        if (candidate / IMAGE_PROCESSOR_NAME).is_file():
            config = FundusImageProcessor.get_image_processor_dict(str(candidate))[0]
            if config.get("image_processor_type") == FundusImageProcessor.__name__:
                return FundusImageProcessor.from_pretrained(str(candidate))
    record = read_preprocessing(folder)
    if record is None:
        return None
    logger.info("%s predates preprocessor_config.json: using its dr_hf_preprocessing.json.", folder)
    return FundusImageProcessor(
        size=record["image_size"],
        crop_fov=record["crop_fov"],
        ben_graham=record["ben_graham"],
        image_mean=record["mean"],
        image_std=record["std"],
    )


def load_grader(
    model: str | Path | torch.nn.Module,
    retfound_weights: str | None = None,
    device: str | torch.device | None = None,
    processor: FundusImageProcessor | None = None,
    force: bool = False,
) -> Grader:
    """Load `model` (a folder or a loaded model) for inference on `device` (default: CUDA if any).

    A folder's own processor is used (see `load_processor`); a model without one gets its
    config's size and normalisation with the training defaults (crop on, Ben Graham off).
    """
    from dr_hf.models.graders import load_trained_model, processor_for

    if isinstance(model, str | Path) and is_onnx_folder(model):
        # onnxruntime picks CUDA or the CPU itself; the batch is handed over on the CPU
        folder = Path(model)
        onnx = OnnxModel(folder)
        return Grader(onnx, processor or load_processor(folder), torch.device("cpu"), folder)
    folder = None
    if isinstance(model, str | Path):
        folder = Path(model)
        processor = processor or load_processor(folder)
        model = load_trained_model(folder, retfound_weights=retfound_weights, force=force)
        if processor is None:
            logger.warning(
                "%s has no preprocessor_config.json (nor has its parent): using the model's "
                "input size and normalisation with the field-of-view crop and no Ben Graham.",
                folder,
            )
    processor = processor or processor_for(model)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return Grader(model.to(device).eval(), processor, device, folder)


def load_graders(
    models: list, retfound_weights: str | None = None, device: str | None = None
) -> list[Grader]:
    """One `Grader` per model (folder or loaded model), each with its own processor."""
    return [load_grader(model, retfound_weights, device) for model in models]


def same_outputs(graders: Grader | list[Grader]) -> list[Grader]:
    """The graders as a list, once they are known to output alike: an ensemble averages its
    members' outputs, so regression members cannot join softmax or ordinal ones (five
    probabilities each, which average fine). Else a ValueError naming them."""
    graders = [graders] if isinstance(graders, Grader) else list(graders)
    regression = [grader.name for grader in graders if grader.head == "regression"]
    if regression and len(regression) < len(graders):
        others = [grader.name for grader in graders if grader.head != "regression"]
        raise ValueError(
            "An ensemble averages its members' outputs, and a regression score cannot be averaged "
            f"with grade probabilities: {', '.join(regression)} (regression) against "
            f"{', '.join(others)} (grade probabilities). Ensemble models of one kind."
        )
    return graders


def parse_cut_points(text: str) -> tuple[float, ...]:
    """`--cut-points 0.5,1.5,2.5,3.5` as four floats (";" separates them too, as the
    predictions table's `cut_points` cell does); else a ValueError saying what to give."""
    parts = [part.strip() for part in str(text).replace(";", ",").split(",") if part.strip()]
    try:
        points = tuple(float(part) for part in parts)
    except ValueError:
        points = ()
    if len(points) != NUM_GRADES - 1:
        raise ValueError(
            f"--cut-points {text!r}: give {NUM_GRADES - 1} increasing numbers separated by "
            "commas, e.g. 0.5,1.5,2.5,3.5."
        )
    return points


def grade_rule_for(
    graders: Grader | list[Grader],
    rule: str | GradeRule | None = None,
    cut_points: Sequence[float] | str | None = None,
) -> GradeRule:
    """The `GradeRule` that turns the graders' (averaged) outputs into grades.

    Given `cut_points` (numbers, or text as `parse_cut_points` reads it): thresholds on them,
    for one grader or an ensemble. One grader: the rule
    its config saved (`GradeRule.from_config`: argmax for a model saved without one, thresholds
    for a regression model), or `rule` with its saved cut points.

    Several graders (an ensemble, cut after averaging): the members' saved cut points were
    fitted on their own outputs and are not applied to the average. When the graders are the
    fold models of one `dr-hf cv` folder, its rule and cut points, fitted on the out-of-fold
    predictions (`cv_grade_rule`), are the default; otherwise argmax, and thresholds need
    `cut_points`. A regression model or ensemble has no argmax (a clear error). A `GradeRule`
    given as `rule` is taken as it is (once the graders can follow it).
    """
    graders = same_outputs(graders)
    if isinstance(rule, GradeRule):
        if rule.rule == "argmax" and graders[0].head == "regression":
            rule = "argmax"  # refused below, as the name would be
        else:
            return rule
    if rule not in (None, *GRADE_RULES):
        raise ValueError(f"grade rule {rule!r} is not known: use argmax or thresholds.")
    regression = graders[0].head == "regression"
    if cut_points is not None:
        if rule == "argmax":
            raise ValueError(
                "--cut-points decide by thresholds, --grade-rule argmax by the most probable "
                "grade: give one or the other."
            )
        if isinstance(cut_points, str):
            cut_points = parse_cut_points(cut_points)
        return GradeRule("thresholds", tuple(cut_points))
    if len(graders) == 1:
        return GradeRule.from_config(graders[0].config, rule)
    if regression and rule == "argmax":
        raise ValueError(
            "Regression models have no grade probabilities to take the argmax of: their grade "
            "comes from cut points on the score (--grade-rule thresholds)."
        )
    record = cv_grade_rule([grader.folder for grader in graders])
    if record is not None:
        return GradeRule.from_record(record, rule)
    if rule == "thresholds" or regression:
        raise ValueError(
            f"This ensemble of {len(graders)} models has no cut points of its own: its members' "
            "cut points were fitted on their own outputs and do not apply to the averaged ones. "
            "Give --cut-points a,b,c,d, or grade with the models of a dr-hf cv folder (its cut "
            "points were fitted on its out-of-fold predictions)"
            + ("." if regression else ", or use --grade-rule argmax.")
        )
    return GradeRule()


def decision_rule(
    graders: Grader | list[Grader],
    operating_point: str | None = None,
    threshold: float | None = None,
) -> tuple[str, float | None]:
    """(rule, threshold on P(grade >= 2), or on the score of regression models) deciding
    referable DR for the graders' predictions.

    One grader: a given `threshold` wins (rule `threshold`); `argmax` refers on the grade the
    grading rule decided (no threshold); `spec90` / `spec95` use the threshold training saved in
    the model's config for that specificity. By default `spec90` where the model has it, else
    `argmax`.

    Several graders (an ensemble, its probabilities averaged): the members' saved operating
    points were tuned on their own probabilities and do not apply to the average, so the rule is
    the averaged predicted grade (`ensemble_argmax`) or a given threshold (`ensemble_threshold`).
    """
    graders = [graders] if isinstance(graders, Grader) else list(graders)
    if operating_point not in (None, *OPERATING_POINTS):
        raise ValueError(f"operating_point={operating_point!r}: choose one of {OPERATING_POINTS}.")
    if len(graders) > 1:
        if operating_point not in (None, "argmax"):
            raise ValueError(
                f"operating_point={operating_point!r}: the members' saved operating points do not "
                "apply to an ensemble's averaged probabilities; use --operating-point argmax or "
                "--referable-threshold P."
            )
        if threshold is not None:
            return "ensemble_threshold", float(threshold)
        return "ensemble_argmax", None
    if threshold is not None:
        return "threshold", float(threshold)
    if operating_point == "argmax":
        return "argmax", None
    name = operating_point or "spec90"
    saved = operating_points(graders[0].model).get(f"spec_{name.removeprefix('spec')}") or {}
    if saved.get("threshold") is not None:
        return name, float(saved["threshold"])
    if operating_point is not None:
        raise ValueError(
            f"The model has no saved {name} operating point (it was trained without one, or its "
            "validation split lacked a grade): use --operating-point argmax or "
            "--referable-threshold P."
        )
    return "argmax", None


__all__ = [
    "OPERATING_POINTS",
    "Grader",
    "decision_rule",
    "grade_rule_for",
    "load_grader",
    "load_graders",
    "load_processor",
    "model_view",
    "parse_cut_points",
    "same_outputs",
]
