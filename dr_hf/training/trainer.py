"""`DRTrainer`, the HF Trainer with the training accuracy and epoch time in its logs, and the
callbacks a dr_hf run adds to the training loop."""

import math
import shutil
import time
from pathlib import Path

import torch
from peft import PeftModel
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from dr_hf.grading_rule import DEFAULT_CUT_POINTS
from dr_hf.models.base_record import write_base_record
from dr_hf.models.grading_pipeline import PIPELINE_FILE
from dr_hf.models.parts import timm_backbone


class AugmentationEpochCallback(TrainerCallback):
    """Tells the training transform which epoch starts, so augmentation is a function of
    (seed, epoch, image id): a resumed run, any worker count and any rank see the same images."""

    def __init__(self, train_transform):
        self.train_transform = train_transform

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.train_transform.set_epoch(math.floor(state.epoch + 1e-6))


class EpochTimer(TrainerCallback):
    """Wall time of each epoch's training pass (evaluation and saving, which follow, excluded)."""

    def __init__(self):
        self.start: float | None = None
        self.last: float | None = None

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.start is not None:
            self.last = time.perf_counter() - self.start

    def pop(self) -> float | None:
        last, self.last = self.last, None
        return last


class BaseRecordCallback(TrainerCallback):
    """Writes the base record into each `checkpoint-N` the Trainer saves of a LoRA model (main
    process only), so that a checkpoint loads on its own as `best/` does."""

    def on_save(self, args, state, control, model=None, **kwargs):
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if isinstance(model, PeftModel) and args.should_save and folder.is_dir():
            write_base_record(model, folder)


def wants_channels_last(model, args) -> bool:
    """`args.channels_last`, or by default: on for CNNs on CUDA (cuDNN's tensor-core convolutions
    run channels-last; a ViT's only convolution is its patch embedding, where it buys nothing)."""
    if getattr(args, "channels_last", None) is not None:
        return bool(args.channels_last)
    return args.device.type == "cuda" and not hasattr(timm_backbone(model), "patch_embed")


def training_grades(logits: torch.Tensor) -> torch.Tensor:
    """The grades the training accuracy counts: the argmax of class logits, or a regression
    score [N, 1] cut at the default cut points 0.5/1.5/2.5/3.5."""
    if logits.shape[-1] != 1:
        return logits.argmax(-1)
    cut_points = torch.tensor(DEFAULT_CUT_POINTS, device=logits.device, dtype=logits.dtype)
    return torch.bucketize(logits[:, 0], cut_points, right=True)


class DRTrainer(Trainer):
    """The HF Trainer, adding the training accuracy and the epoch's time to each training-loss log,
    so they reach W&B and the checkpointed log history (`training_history.json` is built from it).

    Batches pass through `_prepare_inputs` on the device: a training batch that carries
    `augment_params` (`augment_on="gpu"`) is augmented there by `device_augmentation`, and with
    `channels_last` (`wants_channels_last`) model and batches are laid out channels-last.

    Correct predictions are counted in `compute_loss`, the one place that sees the training
    logits (evaluation runs under no_grad and is not counted); the counts stay on the logits'
    device until a log sums them over all ranks with `accelerator.reduce`.
    """

    def __init__(self, *args, device_augmentation=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.device_augmentation = device_augmentation
        self.channels_last = wants_channels_last(self.model, self.args)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self._train_counts: torch.Tensor | None = None  # (correct, seen) since the last log
        self.epoch_timer = EpochTimer()
        self.add_callback(self.epoch_timer)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """Save as the Trainer does, with the grading pipeline's code that a full model's
        config.json names (`custom_pipelines`), so that every checkpoint and `best/` loads in
        `pipeline()` (an adapter folder has no config.json, and loads its base first)."""
        super()._save(output_dir, state_dict)
        folder = Path(output_dir or self.args.output_dir)
        if self.args.should_save and (folder / "config.json").is_file():
            shutil.copy(PIPELINE_FILE, folder)

    def _prepare_inputs(self, inputs):
        inputs = super()._prepare_inputs(inputs)
        params = inputs.pop("augment_params", None)
        if params is not None:
            if self.device_augmentation is None:
                raise ValueError(
                    "a batch carries augment_params but the trainer has no device_augmentation: "
                    "build the trainer with build_trainer, or train with augment_on=cpu."
                )
            inputs["pixel_values"] = self.device_augmentation(inputs["pixel_values"], params)
        pixels = inputs.get("pixel_values")
        if self.channels_last and pixels is not None and pixels.ndim == 4:
            inputs["pixel_values"] = pixels.contiguous(memory_format=torch.channels_last)
        return inputs

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.get("labels")
        loss, outputs = super().compute_loss(
            model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        if torch.is_grad_enabled() and labels is not None:
            correct = (training_grades(outputs["logits"].detach()) == labels).sum()
            counts = torch.stack([correct, correct.new_tensor(labels.numel())])
            self._train_counts = (
                counts if self._train_counts is None else self._train_counts + counts
            )
        return (loss, outputs) if return_outputs else loss

    def pop_train_accuracy(self) -> float | None:
        """Training accuracy in percent over all ranks since the last call, then reset."""
        counts = self._train_counts
        if counts is None:
            counts = torch.zeros(2, dtype=torch.long, device=self.args.device)
        self._train_counts = None
        correct, seen = self.accelerator.reduce(counts, reduction="sum").tolist()
        return 100.0 * correct / seen if seen else None

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs:
            if (epoch_time := self.epoch_timer.pop()) is not None:
                logs["epoch_time"] = round(epoch_time, 3)
            if (accuracy := self.pop_train_accuracy()) is not None:
                logs["train_acc"] = accuracy
        super().log(logs, *args, **kwargs)
