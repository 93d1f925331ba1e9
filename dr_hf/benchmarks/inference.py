"""Inference throughput of `dr_hf.evaluation.predict.predict`, with and without test-time augmentation.

`predict` runs end to end on photographs (decode, field-of-view crop, resize, batched forward),
as `dr-hf predict` does. The model's batched forward alone, on in-memory tensors, is timed beside
it, to show how much of the cost is the model and how much the photographs.
"""

import time
from pathlib import Path

import torch

from dr_hf.benchmarks.report import summarize
from dr_hf.config.arguments import ModelArguments
from dr_hf.evaluation.predict import TTA_VIEWS, grade_batch, load_grader, predict
from dr_hf.models.graders import create_model


def bench_inference(
    photos: list[str | Path],
    model_name: str = "resnet18",
    image_size: int = 224,
    batch_size: int = 16,
    repeats: int = 3,
) -> dict:
    """Images/s of `predict` on `photos` and of the forward on tensors, each with and without
    TTA, interleaved, after one warm-up round."""
    torch.manual_seed(0)
    model = create_model(ModelArguments(model_name=model_name), image_size=image_size)
    grader = load_grader(model, device="cpu")
    photos = [str(photo) for photo in photos]
    pixels = torch.randn(len(photos), 3, image_size, image_size)

    def run_predict(tta: bool) -> int:
        result = predict(grader, photos, tta=tta, batch_size=batch_size, num_workers=0)
        if result.failures or len(result.probabilities) != len(photos):
            raise RuntimeError(f"predict graded {len(result.probabilities)} of {len(photos)}")
        return len(photos)

    def run_forward(tta: bool) -> int:
        for start in range(0, len(pixels), batch_size):
            grade_batch(grader, pixels[start : start + batch_size], tta)
        return len(pixels)

    cases = {
        "predict on files": run_predict,
        "model forward on tensors": run_forward,
    }
    rates = {(name, tta): [] for name in cases for tta in (False, True)}
    for repeat in range(repeats + 1):
        for name, tta in rates:
            start = time.perf_counter()
            count = cases[name](tta)
            if repeat:
                rates[name, tta].append(count / (time.perf_counter() - start))
    return {
        "model": model_name,
        "image_size": image_size,
        "num_images": len(photos),
        "batch_size": batch_size,
        "repeats": repeats,
        "tta_views": len(TTA_VIEWS),
        "method": f"dr_hf.evaluation.predict.predict on {Path(photos[0]).suffix} files, workers 0",
        "unit": "images/s",
        "rates": {
            f"{name}, {'TTA' if tta else 'no TTA'}": summarize(values, 2)
            for (name, tta), values in rates.items()
        },
    }
