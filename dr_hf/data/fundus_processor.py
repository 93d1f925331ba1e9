"""`FundusImageProcessor`: how a dr_hf grader wants its input, as a transformers image processor.

RGB conversion, field-of-view crop, optional Ben Graham normalisation, resize to the model's input
side, rescale and normalise with the model's mean and std: `model_input` and `normalize` below.
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

from .preprocessing import (
    as_rgb_array,
    cv2,  # imported there, with a clear message when OpenCV is missing
    preprocess_fundus,
)

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def model_input(image: Any, size: int, crop: bool = True, ben_graham: bool = False) -> np.ndarray:
    """The photograph as a model of input side `size` sees it: RGB uint8 (size, size, 3).

    `as_rgb_array`'s cheap reduction toward twice `size`, the field-of-view crop and Ben Graham
    (run at `size`, as `dr-hf prepare` runs it), then one area resampling to the square input.
    """
    array = as_rgb_array(image, size)
    array = preprocess_fundus(array, crop, ben_graham, size if ben_graham else None)
    if array.shape[:2] == (size, size):
        return array
    return cv2.resize(array, (size, size), interpolation=cv2.INTER_AREA)


def normalize(array: np.ndarray, mean, std) -> np.ndarray:
    """`(pixel / 255 - mean) / std` per channel, as float32 channels-first (3, H, W)."""
    mean = np.asarray(mean, np.float32) * 255
    std = np.asarray(std, np.float32) * 255
    return ((array.astype(np.float32) - mean) / std).transpose(2, 0, 1)


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
