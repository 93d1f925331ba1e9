"""A `Grader`: a trained model with the `FundusImageProcessor` it was validated with, on its
device, and the referable decision its predictions follow.

The model is any folder training produced (full model, `best/`, `checkpoint-N`, LoRA adapter) or
a model already in memory, or a folder `dr-hf export --format onnx` wrote (run by onnxruntime).
Preprocessing is never re-specified: it is the model folder's
processor (its `preprocessor_config.json`, which `pipeline()` reads too). Folders saved before the
processor existed carry `dr_hf_preprocessing.json` instead, which is read in its place.
"""

import copy
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from transformers.utils import IMAGE_PROCESSOR_NAME

from dr_hf.data.fundus_processor import FundusImageProcessor, normalize
from dr_hf.data.prepare import steps_to_apply
from dr_hf.inference.onnx_model import OnnxModel, is_onnx_folder
from dr_hf.models.parts import operating_points
from dr_hf.run_folder import read_preprocessing

logger = logging.getLogger(__name__)

OPERATING_POINTS = ("spec90", "spec95", "argmax")


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
        return Grader(OnnxModel(folder), processor or load_processor(folder), torch.device("cpu"))
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
    return Grader(model.to(device).eval(), processor, device)


def load_graders(
    models: list, retfound_weights: str | None = None, device: str | None = None
) -> list[Grader]:
    """One `Grader` per model (folder or loaded model), each with its own processor."""
    return [load_grader(model, retfound_weights, device) for model in models]


def decision_rule(
    graders: Grader | list[Grader],
    operating_point: str | None = None,
    threshold: float | None = None,
) -> tuple[str, float | None]:
    """(rule, threshold on P(grade >= 2)) deciding referable DR for the graders' predictions.

    One grader: a given `threshold` wins (rule `threshold`); `argmax` refers on the predicted
    grade (no threshold); `spec90` / `spec95` use the threshold training saved in the model's
    config for that specificity. By default `spec90` where the model has it, else `argmax`.

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
    "load_grader",
    "load_graders",
    "load_processor",
    "model_view",
]
