"""Forward throughput of a grader in PyTorch against its ONNX export, fp32 and int8.

Each model is built from random weights, saved as training saves it, exported by `dr-hf export`
(the parity check included) and quantised; the three graders then grade the same normalised
batches through `grade_batch`, interleaved round by round after a warm-up round. File sizes are
the saved `model.safetensors` and each `model.onnx`. Peak memory is not measured here.
"""

import tempfile
import time
from pathlib import Path

import torch

from dr_hf.benchmarks.report import summarize
from dr_hf.config.arguments import ModelArguments
from dr_hf.export import export_onnx
from dr_hf.inference import grade_batch, load_grader
from dr_hf.models.graders import create_model


def _rate(grader, pixels: torch.Tensor, batch_size: int, min_seconds: float) -> float:
    """Images/s of `grade_batch` over `pixels` in batches, repeated for at least `min_seconds`."""
    done, start = 0, time.perf_counter()
    while True:
        for begin in range(0, len(pixels), batch_size):
            grade_batch(grader, pixels[begin : begin + batch_size])
        done += len(pixels)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return done / elapsed


def bench_onnx(
    model_names: tuple[str, ...] = ("resnet50", "retfound_tiny"),
    image_size: int = 224,
    batch_sizes: tuple[int, ...] = (1, 16),
    repeats: int = 3,
    min_seconds: float = 1.0,
) -> dict:
    """Images/s of PyTorch, ONNX Runtime fp32 and ONNX Runtime int8 for each model and batch
    size (median, min, max over `repeats` rounds), and the models' file sizes in MB."""
    torch.manual_seed(0)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in model_names:
            model, processor = create_model(ModelArguments(model_name=name), image_size=image_size)
            folder = Path(tmp) / name
            processor.name_in(model.config)
            model.save_pretrained(folder / "torch")
            processor.save_pretrained(str(folder / "torch"))
            export_onnx(folder / "torch", folder / "fp32")
            export_onnx(folder / "torch", folder / "int8", quantize="int8")
            graders = {
                "pytorch": load_grader(folder / "torch", device="cpu"),
                "onnxruntime_fp32": load_grader(folder / "fp32"),
                "onnxruntime_int8": load_grader(folder / "int8"),
            }
            pixels = torch.randn(max(batch_sizes), 3, image_size, image_size)
            rates = {(g, b): [] for g in graders for b in batch_sizes}
            for round_ in range(repeats + 1):  # round 0 warms up
                for (runtime, batch_size), values in rates.items():
                    rate = _rate(graders[runtime], pixels, batch_size, min_seconds)
                    if round_:
                        values.append(rate)
            results.append({
                "model": name,
                "image_size": image_size,
                "images_per_s": {
                    f"{runtime}, batch {b}": summarize(values, 1)
                    for (runtime, b), values in rates.items()
                },
                "file_mb": {
                    "pytorch": round((folder / "torch" / "model.safetensors").stat().st_size / 1e6, 1),
                    "onnxruntime_fp32": round((folder / "fp32" / "model.onnx").stat().st_size / 1e6, 1),
                    "onnxruntime_int8": round((folder / "int8" / "model.onnx").stat().st_size / 1e6, 1),
                },
            })  # fmt: skip
    return {
        "method": "grade_batch on random normalised batches, CPU, interleaved; ONNX Runtime "
        "sessions with their default threads, PyTorch with torch's",
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "results": results,
    }


__all__ = ["bench_onnx"]
