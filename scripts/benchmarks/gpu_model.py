"""The model alone on the GPU: training images/s of a grader on random tensors already on the
device, eager or compiled, with its peak memory, its measured FLOPs and the share of the card's
bf16 peak they reach (MFU).

A step is what `dr-hf train` runs: bf16 autocast over float32 weights, cross-entropy, backward,
fused AdamW, channels-last for CNNs. FLOPs are counted once per case by
`torch.utils.flop_counter.FlopCounterMode` over one eager forward and backward (the optimizer's
few element-wise FLOPs are left out).
"""

import contextlib
import gc
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.report import summarize
from dr_hf.config.arguments import ModelArguments
from dr_hf.grades import NUM_GRADES
from dr_hf.models.graders import create_model, parameter_summary
from dr_hf.models.parts import timm_backbone

# Dense bf16 tensor-core TFLOPS by device name (first match wins); --peak-tflops overrides.
PEAK_BF16_TFLOPS = (
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10", 125.0),
)


def peak_tflops(device_name: str, override: float | None = None) -> float | None:
    """The card's dense bf16 peak: `override`, else the table's, else None (MFU not given)."""
    if override is not None:
        return override
    return next((peak for name, peak in PEAK_BF16_TFLOPS if name in device_name), None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fresh(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err)


def build(model_name: str, lora: bool, device: torch.device, image_size: int):
    """The grader as `dr-hf train` builds it, on `device`, channels-last if a CNN on CUDA."""
    torch.manual_seed(0)
    model = create_model(ModelArguments(model_name=model_name, lora=lora, lora_r=8), image_size)[0]
    model = model.to(device).train()
    cnn = not hasattr(timm_backbone(model), "patch_embed")
    if cnn and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model, cnn and device.type == "cuda"


class Stepper:
    """One training step of `model` on a fixed random batch; `compile` wraps the model."""

    def __init__(self, model, device, batch_size, image_size, channels_last, compile_backend=None):
        self.device = device
        self.model = model
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=1e-4, fused=device.type == "cuda")
        pixels = torch.randn(batch_size, 3, image_size, image_size, device=device)
        self.pixels = (
            pixels.contiguous(memory_format=torch.channels_last) if channels_last else pixels
        )
        self.labels = torch.randint(0, NUM_GRADES, (batch_size,), device=device)
        self.forward = torch.compile(model, backend=compile_backend) if compile_backend else model

    def __call__(self) -> None:
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            logits = self.forward(pixel_values=self.pixels).logits
        F.cross_entropy(logits.float(), self.labels).backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def flops_per_image(model, device, image_size: int, channels_last: bool, batch_size: int = 2):
    """Forward + backward FLOPs of one image, counted on an eager step."""
    stepper = Stepper(model, device, batch_size, image_size, channels_last)
    counter = FlopCounterMode(display=False)
    with counter, torch.autocast(device.type, dtype=torch.bfloat16):
        logits = model(pixel_values=stepper.pixels).logits
        F.cross_entropy(logits.float(), stepper.labels).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch_size


def largest_batch(model, device, image_size, channels_last, start: int, limit: int) -> int:
    """The largest batch (doubling from `start`, at most `limit`) whose eager step fits."""
    best, batch = start, start * 2
    while batch <= limit:
        fresh(device)
        try:
            stepper = Stepper(model, device, batch, image_size, channels_last)
            stepper()
            sync(device)
        except RuntimeError as err:
            if not is_oom(err):
                raise
            break
        finally:
            stepper = None  # noqa: F841  (frees the batch and optimizer state before the next)
            model.zero_grad(set_to_none=True)
        best, batch = batch, batch * 2
    fresh(device)
    return best


def timed_case(model, device, batch_size, image_size, channels_last, timing, compile_backend=None):
    """Images/s (`repeats` blocks of `steps` after `warmup`), peak memory, warm-up seconds."""
    warmup, steps, repeats = timing
    fresh(device)
    stepper = Stepper(model, device, batch_size, image_size, channels_last, compile_backend)
    start = time.perf_counter()
    for _ in range(warmup):
        stepper()
    sync(device)
    warm = time.perf_counter() - start
    rates = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            stepper()
        sync(device)
        rates.append(steps * batch_size / (time.perf_counter() - start))
    result = {
        "batch_size": batch_size,
        "images_per_s": summarize(rates, 1),
        "peak_memory_mib": peak_mib(device),
        "warmup_s": round(warm, 1),
    }
    model.zero_grad(set_to_none=True)
    del stepper
    if compile_backend:
        torch._dynamo.reset()
    return result


def model_case(model_name, lora, device, image_size, settings: dict) -> dict:
    """Eager at batch `batch_size` and at the largest batch that fits, and compiled at the
    largest (`compile_backend` None: not compiled); each with MFU when `peak` is known."""
    model, channels_last = build(model_name, lora, device, image_size)
    flops = flops_per_image(model, device, image_size, channels_last)
    batch, timing = settings["batch_size"], settings["timing"]
    top = largest_batch(model, device, image_size, channels_last, batch, settings["max_batch"])
    runs = {"eager": {}, "compiled": {}}
    for size in dict.fromkeys((batch, top)):
        runs["eager"][str(size)] = timed_case(
            model, device, size, image_size, channels_last, timing
        )
    if settings["compile_backend"]:
        backend = settings["compile_backend"]
        with contextlib.suppress(torch.OutOfMemoryError):
            runs["compiled"][str(top)] = timed_case(
                model, device, top, image_size, channels_last, timing, backend
            )
    peak = settings["peak_tflops"]
    for mode in runs.values():
        for run in mode.values():
            rate = run["images_per_s"]["median"]
            run["mfu"] = round(rate * flops / (peak * 1e12), 6) if peak else None
    summary = parameter_summary(model)
    del model
    fresh(device)
    return {
        "flops_per_image": flops,
        "largest_batch": top,
        "channels_last": channels_last,
        "trainable": summary["trainable"],
        "runs": runs,
    }
