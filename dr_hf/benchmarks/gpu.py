"""GPU throughput: training images/s and peak memory of the shipped graders, and inference.

resnet50 (full fine-tuning, bf16 and fp16 autocast) and RETFound ViT-L at 224 px (LoRA r=8 on
qkv, and full), batch 32, random weights, random tensors in GPU memory, so the figures are the
model's and not the disk's. Each case warms up, then times CUDA-synchronised steps; peak memory
is `torch.cuda.max_memory_allocated` for that case alone. `--smoke` runs the same code on the
CPU with tiny models, to check the script without a GPU.

    python -m dr_hf.benchmarks.gpu --output outputs/benchmark_gpu
    python -m dr_hf.benchmarks.gpu --smoke --output /tmp/bench_gpu
"""

import argparse
import contextlib
import gc
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dr_hf.benchmarks.report import machine_info, summarize
from dr_hf.config.arguments import ModelArguments
from dr_hf.grades import NUM_GRADES
from dr_hf.inference import grade_batch, load_grader
from dr_hf.models.graders import create_model, parameter_summary

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
# (label, model_name, lora, precision)
TRAIN_CASES = [
    ("resnet50 full bf16", "resnet50", False, "bf16"),
    ("resnet50 full fp16", "resnet50", False, "fp16"),
    ("RETFound ViT-L LoRA r=8 bf16", "retfound", True, "bf16"),
    ("RETFound ViT-L full bf16", "retfound", False, "bf16"),
]
INFER_CASES = [("resnet50 bf16", "resnet50", "bf16"), ("RETFound ViT-L bf16", "retfound", "bf16")]
SMOKE_NAMES = {"resnet50": "test_resnet", "retfound": "retfound_tiny"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, precision: str):
    dtype = DTYPES[precision]
    if dtype is None or (device.type == "cpu" and dtype == torch.float16):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _fresh(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def train_case(
    model_name, lora, precision, device, image_size, batch_size, warmup, steps, repeats
) -> dict:
    """Images/s of forward, loss, backward and AdamW step; repeats are blocks of `steps`."""
    _fresh(device)
    torch.manual_seed(0)
    args = ModelArguments(model_name=model_name, lora=lora, lora_r=8)
    model = create_model(args, image_size=image_size)[0].to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    scaler = torch.amp.GradScaler(
        device.type, enabled=precision == "fp16" and device.type == "cuda"
    )
    pixels = torch.randn(batch_size, 3, image_size, image_size, device=device)
    labels = torch.randint(0, NUM_GRADES, (batch_size,), device=device)

    def step():
        with _autocast(device, precision):
            loss = F.cross_entropy(model(pixel_values=pixels).logits.float(), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    rates = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        rates.append(steps * batch_size / (time.perf_counter() - start))
    summary = parameter_summary(model)
    return {
        "images_per_s": summarize(rates, 1),
        "peak_memory_mib": _peak_mib(device),
        "trainable": summary["trainable"],
        "total": summary["total"],
    }


def infer_case(model_name, precision, device, image_size, batch_size, warmup, steps, repeats):
    """Images/s of `dr_hf.inference.grade_batch` (predict's forward), without and with TTA."""
    _fresh(device)
    torch.manual_seed(0)
    model = create_model(ModelArguments(model_name=model_name), image_size=image_size)[0]
    grader = load_grader(model, device=device)
    pixels = torch.randn(batch_size, 3, image_size, image_size, device=device)
    out = {}
    with _autocast(device, precision):
        for tta in (False, True):
            for _ in range(warmup):
                grade_batch(grader, pixels, tta)
            rates = []
            for _ in range(repeats):
                _sync(device)
                start = time.perf_counter()
                for _ in range(steps):
                    grade_batch(grader, pixels, tta)
                _sync(device)
                rates.append(steps * batch_size / (time.perf_counter() - start))
            out["TTA" if tta else "no TTA"] = summarize(rates, 1)
    return {"images_per_s": out, "peak_memory_mib": _peak_mib(device)}


def to_markdown(results: dict) -> str:
    s = results["settings"]
    lines = [
        f"Device: {results['device_name']}; batch {s['batch_size']}, {s['image_size']} px, "
        f"{s['repeats']} blocks of {s['steps']} steps after {s['warmup']} warm-up steps.",
        "",
        "| training | trainable params | images/s (median, min-max) | peak memory (MiB) |",
        "|---|---|---|---|",
    ]
    for label, row in results["train"].items():
        r = row["images_per_s"]
        lines.append(
            f"| {label} | {row['trainable']:,} | {r['median']:g} ({r['min']:g}-{r['max']:g}) "
            f"| {row['peak_memory_mib'] if row['peak_memory_mib'] is not None else '-'} |"
        )
    lines += ["", "| inference | TTA | images/s (median, min-max) |", "|---|---|---|"]
    for label, row in results["inference"].items():
        for tta, r in row["images_per_s"].items():
            lines.append(f"| {label} | {tta} | {r['median']:g} ({r['min']:g}-{r['max']:g}) |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="GPU training and inference throughput.")
    parser.add_argument("--output", default="outputs/benchmark_gpu")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny models, a few steps.")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.smoke:
        device = torch.device("cpu")
        args.batch_size, args.image_size, args.warmup, args.steps, args.repeats = 2, 32, 1, 1, 1
    elif not torch.cuda.is_available():
        raise SystemExit("No CUDA GPU found: run with --smoke to check the script on the CPU.")
    else:
        device = torch.device("cuda")
        torch.backends.cudnn.benchmark = True

    def name(model_name: str) -> str:
        return SMOKE_NAMES[model_name] if args.smoke else model_name

    timing = (args.image_size, args.batch_size, args.warmup, args.steps, args.repeats)
    results = {
        "machine": machine_info(),
        "device_name": torch.cuda.get_device_name(0)
        if device.type == "cuda"
        else f"CPU (smoke: {SMOKE_NAMES})",
        "settings": {k: getattr(args, k) for k in ("batch_size", "image_size", "warmup", "steps")}
        | {"repeats": args.repeats, "smoke": args.smoke},
        "train": {},
        "inference": {},
    }
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        # Written after every case, so a run cut short keeps the cases it finished.
        (output / "benchmark_gpu.json").write_text(json.dumps(results, indent=2) + "\n")
        (output / "benchmark_gpu.md").write_text(to_markdown(results))

    for label, model_name, lora, precision in TRAIN_CASES:
        print(f"training: {label}", flush=True)
        results["train"][label] = train_case(name(model_name), lora, precision, device, *timing)
        save()
    for label, model_name, precision in INFER_CASES:
        print(f"inference: {label}", flush=True)
        results["inference"][label] = infer_case(name(model_name), precision, device, *timing)
        save()
    print(to_markdown(results))
    return results


if __name__ == "__main__":
    main()
