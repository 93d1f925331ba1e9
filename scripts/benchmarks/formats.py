"""Images/s per core from each cache format to a collated training batch: the figure that says
how many cores feed a given GPU.

Sources: the photographs themselves (3000x2000 JPEG), the `dr-hf prepare` PNG and JPEG caches
and the raw uint8 cache. Each is read through dr_hf's own training transform, two ways: with the
Albumentations augmentation (augment_on=cpu) and with the GPU path's read-and-collate only
(augment_on=gpu: crop/resize where still needed, the parameter draw, uint8 collate). One process,
one thread for torch and OpenCV, no DataLoader workers: the rate of one core; with CUDA the batch
is pinned as the Trainer's DataLoader pins it.
"""

from pathlib import Path

import cv2
import torch
from datasets import DatasetDict
from torch.utils.data import DataLoader
from transformers import default_data_collator

from benchmarks.data import all_rows, ensure_photos
from benchmarks.report import summarize, timed_rate
from dr_hf.data.prepare import PREPARE_INFO, prepare_dataset, read_prepare_info
from dr_hf.data.transforms import with_transforms

SOURCES = ("photographs (JPEG)", "PNG cache", "JPEG cache", "raw uint8 cache")
MODES = {"cpu": "CPU augmentation", "gpu": "read and collate (augment_on=gpu)"}


def _cache(source, cache_dir: Path, fmt: str, image_size: int) -> Path:
    """The `prepare`d copy in `fmt` (stored at 1.25x `image_size`, raw at `image_size`)."""
    folder = cache_dir / f"prepared_{fmt}_{image_size}"
    size = round(1.25 * image_size)
    info = read_prepare_info(folder)
    if info is None or info.get("size") != size or not (folder / PREPARE_INFO).is_file():
        raw_size = image_size if fmt == "raw" else None
        prepare_dataset(DatasetDict(train=source), folder, size, format=fmt, image_size=raw_size)
    return folder


def _one_core(work):
    """`work()` with one torch thread and one OpenCV thread."""
    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        return work()
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)


def bench_cache_formats(
    cache_dir: str | Path,
    num_images: int = 24,
    width: int = 3000,
    height: int = 2000,
    image_size: int = 224,
    batch_size: int = 32,
    repeats: int = 3,
    min_seconds: float = 2.0,
) -> dict:
    """Images/s of one core per source and mode, `repeats` interleaved runs each."""
    cache_dir = Path(cache_dir)
    folders = ensure_photos(cache_dir, num_images, width, height)
    photos = all_rows(folders["jpeg"])
    png_rows = all_rows(folders["png"])
    sources = {
        SOURCES[0]: (photos, True),
        SOURCES[1]: (all_rows(_cache(png_rows, cache_dir, "png", image_size)), False),
        SOURCES[2]: (all_rows(_cache(png_rows, cache_dir, "jpeg", image_size)), False),
        SOURCES[3]: (all_rows(_cache(png_rows, cache_dir, "raw", image_size)), False),
    }
    loaders = {}
    for source, (rows, crop) in sources.items():
        for mode in MODES:
            splits, _ = with_transforms(
                DatasetDict(train=rows), image_size, crop=crop, augment_on=mode
            )
            loaders[source, mode] = DataLoader(
                splits["train"],
                batch_size=batch_size,
                collate_fn=default_data_collator,
                pin_memory=torch.cuda.is_available(),
            )

    def epoch(loader: DataLoader) -> int:
        return sum(len(batch["pixel_values"]) for batch in loader)

    rates = {key: [] for key in loaders}
    for _ in range(repeats):  # interleaved, so load changes hit every variant
        for key, loader in loaders.items():
            rates[key].append(
                _one_core(lambda lo=loader: timed_rate(lambda: epoch(lo), min_seconds))
            )
    rows = [
        {"source": source, "mode": MODES[mode], "images_per_s": summarize(rates[source, mode], 1)}
        for source, mode in loaders
    ]
    return {
        "num_images": num_images,
        "photo_size": [width, height],
        "image_size": image_size,
        "batch_size": batch_size,
        "pinned": torch.cuda.is_available(),
        "unit": "images/s on one core",
        "rows": rows,
    }


def cores_needed(images_per_s_per_core: float, target: float = 4000.0) -> float:
    """Worker cores to sustain `target` images/s at a measured per-core rate."""
    return target / images_per_s_per_core
