"""Trainer overhead: steps/s of dr_hf's `DRTrainer` against a minimal hand-written PyTorch loop.

Like for like: same model and initial weights, same in-memory tensors, batch and number of steps,
one device for both (the model and every batch on it; CPU unless asked otherwise), the same
optimizer implementation (`torch.optim.AdamW(fused=True)`: the loop builds it, the Trainer gets
`optim="adamw_torch_fused"`) and the same gradient clipping (`clip_grad_norm_` at 1.0, dr_hf's
default, in both). The Trainer keeps what the loop lacks: the cosine schedule with warm-up, the
weight-decay exemption of biases and norms, and the training-accuracy count; evaluation, saving,
logging and progress bars are off. The Trainer is built by `build_trainer`, as `dr-hf train`
builds it, then given the same in-memory tensors as the loop (so image decoding, which both would
share, is not timed). Nothing is subtracted: the Trainer's time
is its whole `train()` call, the loop's includes building its optimizer and DataLoader. The steady
rate (from the end of the first step to the end of the last) is reported beside it, to separate
the Trainer's one-off start-up from its cost per step.
"""

import copy
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from datasets import DatasetDict
from torch.utils.data import DataLoader, Dataset
from transformers import PrinterCallback, TrainerCallback, default_data_collator

from benchmarks.report import summarize
from dr_hf.config.arguments import DataArguments, DRTrainingArguments, ModelArguments
from dr_hf.data.sources import build_dataset
from dr_hf.grades import NUM_GRADES
from dr_hf.models.graders import create_model
from dr_hf.training.run import build_trainer

LEARNING_RATE = 1e-4
WEIGHT_DECAY = 0.05
MAX_GRAD_NORM = 1.0
DEVICES = ("cpu", "cuda")


def _now(device: str) -> float:
    """Wall time once the device has finished the work queued so far."""
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def _describe(optimizer) -> str:
    """Class and implementation of an optimizer, unwrapped from Accelerate's wrapper."""
    optimizer = getattr(optimizer, "optimizer", optimizer)
    fused = "fused" if optimizer.defaults.get("fused") else "for-each or for-loop"
    return f"{type(optimizer).__name__} ({fused})"


class StepClock(TrainerCallback):
    """Time at the end of every optimizer step."""

    def __init__(self, device: str):
        self.device = device
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(_now(self.device))


def _rates(start: float, end: float, ends: list[float]) -> tuple[float, float]:
    """(steps/s from `start` to `end`, steps/s from the first step's end to the last's)."""
    steady = (len(ends) - 1) / (ends[-1] - ends[0]) if len(ends) > 1 else float("nan")
    return len(ends) / (end - start), steady


class TensorImages(Dataset):
    """Random images and grades held in memory, as the transformed dataset would yield them."""

    def __init__(self, num: int, image_size: int, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.pixels = torch.randn(num, 3, image_size, image_size, generator=generator)
        self.labels = torch.randint(0, NUM_GRADES, (num,), generator=generator).tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"pixel_values": self.pixels[index], "labels": self.labels[index]}


