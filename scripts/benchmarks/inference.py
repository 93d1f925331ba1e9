"""Inference throughput of `dr_hf.inference.predict`, with and without test-time augmentation.

`predict` runs end to end on photographs (decode, field-of-view crop, resize, batched forward),
as `dr-hf predict` does. The model's batched forward alone, on in-memory tensors, is timed beside
it, to show how much of the cost is the model and how much the photographs.
"""

import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from benchmarks.report import summarize
from dr_hf.config.arguments import ModelArguments
from dr_hf.data.quality import assess_quality
from dr_hf.evaluation.explain import file_heatmaps
from dr_hf.inference import TTA_VIEWS, grade_batch, load_grader, predict
from dr_hf.models.graders import create_model


def bench_inference(
    photos: list[str | Path],
    model_name: str = "resnet18",
    image_size: int = 224,
    batch_size: int = 16,
    repeats: int = 3,
) -> dict:
    """Images/s of `predict` on `photos` (with and without its gradeability check), of the check
    alone, of `predict` with a Grad-CAM figure per photograph, and of the forward on tensors,
    with and without TTA where it applies, interleaved, after one warm-up round."""
    torch.manual_seed(0)
    model, processor = create_model(ModelArguments(model_name=model_name), image_size=image_size)
    grader = load_grader(model, device="cpu", processor=processor)
    photos = [str(photo) for photo in photos]
    pixels = torch.randn(len(photos), 3, image_size, image_size)

    rates = _interleaved(_cases(grader, photos, pixels, image_size, batch_size), repeats)
    return {
        "model": model_name,
        "image_size": image_size,
        "num_images": len(photos),
        "batch_size": batch_size,
        "repeats": repeats,
        "tta_views": len(TTA_VIEWS),
        "method": f"dr_hf.inference.predict on {Path(photos[0]).suffix} files, workers 0",
        "unit": "images/s",
        "rates": {
            f"{name}, {'TTA' if tta else 'no TTA'}": summarize(values, 2)
            for (name, tta), values in rates.items()
        },
    }


def _interleaved(cases: dict, repeats: int) -> dict:
    """Images/s of each case (and TTA variant), interleaved round by round; round 0 warms up."""
    rates = {
        (name, tta): [] for name, (_, both) in cases.items() for tta in (False, True)[: 1 + both]
    }
    for repeat in range(repeats + 1):
        for name, tta in rates:
            start = time.perf_counter()
            count = cases[name][0](tta)
            if repeat:
                rates[name, tta].append(count / (time.perf_counter() - start))
    return rates


def _cases(grader, photos: list[str], pixels: torch.Tensor, image_size: int, batch_size: int):
    """The timed cases: name -> (function of `tta` returning the images done, TTA variant too?)."""

    def run_predict(tta: bool) -> int:
        result = predict(grader, photos, tta=tta, batch_size=batch_size, num_workers=0)
        if result.failures or len(result.outputs) != len(photos):
            raise RuntimeError(f"predict graded {len(result.outputs)} of {len(photos)}")
        return len(photos)

    def run_forward(tta: bool) -> int:
        for start in range(0, len(pixels), batch_size):
            grade_batch(grader, pixels[start : start + batch_size], tta)
        return len(pixels)

    def run_unchecked(tta: bool) -> int:
        predict(grader, photos, tta=tta, batch_size=batch_size, num_workers=0, quality=False)
        return len(photos)

    def run_quality(_: bool) -> int:
        for photo in photos:
            with Image.open(photo) as opened:
                assess_quality(opened.convert("RGB"), image_size)
        return len(photos)

    def run_heatmaps(_: bool) -> int:
        with tempfile.TemporaryDirectory() as folder:
            run_predict(False)
            return len(file_heatmaps(grader, photos, folder))

    return {  # name: (function, with and without TTA?)
        "predict on files (gradeability checked)": (run_predict, True),
        "predict on files, no gradeability check": (run_unchecked, False),
        "gradeability check alone (decode + verdict)": (run_quality, False),
        "predict + Grad-CAM figure per image": (run_heatmaps, False),
        "model forward on tensors": (run_forward, True),
    }
