"""`dr-hf train` end to end on the GPU: the Trainer `build_trainer` builds, reading a prepared
raw uint8 cache from local disk through DataLoader workers, augmenting on the CPU or on the
device, timed from inside the Trainer.

`DataWaitClock` is the Trainer callback that measures it: it synchronises the device at the end
of each optimizer step, so the time until the next step begins is the loop waiting for its next
batch with the GPU idle (the synchronisation costs the overlap of one step's launch with the
previous step's kernels, small at these batch sizes). The cache holds `num_images` rows made of
`distinct` rendered photographs under distinct ids, so every row has its own augmentation.
"""

import json
import shutil
import time
from pathlib import Path

import torch
from datasets import DatasetDict, concatenate_datasets, load_from_disk
from transformers import PrinterCallback, TrainerCallback

from benchmarks.report import summarize
from dr_hf.config.arguments import DataArguments, DRTrainingArguments, ModelArguments
from dr_hf.data.loading import load_dr_dataset
from dr_hf.data.prepare import PREPARE_INFO, prepare_dataset, read_prepare_info
from dr_hf.data.synthetic import make_synthetic
from dr_hf.training.run import build_trainer


class DataWaitClock(TrainerCallback):
    """Per optimizer step: its duration (end to end) and the part spent waiting for data."""

    def __init__(self, device: torch.device):
        self.device = device
        self.ends: list[float] = []
        self.waits: list[float] = []
        self._end: float | None = None

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        if self._end is not None:
            self.waits.append(time.perf_counter() - self._end)

    def on_step_end(self, args, state, control, **kwargs):
        self._end = self._now()
        self.ends.append(self._end)

    def steady(self, skip: int) -> dict:
        """Rate and data-wait share over the steps after the first `skip` (worker start-up,
        cuDNN autotuning, compilation)."""
        ends, waits = self.ends[skip:], self.waits[skip:]
        if len(ends) < 2:
            raise ValueError(f"{len(self.ends)} steps timed: run more than {skip + 1} steps.")
        elapsed = ends[-1] - ends[0]
        return {"seconds": elapsed, "steps": len(ends) - 1, "data_wait_share": sum(waits) / elapsed}


def raw_cache(folder: Path, num_images: int, distinct: int, image_size: int) -> Path:
    """A `dr-hf prepare --format raw` cache of `num_images` rows at `image_size` (reused while its
    record matches), from `distinct` synthetic photographs rendered at 1.25x that side."""
    spec = {"num_images": num_images, "distinct": distinct, "image_size": image_size}
    info = read_prepare_info(folder)
    if info is not None and info.get("benchmark") == spec:
        return folder
    side = round(1.25 * image_size)
    photos = folder.parent / f"{folder.name}-photos"
    make_synthetic(photos, num_images=distinct, image_size=side, seed=0, overwrite=True)
    data = load_dr_dataset(DataArguments(data_dir=str(photos), image_size=image_size))
    rows = concatenate_datasets([data["train"], data["validation"]])
    small = prepare_dataset(
        DatasetDict(train=rows),
        folder.parent / f"{folder.name}-small",
        side,
        format="raw",
        image_size=image_size,
    )
    base = load_from_disk(str(small))["train"]
    copies = []
    for copy in range(-(-num_images // len(base))):
        ids = [f"{image_id}-{copy}" for image_id in base["image_id"]]
        copies.append(base.remove_columns("image_id").add_column("image_id", ids))
    train = concatenate_datasets(copies).select(range(num_images))
    if folder.exists():
        shutil.rmtree(folder)
    DatasetDict(train=train, validation=base.select(range(min(8, len(base))))).save_to_disk(
        str(folder)
    )
    record = json.loads((small / PREPARE_INFO).read_text()) | {"benchmark": spec}
    (folder / PREPARE_INFO).write_text(json.dumps(record, indent=2) + "\n")
    for scratch in (small, photos):
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


def train_case(
    cache: Path,
    model_name: str,
    lora: bool,
    augment_on: str,
    settings: dict,
    output_dir: Path,
) -> dict:
    """Images/s and data-wait share of `dr-hf train` (bf16 on CUDA, evaluation and saving off)."""
    device_type = "cuda" if torch.cuda.is_available() and not settings["smoke"] else "cpu"
    args = DRTrainingArguments(
        output_dir=str(output_dir),
        max_steps=settings["steps"],
        per_device_train_batch_size=settings["batch_size"],
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        load_best_model_at_end=False,
        metric_for_best_model=None,
        report_to="none",
        disable_tqdm=True,
        bf16=device_type == "cuda",
        use_cpu=device_type == "cpu",
        dataloader_num_workers=settings["workers"],
        dataloader_pin_memory=device_type == "cuda",
        torch_compile=settings["compile"],
        class_weighting="none",
        seed=0,
    )
    data_args = DataArguments(
        data_dir=str(cache), image_size=settings["image_size"], augment_on=augment_on
    )
    clock = DataWaitClock(torch.device(device_type))
    model_args = ModelArguments(model_name=model_name, lora=lora, lora_r=8)
    run = build_trainer(data_args, model_args, args, [clock])
    run.trainer.remove_callback(PrinterCallback)
    if device_type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    run.trainer.train()
    steady = clock.steady(settings["skip"])
    rate = steady["steps"] * settings["batch_size"] / steady["seconds"]
    result = {
        "images_per_s": summarize([rate], 1),
        "data_wait_share": round(steady["data_wait_share"], 4),
        "batch_size": settings["batch_size"],
        "workers": settings["workers"],
        "timed_steps": steady["steps"],
        "peak_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1)
        if device_type == "cuda"
        else None,
        "channels_last": run.trainer.channels_last,
        "optimizer": type(
            getattr(run.trainer.optimizer, "optimizer", run.trainer.optimizer)
        ).__name__,
    }
    del run
    return result