def manual_steps_per_second(
    model, data: Dataset, batch_size: int, steps: int, device: str = "cpu"
) -> tuple[float, float, str]:
    """The loop a user writes: forward, cross-entropy, backward, clipping, fused AdamW step.
    Returns both rates and the optimizer it used."""
    model.to(device).train()
    start = _now(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY, fused=True
    )
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, collate_fn=default_data_collator)
    ends: list[float] = []
    while len(ends) < steps:
        for batch in loader:
            pixels = batch["pixel_values"].to(device, non_blocking=True)
            labels = batch["labels"].to(device, non_blocking=True)
            loss = F.cross_entropy(model(pixel_values=pixels).logits, labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            ends.append(_now(device))
            if len(ends) == steps:
                break
    return *_rates(start, ends[-1], ends), _describe(optimizer)


def _placeholder_images(image_size: int) -> DatasetDict:
    """Two tiny image splits for `build_trainer`; the benchmark trains on tensors instead."""
    images = [np.zeros((image_size, image_size, 3), np.uint8)] * 5
    split = build_dataset(images, list(range(NUM_GRADES)), [str(i) for i in range(NUM_GRADES)])
    return DatasetDict(train=split, validation=split)


def trainer_steps_per_second(
    model_name: str,
    initial: dict,
    data: Dataset,
    batch_size: int,
    steps: int,
    output_dir: str,
    device: str = "cpu",
) -> tuple[float, float, str]:
    """dr_hf's DRTrainer, built by `build_trainer` from `initial` weights, for `steps` optimizer
    steps on `data`, logging, saving and evaluation off. Returns both rates and the optimizer."""
    args = DRTrainingArguments(
        output_dir=output_dir,
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=LEARNING_RATE,
        weight_decay=WEIGHT_DECAY,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        load_best_model_at_end=False,
        metric_for_best_model=None,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        optim="adamw_torch_fused",
        max_grad_norm=MAX_GRAD_NORM,
        use_cpu=device == "cpu",
        class_weighting="none",
        seed=0,
    )
    if args.device.type != device or args.n_gpu > 1:
        raise RuntimeError(
            f"the Trainer chose {args.device} with {args.n_gpu} GPU(s) for device={device!r}: "
            "on a machine with several GPUs set CUDA_VISIBLE_DEVICES to one of them."
        )
    clock = StepClock(device)
    data_args = DataArguments(image_size=data[0]["pixel_values"].shape[-1], augment=False)
    run = build_trainer(
        data_args,
        ModelArguments(model_name=model_name),
        args,
        [clock],
        dataset=_placeholder_images(data_args.image_size),
    )
    trainer = run.trainer
    trainer.model.load_state_dict(initial)
    trainer.train_dataset = data
    trainer.remove_callback(PrinterCallback)  # with disable_tqdm it prints the final metrics
    start = _now(device)
    trainer.train()
    end = _now(device)
    return *_rates(start, end, clock.ends), _describe(trainer.optimizer)


def bench_trainer(
    model_name: str = "resnet18",
    image_size: int = 64,
    batch_size: int = 16,
    steps: int = 40,
    repeats: int = 5,
    device: str = "cpu",
) -> dict:
    """Steps/s of both loops on `device`, interleaved repeat by repeat after one warm-up run
    of each."""
    if device not in DEVICES:
        raise ValueError(f"device={device!r}: choose one of {', '.join(DEVICES)}.")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch sees no CUDA GPU: use device='cpu'.")
    torch.manual_seed(0)
    model = create_model(ModelArguments(model_name=model_name), image_size=image_size)[0]
    initial = copy.deepcopy(model.state_dict())
    data = TensorImages(batch_size * steps, image_size)
    rates = {"manual": [], "trainer": [], "manual_steady": [], "trainer_steady": []}
    optimizers: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="dr_hf_bench_trainer_") as output_dir:
        for repeat in range(repeats + 1):  # the first round warms up and is not counted
            model.load_state_dict(initial)
            *manual, optimizers["manual"] = manual_steps_per_second(
                model, data, batch_size, steps, device
            )
            *trainer, optimizers["trainer"] = trainer_steps_per_second(
                model_name, initial, data, batch_size, steps, output_dir, device
            )
            if repeat:
                for key, (total, steady) in (("manual", manual), ("trainer", trainer)):
                    rates[key].append(total)
                    rates[f"{key}_steady"].append(steady)
    placed = {parameter.device.type for parameter in model.parameters()}
    if placed != {device}:
        raise RuntimeError(f"the model ended on {placed}, not on {device}.")

    def ratio(key: str) -> dict:
        return summarize([t / m for m, t in zip(rates[f"manual{key}"], rates[f"trainer{key}"])])

    return {
        "model": model_name,
        "image_size": image_size,
        "batch_size": batch_size,
        "steps": steps,
        "repeats": repeats,
        "device": device,
        "optimizer": optimizers,
        "max_grad_norm": MAX_GRAD_NORM,
        "unit": "steps/s",
        **{key: summarize(values) for key, values in rates.items()},
        "ratio": ratio(""),
        "ratio_steady": ratio("_steady"),
    }
