"""The benchmark run: each section with its settings (full-size, or its smallest real case for
`--smoke`), into JSON and Markdown."""

import json
import logging
import os
import time
from pathlib import Path

from benchmarks.report import machine_info, to_markdown

SECTIONS = (
    "data",
    "cache_formats",
    "trainer",
    "lora",
    "inference",
    "pointing",
    "cv_ensemble",
    "heads",
    "demo_load",
)
logger = logging.getLogger(__name__)


def _smoke_settings(repeats: int, device: str) -> dict[str, dict]:
    """Each section's smallest real case, seconds long (`--smoke`, and the tests)."""
    return {
        "demo_load": {"model": None, "users": 2, "seconds": 3.0, "num_photos": 2, "image_size": 64},
        "data": {
            "num_images": 6,
            "width": 96,
            "height": 64,
            "sizes": (32,),
            "workers": (0,),
            "batch_size": 2,
            "repeats": repeats,
            "min_seconds": 0.0,
        },
        "cache_formats": {
            "image_size": 32,
            "batch_size": 2,
            "repeats": repeats,
            "min_seconds": 0.0,
        },
        "trainer": {
            "model_name": "test_resnet",
            "image_size": 32,
            "batch_size": 4,
            "steps": 2,
            "repeats": repeats,
            "device": device,
        },
        "lora": {"image_size": 32, "batch_size": 2, "steps": 2, "repeats": repeats},
        "inference": {
            "model_name": "test_resnet",
            "image_size": 32,
            "batch_size": 2,
            "repeats": repeats,
        },
        "pointing": {"model": None, "num_images": 12, "image_size": 64},
        "heads": {
            "seeds": (0,),
            "noise": (0.15,),
            "num_train": 30,
            "num_test": 12,
            "image_size": 48,
            "epochs": 1,
            "overrides": {
                "model_name": "test_resnet",
                "image_size": 32,
                "dataloader_num_workers": 0,
            },
        },
        "cv_ensemble": {
            "num_train": 30,
            "num_test": 10,
            "image_size": 48,
            "epochs": 1,
            "overrides": {
                "model_name": "test_resnet",
                "image_size": 32,
                "dataloader_num_workers": 0,
                "save_strategy": "epoch",
            },
        },
    }


def section_settings(
    smoke: bool,
    repeats: int,
    num_images: int,
    device: str = "cpu",
    pointing_model: str = "outputs/quickstart/best",
) -> dict[str, dict]:
    """Keyword arguments of each section: the real settings, or the seconds-long smoke ones."""
    if smoke:
        return _smoke_settings(repeats, device)
    return {
        "data": {"num_images": num_images, "repeats": repeats},
        "cache_formats": {"num_images": num_images, "repeats": repeats},
        "trainer": {"repeats": max(repeats, 5), "device": device},
        "lora": {"repeats": repeats},
        "inference": {"repeats": repeats, "num_photos": 16},
        "pointing": {"model": pointing_model},
        "cv_ensemble": {},
        "heads": {},
        "demo_load": {"model": pointing_model},
    }


def run_benchmarks(
    output_dir: str | Path,
    cache_dir: str | Path,
    sections: tuple[str, ...] = SECTIONS,
    repeats: int = 3,
    num_images: int = 24,
    smoke: bool = False,
    device: str = "cpu",
    pointing_model: str = "outputs/quickstart/best",
) -> dict:
    """Run `sections` and write `benchmark.json` and `benchmark.md` into `output_dir`.
    `device` is where the trainer section runs both of its loops; `pointing_model` is the
    trained folder whose heatmaps the pointing game scores."""
    unknown = [name for name in sections if name not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}: choose from {', '.join(SECTIONS)}.")
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: run each measurement at least once.")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    settings = section_settings(smoke, repeats, num_images, device, pointing_model)
    photo_spec = {
        k: v for k, v in settings["data"].items() if k in ("num_images", "width", "height")
    }
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    settings["heads"]["progress"] = str(output_dir / "heads_progress.json")  # written as it goes
    results: dict = {"machine": machine_info(), "smoke": smoke, "seconds": {}}
    for name in sections:
        start = time.perf_counter()
        logger.info("Benchmark section %s ...", name)
        results[name] = _run_section(name, settings[name], Path(cache_dir), photo_spec)
        results["seconds"][name] = round(time.perf_counter() - start, 1)
    results["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    (output_dir / "benchmark.json").write_text(json.dumps(results, indent=2) + "\n")
    (output_dir / "benchmark.md").write_text(to_markdown(results))
    return results


def _run_section(name: str, kwargs: dict, cache_dir: Path, photo_spec: dict) -> dict:
    if name == "data":
        from benchmarks.data import bench_data

        return bench_data(cache_dir, **kwargs)
    if name == "cache_formats":
        from benchmarks.formats import bench_cache_formats

        return bench_cache_formats(cache_dir, **photo_spec, **kwargs)
    if name == "trainer":
        from benchmarks.trainer import bench_trainer

        return bench_trainer(**kwargs)
    if name == "lora":
        from benchmarks.lora import bench_lora

        return bench_lora(**kwargs)
    if name == "cv_ensemble":
        from benchmarks.cv_ensemble import bench_cv_ensemble

        return bench_cv_ensemble(cache_dir, **kwargs)
    if name == "heads":
        from benchmarks.heads import bench_heads

        return bench_heads(cache_dir, **kwargs)
    if name == "demo_load":
        from benchmarks.demo_load import bench_demo_load

        return bench_demo_load(cache_dir, **kwargs)
    if name == "pointing":
        from benchmarks.pointing import bench_pointing

        return bench_pointing(cache_dir, **kwargs)
    from benchmarks.data import ensure_photos
    from benchmarks.inference import bench_inference

    kwargs = dict(kwargs)
    folder = ensure_photos(cache_dir, **photo_spec)["jpeg"] / "train_images"
    photos = sorted(folder.glob("*.jpg"))[: kwargs.pop("num_photos", None)]
    return bench_inference(photos, **kwargs)
