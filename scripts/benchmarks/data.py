"""Data pipeline throughput: a hand-written OpenCV Dataset against dr_hf's `datasets` pipeline,
on the raw photographs and on the `prepare`d cache.

All three end at the same place, a collated `pixel_values` batch out of a torch DataLoader, and
apply the same Albumentations training pipeline (`get_transforms`) after the same field-of-view
crop. Loaders keep their workers between epochs, so worker start-up is paid once, in the warm-up.
"""

import csv
import json
import shutil
from pathlib import Path

import cv2
import torch
from datasets import DatasetDict, concatenate_datasets
from torch.utils.data import DataLoader, Dataset
from transformers import default_data_collator

from benchmarks.report import summarize, timed_rate
from dr_hf.config.arguments import DataArguments
from dr_hf.data.loading import load_dr_dataset
from dr_hf.data.prepare import PREPARE_INFO, prepare_dataset, read_prepare_info
from dr_hf.data.preprocessing import crop_fov
from dr_hf.data.synthetic import make_synthetic
from dr_hf.data.transforms import get_transforms, with_transforms

FORMATS = ("png", "jpeg")
_JPEG_QUALITY = 95
_SPEC = "benchmark_photos.json"


class ReferenceDataset(Dataset):
    """The Dataset a user writes by hand (a `RetinalDataset` as DR training scripts commonly write it): OpenCV reads
    the file, the field of view is cropped, then the Albumentations pipeline runs."""

    def __init__(self, paths: list[str], labels: list[int], transform, crop: bool = True):
        self.paths, self.labels, self.transform, self.crop = paths, labels, transform, crop

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        image = cv2.imread(self.paths[index], cv2.IMREAD_COLOR)
        if image is None:
            raise OSError(f"OpenCV could not read {self.paths[index]}.")
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        if self.crop:
            image = crop_fov(image)
        return {
            "pixel_values": self.transform(image=image)["image"],
            "labels": self.labels[index],
        }


def ensure_photos(
    cache_dir: Path, num_images: int, width: int = 3000, height: int = 2000
) -> dict[str, Path]:
    """Synthetic photographs in APTOS layout, as PNG and as JPEG, rendered once into `cache_dir`
    and reused while the count and size match."""
    spec = {"num_images": num_images, "width": width, "height": height}
    folders = {fmt: cache_dir / fmt for fmt in FORMATS}
    spec_file = cache_dir / _SPEC
    if spec_file.is_file() and json.loads(spec_file.read_text()) == spec:
        return folders
    make_synthetic(folders["png"], num_images, image_size=width, height=height, overwrite=True)
    jpeg_images = folders["jpeg"] / "train_images"
    if folders["jpeg"].exists():
        shutil.rmtree(folders["jpeg"])
    jpeg_images.mkdir(parents=True)
    for png in sorted((folders["png"] / "train_images").glob("*.png")):
        target = jpeg_images / f"{png.stem}.jpg"
        quality = [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY]
        if not cv2.imwrite(str(target), cv2.imread(str(png)), quality):
            raise OSError(f"Could not write {target}: check that {cache_dir} is writable.")
    shutil.copy(folders["png"] / "train.csv", folders["jpeg"] / "train.csv")
    for stale in cache_dir.glob("prepared_*"):
        shutil.rmtree(stale)
    spec_file.write_text(json.dumps(spec) + "\n")
    return folders


def all_rows(data_dir: Path):
    """Every image of a folder through `load_dr_dataset` (its split put back together)."""
    dataset = load_dr_dataset(DataArguments(data_dir=str(data_dir)))
    return concatenate_datasets([dataset["train"], dataset["validation"]])


def _prepared(source, cache_dir: Path, fmt: str, size: int) -> Path:
    """The `prepare`d copy for training at `size` (stored 1.25x larger, as recommended)."""
    folder = cache_dir / f"prepared_{fmt}_{size}"
    stored = round(1.25 * size)
    info = read_prepare_info(folder)
    if info is None or info.get("size") != stored or not (folder / PREPARE_INFO).is_file():
        prepare_dataset(DatasetDict(train=source), folder, size=stored)
    return folder


def _loader(dataset, batch_size: int, workers: int) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        persistent_workers=workers > 0,
        collate_fn=default_data_collator,
    )


def _epoch(loader: DataLoader) -> int:
    count = 0
    for batch in loader:
        count += batch["pixel_values"].shape[0]
    return count


def _warm_up(loader: DataLoader) -> None:
    for batch in loader:  # starts the workers; one batch is enough
        if not isinstance(batch["pixel_values"], torch.Tensor):
            raise TypeError("the loader did not produce a pixel_values tensor")
        break


def bench_data(
    cache_dir: str | Path,
    num_images: int = 24,
    width: int = 3000,
    height: int = 2000,
    sizes: tuple[int, ...] = (224, 512),
    workers: tuple[int, ...] = (0, 2),
    batch_size: int = 8,
    repeats: int = 3,
    min_seconds: float = 1.0,
    formats: tuple[str, ...] = FORMATS,
) -> dict:
    """Images/s of a, b and c for every format, size and worker count; ratios per repeat."""
    cache_dir = Path(cache_dir)
    folders = ensure_photos(cache_dir, num_images, width, height)
    rows = []
    for fmt in formats:
        raw = all_rows(folders[fmt])
        with open(folders[fmt] / "train.csv") as file:
            grades = {row["id_code"]: int(row["diagnosis"]) for row in csv.DictReader(file)}
        paths = sorted(str(p) for p in (folders[fmt] / "train_images").iterdir())
        labels = [grades[Path(p).stem] for p in paths]
        for size in sizes:
            train_compose = get_transforms(size)
            prepared = all_rows(_prepared(raw, cache_dir, fmt, size))
            datasets = {
                "a": ReferenceDataset(paths, labels, train_compose),
                "b": with_transforms(DatasetDict(train=raw), size)[0]["train"],
                "c": with_transforms(DatasetDict(train=prepared), size, crop=False)[0]["train"],
            }
            for n_workers in workers:
                loaders = {k: _loader(d, batch_size, n_workers) for k, d in datasets.items()}
                for loader in loaders.values():
                    _warm_up(loader)
                rates = {key: [] for key in loaders}
                for _ in range(repeats):  # interleaved, so load changes hit every variant
                    for key, loader in loaders.items():
                        rates[key].append(timed_rate(lambda lo=loader: _epoch(lo), min_seconds))
                del loaders
                rows.append(
                    {
                        "format": fmt,
                        "size": size,
                        "workers": n_workers,
                        **{key: summarize(values, 2) for key, values in rates.items()},
                        "ratio_b_a": summarize([b / a for a, b in zip(rates["a"], rates["b"])]),
                        "ratio_c_a": summarize([c / a for a, c in zip(rates["a"], rates["c"])]),
                    }
                )
    return {
        "num_images": num_images,
        "width": width,
        "height": height,
        "batch_size": batch_size,
        "repeats": repeats,
        "unit": "images/s",
        "rows": rows,
    }
