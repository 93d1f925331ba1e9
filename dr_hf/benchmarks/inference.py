"""Inference throughput with and without test-time augmentation (flip averaging).

Times the model's batched forward on in-memory tensors under `torch.inference_mode`: the plain
pass, and the average of the softmax over the image and its horizontal, vertical and double
flips, as TTA does. Decoding and preprocessing are measured by the data pipeline benchmark.
"""

import time

import torch

from dr_hf.benchmarks.report import summarize
from dr_hf.config import ModelArguments
from dr_hf.models import create_model

FLIPS = {"none": [()], "flips (4 views)": [(), (3,), (2,), (2, 3)]}


def _predict(model, pixels: torch.Tensor, batch_size: int, views: list[tuple]) -> torch.Tensor:
    outputs = []
    for start in range(0, len(pixels), batch_size):
        batch = pixels[start : start + batch_size]
        probs = sum(
            model(pixel_values=batch.flip(dims) if dims else batch).logits.softmax(-1)
            for dims in views
        )
        outputs.append(probs / len(views))
    return torch.cat(outputs)


def bench_inference(
    model_name: str = "resnet18",
    image_size: int = 224,
    num_images: int = 32,
    batch_size: int = 16,
    repeats: int = 3,
) -> dict:
    """Images/s without and with flip TTA, interleaved, after one warm-up pass of each."""
    torch.manual_seed(0)
    model = create_model(ModelArguments(model_name=model_name), image_size=image_size).eval()
    pixels = torch.randn(num_images, 3, image_size, image_size)
    rates = {name: [] for name in FLIPS}
    with torch.inference_mode():
        for repeat in range(repeats + 1):
            for name, views in FLIPS.items():
                start = time.perf_counter()
                probs = _predict(model, pixels, batch_size, views)
                elapsed = time.perf_counter() - start
                if probs.shape != (num_images, model.config.num_labels):
                    raise RuntimeError(f"unexpected prediction shape {tuple(probs.shape)}")
                if repeat:
                    rates[name].append(num_images / elapsed)
    return {
        "model": model_name,
        "image_size": image_size,
        "num_images": num_images,
        "batch_size": batch_size,
        "repeats": repeats,
        "method": "batched model forward on tensors, softmax averaged over flips",
        "unit": "images/s",
        "rates": {name: summarize(values, 2) for name, values in rates.items()},
    }
