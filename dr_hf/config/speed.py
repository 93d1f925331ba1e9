"""Defaults that make a run fast on the machine it runs on: DataLoader workers from the cores,
workers kept between epochs with batches loaded ahead, TF32 for the float32 matmuls left
outside bf16 autocast on Ampere and newer GPUs."""

import os


def default_num_workers() -> int:
    """DataLoader workers per process: the cores this process may use, shared among the ranks
    of this machine (torchrun's LOCAL_WORLD_SIZE), one left for the training loop, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    per_rank = (cores or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(8, per_rank - 1))


def apply_speed_defaults(args) -> None:
    """Fill the unset speed fields of a `DRTrainingArguments` being initialised; refuse
    persistent workers without workers (the DataLoader would, once training starts)."""
    workers = args.dataloader_num_workers
    if args.dataloader_persistent_workers is None:
        args.dataloader_persistent_workers = workers > 0
    if args.dataloader_prefetch_factor is None and workers > 0:
        args.dataloader_prefetch_factor = 4
    if args.dataloader_persistent_workers and workers == 0:
        raise ValueError(
            "dataloader_persistent_workers needs workers: set dataloader_num_workers to 1 or "
            "more, or dataloader_persistent_workers to false."
        )
    if args.tf32 is None and args.bf16 and _tf32_capable():
        args.tf32 = True


def _tf32_capable() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8
