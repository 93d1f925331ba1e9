"""GPU throughput of the shipped graders, resnet50 (full) and RETFound ViT-L (LoRA r=8 on qkv,
and full) at 224 px in bf16, random weights:

1. `model`: the model alone on random tensors in GPU memory (`gpu_model`), eager at batch 32 and
   at the largest batch that fits (a doubling sweep), compiled at the largest;
2. `train`: `dr-hf train` itself (`gpu_train`), the Trainer reading a prepared raw uint8 cache
   through DataLoader workers, augmentation on the CPU against augmentation on the GPU;
3. `inference`: `dr-hf predict`'s forward, without and with TTA.

Each case reports images/s and peak memory; model and train cases the MFU (measured FLOPs per
image against the card's dense bf16 peak, `--peak-tflops` to override the table), train cases
the share of step time spent waiting for data. The JSON and Markdown are rewritten after every
case, so a run cut short keeps what it measured. `--smoke` runs every case on the CPU with tiny
models, a few steps each (compilation with the aot_eager backend), to check the script.

    python scripts/benchmark.py gpu --output outputs/benchmark_gpu
    python scripts/benchmark.py gpu --smoke --output /tmp/bench_gpu
"""

import argparse
import json
import os
import time
from functools import partial
from pathlib import Path

import torch

from benchmarks.gpu_model import fresh, model_case, peak_mib, peak_tflops, sync
from benchmarks.gpu_report import to_markdown
from benchmarks.gpu_train import raw_cache, train_case
from benchmarks.report import machine_info, summarize
from dr_hf.config.arguments import ModelArguments
from dr_hf.inference import grade_batch, load_grader
from dr_hf.models.graders import create_model

# key: (label, model_name, lora)
MODEL_CASES = {
    "resnet50": ("resnet50 full", "resnet50", False),
    "vit-lora": ("RETFound ViT-L LoRA r=8", "retfound", True),
    "vit-full": ("RETFound ViT-L full", "retfound", False),
}
INFER_CASES = [("resnet50 bf16", "resnet50"), ("RETFound ViT-L bf16", "retfound")]
SMOKE_NAMES = {"resnet50": "test_resnet", "retfound": "retfound_tiny"}
SECTIONS = ("model", "train", "inference")


def infer_case(model_name, device, image_size, batch_size, warmup, steps, repeats):
    """Images/s of `dr_hf.inference.grade_batch` (predict's forward) in bf16, without
    and with TTA."""
    fresh(device)
    torch.manual_seed(0)
    model, processor = create_model(ModelArguments(model_name=model_name), image_size=image_size)
    grader = load_grader(model, device=device, processor=processor)
    pixels = torch.randn(batch_size, 3, image_size, image_size, device=device)
    out = {}
    with torch.autocast(device.type, dtype=torch.bfloat16):
        for tta in (False, True):
            for _ in range(warmup):
                grade_batch(grader, pixels, tta)
            rates = []
            for _ in range(repeats):
                sync(device)
                start = time.perf_counter()
                for _ in range(steps):
                    grade_batch(grader, pixels, tta)
                sync(device)
                rates.append(steps * batch_size / (time.perf_counter() - start))
            out["TTA" if tta else "no TTA"] = summarize(rates, 1)
    return {"images_per_s": out, "peak_memory_mib": peak_mib(device)}


