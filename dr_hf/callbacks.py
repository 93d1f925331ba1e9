"""Trainer callbacks and the Trainer subclass hooks that dr_hf adds to the HF training loop."""

import math
import time

import torch
import torch.distributed as dist
from transformers import Trainer, TrainerCallback

from dr_hf.optim import layer_decay_param_groups


class AugmentationEpochCallback(TrainerCallback):
    """Tells the training transform which epoch starts, so augmentation is a function of
    (seed, epoch, image id): a resumed run, any worker count and any rank see the same images."""

    def __init__(self, train_transform):
        self.train_transform = train_transform

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.train_transform.set_epoch(math.floor(state.epoch + 1e-6))


class TrainAccuracy:
    """Counts correct training predictions between two training-loss logs.

    Wraps the loss function given to the Trainer as `compute_loss_func`, which is the one place that
    sees the training logits; evaluation (run under no_grad) is not counted.
    """

    def __init__(self, loss_fn):
        self.loss_fn = loss_fn
        self.correct = 0
        self.total = 0

    def __call__(self, outputs, labels, num_items_in_batch=None):
        if torch.is_grad_enabled():
            logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
            self.correct += int((logits.detach().argmax(-1) == labels).sum())
            self.total += int(labels.numel())
        return self.loss_fn(outputs, labels, num_items_in_batch=num_items_in_batch)

    def pop(self) -> float | None:
        """Accuracy in percent over all ranks since the last call, then reset."""
        counts = torch.tensor([self.correct, self.total], dtype=torch.float64)
        if dist.is_available() and dist.is_initialized():
            backend = dist.get_backend()
            device = (
                torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else "cpu"
            )
            counts = counts.to(device)
            dist.all_reduce(counts)
        self.correct = self.total = 0
        correct, total = counts.tolist()
        return 100.0 * correct / total if total else None


class DRTrainer(Trainer):
    """The HF Trainer with two additions: layer-wise lr decay param groups when configured, and the
    training accuracy and epoch time added to each training-loss log (so they reach W&B and the
    checkpointed log history, which is what `training_history.json` is built from)."""

    def __init__(self, *args, train_accuracy: TrainAccuracy | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.train_accuracy = train_accuracy
        self._last_log_time = time.perf_counter()

    def create_optimizer(self, model=None):
        layer_decay = getattr(self.args, "layer_decay", None)
        if layer_decay is None or self.optimizer is not None:
            return super().create_optimizer(model)
        groups = layer_decay_param_groups(
            self.model, self.args.learning_rate, self.args.weight_decay, layer_decay
        )
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
        optimizer_kwargs.pop("lr", None)
        self.optimizer = optimizer_cls(groups, lr=self.args.learning_rate, **optimizer_kwargs)
        return self.optimizer

    def train(self, *args, **kwargs):
        self._last_log_time = time.perf_counter()
        return super().train(*args, **kwargs)

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs:
            now = time.perf_counter()
            logs["epoch_time"] = round(now - self._last_log_time, 3)
            self._last_log_time = now
            if self.train_accuracy is not None:
                accuracy = self.train_accuracy.pop()
                if accuracy is not None:
                    logs["train_acc"] = accuracy
        super().log(logs, *args, **kwargs)
