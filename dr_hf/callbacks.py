"""Trainer callbacks and the Trainer subclass hooks that dr_hf adds to the HF training loop."""

import math
import time

import torch
import torch.distributed as dist
from transformers import Trainer, TrainerCallback


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


class TrainAccuracy:
    """Counts correct training predictions between two training-loss logs.

    Wraps the loss function given to the Trainer as `compute_loss_func`, which is the one place that
    sees the training logits; evaluation (run under no_grad) is not counted. Counts stay on the
    logits' device until `pop`, so a training step does not wait for the GPU.
    """

    def __init__(self, loss_fn):
        self.loss_fn = loss_fn
        self.correct: torch.Tensor | int = 0
        self.total = 0

    def __call__(self, outputs, labels, num_items_in_batch=None):
        if torch.is_grad_enabled():
            logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
            self.correct = self.correct + (logits.detach().argmax(-1) == labels).sum()
            self.total += labels.numel()
        return self.loss_fn(outputs, labels, num_items_in_batch=num_items_in_batch)

    def pop(self) -> float | None:
        """Accuracy in percent over all ranks since the last call, then reset."""
        correct = torch.as_tensor(self.correct, dtype=torch.float64)
        counts = torch.stack([correct.cpu(), torch.tensor(float(self.total), dtype=torch.float64)])
        if dist.is_available() and dist.is_initialized():
            backend = dist.get_backend()
            device = (
                torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else "cpu"
            )
            counts = counts.to(device)
            dist.all_reduce(counts)
        self.correct, self.total = 0, 0
        correct, total = counts.tolist()
        return 100.0 * correct / total if total else None


class DRTrainer(Trainer):
    """The HF Trainer, adding the training accuracy and the epoch's time to each training-loss log,
    so they reach W&B and the checkpointed log history (`training_history.json` is built from it)."""

    def __init__(self, *args, train_accuracy: TrainAccuracy | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.train_accuracy = train_accuracy
        self.epoch_timer = EpochTimer()
        self.add_callback(self.epoch_timer)

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs:
            if (epoch_time := self.epoch_timer.pop()) is not None:
                logs["epoch_time"] = round(epoch_time, 3)
            if self.train_accuracy is not None:
                accuracy = self.train_accuracy.pop()
                if accuracy is not None:
                    logs["train_acc"] = accuracy
        super().log(logs, *args, **kwargs)
