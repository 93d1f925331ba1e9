"""One rank of a CPU data-parallel training run that records what it saw.

Usage: torchrun --standalone --nproc_per_node 2 ddp_train.py CONFIG_JSON SCRATCH_DIR

Runs `dr_hf.training.run.run_training` unchanged and only observes it, through a Trainer callback,
a forward pre-hook and a CPython audit hook. Each rank writes SCRATCH_DIR/rank-<r>.json:
- `batches`: per optimizer step, the training-set indices of the images this rank's model was
  fed (matched by their pixels: augmentation must be off, so each image has one tensor; with
  augment_on=gpu every image is -1);
- `weights`: per optimizer step, a SHA-256 of the rank's model weights;
- `initial_losses`: the cross-entropy of the untrained model on every training image;
- `log_history`: the rank's Trainer log history;
- `writes`: the files and folders under output_dir that this process's Python code opened for
  writing, created, moved or deleted (files torch and safetensors write from C++/Rust are not seen).
"""

import hashlib
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import TrainerCallback

from dr_hf.config.parsing import config_from_dict
from dr_hf.training.run import run_training

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_PATH_EVENTS = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree", "shutil.move"}


class WriteAudit:
    """Records this process's Python-level writes below `root` (an audit hook, `sys.addaudithook`)."""

    def __init__(self, root: Path):
        self.root = root.resolve()
        self.writes: list[str] = []

    def __call__(self, event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS
            )
            if writing:
                self._record(event, path)
        elif event in _PATH_EVENTS:
            self._record(event, args[0])

    def _record(self, event: str, path) -> None:
        if not isinstance(path, (str, bytes, os.PathLike)):
            return  # a file descriptor
        resolved = Path(os.fsdecode(path)).resolve()
        if resolved.is_relative_to(self.root):
            self.writes.append(f"{event} {resolved.relative_to(self.root)}")


def _digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().contiguous().numpy().tobytes()).hexdigest()


class Observer(TrainerCallback):
    """At train begin: the untrained model's per-image losses and each image's pixel digest; then
    a pre-hook names the images of every training forward, and each step the weights' digest."""

    def __init__(self):
        self.batches: list[list[int]] = []
        self.weights: list[str] = []
        self.initial_losses: list[float] = []
        self.log_history: list[dict] = []
        self._index: dict[str, int] = {}
        self._seen: list[int] = []

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        dataset = train_dataloader.dataset
        if len(dataset) and "augment_params" in dataset[0]:
            return  # uint8 images augmented on the device: no fixed tensor names an image
        model.eval()
        with torch.no_grad():
            for index in range(len(dataset)):
                example = dataset[index]
                pixels = example["pixel_values"]
                self._index[_digest(pixels)] = index
                logits = model(pixel_values=pixels[None]).logits
                label = torch.tensor([example["labels"]])
                self.initial_losses.append(F.cross_entropy(logits, label).item())
        model.train()
        model.register_forward_pre_hook(self._record_inputs, with_kwargs=True)

    def _record_inputs(self, module, args, kwargs):
        if module.training:
            pixels = kwargs["pixel_values"] if "pixel_values" in kwargs else args[0]
            self._seen.extend(self._index.get(_digest(p), -1) for p in pixels)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.batches.append(self._seen)
        self._seen = []
        weights = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            weights.update(name.encode() + tensor.contiguous().numpy().tobytes())
        self.weights.append(weights.hexdigest())

    def on_train_end(self, args, state, control, **kwargs):
        self.log_history = list(state.log_history)


def main() -> None:
    config, scratch = Path(sys.argv[1]), Path(sys.argv[2])
    torch.set_num_threads(1)
    values = json.loads(config.read_text())
    audit = WriteAudit(Path(values["output_dir"]))
    sys.addaudithook(audit)
    observer = Observer()
    run_training(*config_from_dict(values), callbacks=[observer])
    record = {
        "rank": int(os.environ["RANK"]),
        "world_size": int(os.environ["WORLD_SIZE"]),
        "batches": observer.batches,
        "weights": observer.weights,
        "initial_losses": observer.initial_losses,
        "log_history": observer.log_history,
        "writes": audit.writes,
    }
    (scratch / f"rank-{record['rank']}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
