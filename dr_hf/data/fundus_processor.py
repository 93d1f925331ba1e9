"""`FundusImageProcessor`: how a dr_hf grader wants its input, as a transformers image processor.

RGB conversion, field-of-view crop, optional Ben Graham normalisation, resize to the model's input
side, rescale and normalise with the model's mean and std: `model_input` and `normalize`
(defined in `preprocessing.py`, which imports neither transformers nor torch).
It is the only image-to-tensor step at inference (`dr_hf.inference`: `dr-hf predict`, `dr-hf
evaluate`, the demo, heatmaps), and training's validation transform calls the same two functions,
so no two of them can preprocess differently. Its settings are saved as
`preprocessor_config.json` in every model folder dr_hf writes (`best/`, `checkpoint-N/`, LoRA
adapters), with this file and `preprocessing.py` beside it and an `auto_map`, so that

    pipeline("image-classification", model=folder, trust_remote_code=True)

grades as `dr-hf predict` does in an environment with transformers, timm, torch, NumPy, Pillow and
OpenCV but without dr_hf. With dr_hf imported, `AutoImageProcessor` finds this class without
remote code. This file imports nothing from dr_hf but its sibling `preprocessing.py`.
"""

from typing import Any

import numpy as np
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

# model_input and normalize live beside the crop so that a torch-free runtime (an ONNX export's
# grading script) preprocesses with the very same code.
from .preprocessing import (  # noqa: F401 (model_input and normalize are re-exported)
    as_rgb_array,
    model_input,
    normalize,
)

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class FundusImageProcessor(BaseImageProcessor):
    """Fundus photographs to `pixel_values` [N, 3, size, size]: crop, optional Ben Graham,
    resize, normalise."""

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        size: int | dict | None = None,
        crop_fov: bool = True,
        ben_graham: bool = False,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        side = size.get("height", 224) if isinstance(size, dict) else (size or 224)
        self.size = {"height": int(side), "width": int(side)}
        self.crop_fov = bool(crop_fov)
        self.ben_graham = bool(ben_graham)
        self.image_mean = [float(v) for v in (image_mean or IMAGENET_MEAN)]
        self.image_std = [float(v) for v in (image_std or IMAGENET_STD)]

    @property
    def input_side(self) -> int:
        return self.size["height"]

    def reduce(self, image: Any) -> np.ndarray:
        """The decoded photograph as RGB uint8, cheaply shrunk toward twice the input side: where
        `pixels` starts, and what a gradeability verdict of the same photograph can judge."""
        return as_rgb_array(image, self.input_side)

    def pixels(self, image: Any) -> np.ndarray:
        """One photograph (PIL image in any mode, or RGB uint8 array) as the model sees it,
        before normalisation: uint8 (size, size, 3)."""
        return model_input(image, self.input_side, self.crop_fov, self.ben_graham)

    def name_in(self, config) -> None:
        """Name this processor in a model's config (`image_processor_type`, `auto_map`): for a
        local timm checkpoint transformers reads the processor's type from config.json, not from
        preprocessor_config.json, and would otherwise fall back to timm's plain resize."""
        name = type(self).__name__
        config.image_processor_type = name
        module = __name__.rsplit(".", 1)[-1]
        config.auto_map = {
            **(getattr(config, "auto_map", None) or {}),
            "AutoImageProcessor": f"{module}.{name}",
        }

    def preprocess(self, images, return_tensors: str | None = None, **kwargs) -> BatchFeature:
        """`pixel_values` of one photograph or a list of them (PIL images or RGB uint8 arrays)."""
        if not isinstance(images, list | tuple):
            images = [images]
        pixel_values = [
            normalize(self.pixels(image), self.image_mean, self.image_std) for image in images
        ]
        return BatchFeature({"pixel_values": np.stack(pixel_values)}, tensor_type=return_tensors)


FundusImageProcessor.register_for_auto_class("AutoImageProcessor")