def _settings(args, device: torch.device) -> dict:
    """Every case's settings, from the flags (or the tiny ones of --smoke)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    timing = (args.warmup, args.steps, args.repeats)
    model = {
        "batch_size": args.batch_size,
        "max_batch": args.max_batch,
        "timing": timing,
        "compile_backend": None if args.no_compile else ("aot_eager" if args.smoke else "inductor"),
        "peak_tflops": peak_tflops(_device_name(device), args.peak_tflops),
    }
    train = {
        "image_size": args.image_size,
        "steps": args.train_steps,
        "skip": args.train_skip,
        "workers": args.workers if args.workers is not None else max(1, (cores or 2) - 1),
        "compile": args.train_compile,
        "smoke": args.smoke,
        "num_images": args.train_images,
    }
    return {"model": model, "train": train, "timing": timing}


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="GPU training and inference throughput.")
    add = parser.add_argument
    add("--output", default="outputs/benchmark_gpu")
    add("--smoke", action="store_true", help="CPU, tiny models, a few steps: checks the script.")
    add("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    add("--models", nargs="+", choices=list(MODEL_CASES), default=list(MODEL_CASES))
    add("--image-size", type=int, default=224)
    add("--batch-size", type=int, default=32, help="The model-only batch beside the largest.")
    add("--max-batch", type=int, default=256, help="Where the largest-batch sweep stops.")
    add("--warmup", type=int, default=5)
    add("--steps", type=int, default=10)
    add("--repeats", type=int, default=3)
    add("--no-compile", action="store_true", help="Skip the compiled model-only runs.")
    add("--peak-tflops", type=float, default=None, help="The card's dense bf16 peak (MFU).")
    add("--train-images", type=int, default=4096, help="Rows of the synthetic raw cache.")
    add("--train-batch", type=int, default=256, help="dr-hf train batch (capped at the largest).")
    add("--train-steps", type=int, default=30)
    add("--train-skip", type=int, default=8, help="Steps not timed (start-up).")
    add("--train-compile", action="store_true", help="dr-hf train with --torch_compile.")
    add("--workers", type=int, default=None, help="DataLoader workers (default: cores - 1).")
    add("--cache-dir", default=None, help="Where the raw cache goes (default: under --output).")
    return parser


def _smoke(args) -> None:
    args.batch_size, args.max_batch, args.image_size = 2, 8, 32
    args.warmup, args.steps, args.repeats = 1, 1, 1
    args.train_images, args.train_batch, args.train_steps, args.train_skip = 48, 8, 4, 1
    args.workers = 1 if args.workers is None else args.workers


class Recorder:
    """Runs each case, keeps its result (or its error: the other cases still run) and its
    duration, and rewrites the JSON and Markdown after every case."""

    def __init__(self, results: dict, output: Path):
        self.results, self.output = results, output

    def timed(self, label: str, section: str, run, extra: dict | None = None) -> None:
        print(f"{section}: {label}", flush=True)
        start = time.perf_counter()
        try:
            self.results[section][label] = run() | (extra or {})
        except Exception as err:
            self.results[section][label] = {"error": f"{type(err).__name__}: {err}"[:500]}
        self.results["seconds"][f"{section}: {label}"] = round(time.perf_counter() - start, 1)
        (self.output / "benchmark_gpu.json").write_text(json.dumps(self.results, indent=2) + "\n")
        (self.output / "benchmark_gpu.md").write_text(to_markdown(self.results))


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.smoke:
        _smoke(args)
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        raise SystemExit("No CUDA GPU found: run with --smoke to check the script on the CPU.")
    else:
        device = torch.device("cuda")
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    settings = _settings(args, device)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    results = {
        "machine": machine_info(),
        "device_name": _device_name(device),
        "peak_tflops": settings["model"]["peak_tflops"],
        "settings": vars(args) | {"workers": settings["train"]["workers"]},
        "model": {},
        "train": {},
        "inference": {},
        "seconds": {},
    }

    recorder = Recorder(results, output)
    timed = recorder.timed

    def name(model_name: str) -> str:
        return SMOKE_NAMES[model_name] if args.smoke else model_name

    cases = [MODEL_CASES[key] for key in args.models]
    if "model" in args.sections:
        for label, model_name, lora in cases:
            run = partial(model_case, name(model_name), lora, device, args.image_size)
            timed(label, "model", partial(run, settings["model"]))
    if "train" in args.sections:
        cache_dir = Path(args.cache_dir) if args.cache_dir else output / "cache"
        distinct = 16 if args.smoke else 128
        cache = raw_cache(cache_dir / "raw", args.train_images, distinct, args.image_size)
        for label, model_name, lora in cases:
            largest = results["model"].get(label, {}).get("largest_batch", args.train_batch)
            case = settings["train"] | {"batch_size": min(args.train_batch, largest)}
            flops = _flops(results["model"].get(label), settings["model"]["peak_tflops"])
            for augment_on in ("cpu", "gpu"):
                run = partial(train_case, cache, name(model_name), lora, augment_on, case)
                timed(
                    f"{label}, augmentation on {augment_on}",
                    "train",
                    partial(run, output / "train_run"),
                    flops,
                )
    if "inference" in args.sections:
        for label, model_name in INFER_CASES:
            run = partial(infer_case, name(model_name), device, args.image_size, args.batch_size)
            timed(label, "inference", partial(run, *settings["timing"]))
    print(to_markdown(results))
    return results


def _flops(model_result: dict | None, peak: float | None):
    """A train case's FLOPs per image (from its model case), for its MFU in the report."""
    flops = (model_result or {}).get("flops_per_image")
    return {"flops_per_image": flops, "peak_tflops": peak}


if __name__ == "__main__":
    main()
