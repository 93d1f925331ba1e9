"""`DRGradingPipeline`: transformers' image-classification pipeline that returns the grade a
dr_hf model decides, by the rule and cut points saved in its config.

Every saved model folder carries this file and names it in config.json (`custom_pipelines`), so
`pipeline(model=folder, trust_remote_code=True)` (no task, or the task "dr-grading") loads it
without dr_hf installed: it imports only transformers, torch and NumPy. The plain
`pipeline("image-classification", ...)` keeps returning the five probabilities.

The rule is the one `dr_hf.grading_rule` applies (a test holds the two equal): `argmax`, or
`thresholds`, four increasing cut points on the expected grade sum_k k * P(k) (or on a
regression model's score): the grade is the number of cut points at or below it. The referable
decision follows the 90 %-specificity operating point training saved (P(grade >= 2), or the
score, at or above its threshold), else the decided grade >= 2. There is no gradeability check
here: dr_hf's `predict` has it.
"""

import numpy as np
import torch
from transformers import ImageClassificationPipeline

TASK = "dr-grading"
REFERABLE_MIN_GRADE = 2
GRADE_NAMES = ["No DR", "Mild", "Moderate", "Severe", "Proliferative DR"]


class DRGradingPipeline(ImageClassificationPipeline):
    """One dict per photograph: `grade`, `label`, `rule`, `cut_points`, `score` (the continuous
    grade the cut points apply to), `probabilities` (by grade name; None for a regression
    model), `referable_score`, `referable` and the `operating_point` that decided it."""

    def _sanitize_parameters(self, timeout=None, **kwargs):
        return ({} if timeout is None else {"timeout": timeout}), {}, {}

    def postprocess(self, model_outputs, **kwargs) -> dict:
        config = self.model.config
        logits = model_outputs["logits"][0].to(torch.float64).cpu().numpy()
        saved = getattr(config, "dr_hf_grade_rule", None) or {}
        regression = getattr(config, "dr_hf_head", None) == "regression"
        rule = saved.get("rule") or ("thresholds" if regression else "argmax")
        if regression:
            probabilities, score = None, float(logits[0])
            referable_score = score
        else:
            probabilities = np.exp(logits - logits.max())
            probabilities /= probabilities.sum()
            score = float(probabilities @ np.arange(len(probabilities)))
            referable_score = float(probabilities[REFERABLE_MIN_GRADE:].sum())
        if rule == "thresholds":
            cut_points = saved.get("cut_points")
            if not cut_points:
                raise ValueError(f"{config.name_or_path}: the thresholds rule has no cut points.")
            grade = int(np.searchsorted(np.asarray(cut_points, np.float64), score, side="right"))
        else:
            cut_points, grade = None, int(np.argmax(probabilities))
        points = getattr(config, "dr_hf_operating_points", None) or {}
        threshold = (points.get("spec_90") or {}).get("threshold")
        if threshold is None:
            operating_point, referable = "argmax", grade >= REFERABLE_MIN_GRADE
        else:
            operating_point, referable = "spec90", referable_score >= threshold
        return {
            "grade": grade,
            "label": GRADE_NAMES[grade],
            "rule": rule,
            "cut_points": cut_points,
            "score": score,
            "probabilities": None
            if probabilities is None
            else {GRADE_NAMES[k]: float(p) for k, p in enumerate(probabilities)},
            "referable_score": referable_score,
            "referable": bool(referable),
            "operating_point": operating_point,
        }


def name_pipeline_in(config) -> None:
    """Name `DRGradingPipeline` in a model's config (`custom_pipelines`), as
    `Pipeline.save_pretrained` of a registered pipeline does; the model folder must also hold
    this file (`PIPELINE_FILE`)."""
    config.custom_pipelines = {
        TASK: {
            "impl": f"{__name__.rsplit('.', 1)[-1]}.{DRGradingPipeline.__name__}",
            "pt": ["AutoModelForImageClassification"],
            "type": "image",
        }
    }


PIPELINE_FILE = __file__
"""This module's file, copied into every saved model folder."""
