"""`dr-hf predict` over an archive: its peak memory at growing numbers of photographs.

Each size is graded by a `dr-hf predict` process of its own (a folder of that many synthetic
photographs, CSV output, the default decoding workers); its resident memory (RSS), and the
proportional memory (PSS) of it and its DataLoader workers together, are sampled from /proc
every 200 ms. Streaming keeps it flat: the rows of each
batch are written as it is graded, so a run over 5,000 photographs holds no more than one over
1,000. The model is an untrained `test_resnet` saved with its processor: memory depends on the
pipeline, not on the weights.

    python scripts/benchmark.py archive     # 1,000 and 5,000 photographs of 64 px
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAMPLE_SECONDS = 0.2  # reading smaps_rollup costs CPU: sample no more often


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS of the process, PSS of it and its children) in KiB: forked DataLoader workers share
    most of their pages with it, which summing their RSS would count once per worker."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    pids = [pid, *(int(c) for c in children.read_text().split())] if children.is_file() else [pid]
    rss = pss = 0
    for each in pids:
        try:
            rollup = Path(f"/proc/{each}/smaps_rollup").read_text().splitlines()
            status = Path(f"/proc/{each}/status").read_text().splitlines()
        except OSError:  # ended between listing and reading
            continue
        pss += sum(int(line.split()[1]) for line in rollup if line.startswith("Pss:"))
        if each == pid:
            rss = sum(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return rss, pss


def untrained_model(folder: Path) -> Path:
    """An untrained test_resnet (32 px input) saved as training saves a model."""
    from dr_hf.config.arguments import ModelArguments
    from dr_hf.models.graders import create_model

    model, processor = create_model(ModelArguments(model_name="test_resnet"), image_size=32)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _photos(folder: Path, count: int, image_size: int) -> list[Path]:
    from dr_hf.data.synthetic import make_synthetic

    made = make_synthetic(folder, num_images=count, image_size=image_size, seed=0)
    return sorted((made / "train_images").glob("*.png"))


def peak_memory(argv: list[str], env: dict | None = None) -> tuple[float, float, float]:
    """(peak RSS of the process, peak PSS of it and its children, both MiB; seconds) of `argv`."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=log)
        rss = pss = 0
        while process.poll() is None:
            now = memory_kib(process.pid)
            rss, pss = max(rss, now[0]), max(pss, now[1])
            time.sleep(SAMPLE_SECONDS)
        if process.returncode != 0:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"{' '.join(argv)} failed ({process.returncode}): {tail}")
    return rss / 1024, pss / 1024, time.perf_counter() - start


def bench_archive(
    sizes: tuple[int, ...] = (1000, 5000),
    image_size: int = 64,
    batch_size: int = 32,
    workdir: str | Path | None = None,
) -> dict:
    """Peak resident MiB and images/s of `dr-hf predict` on each number of photographs."""
    with tempfile.TemporaryDirectory(dir=workdir) as scratch:
        scratch = Path(scratch)
        model = untrained_model(scratch / "model")
        photos = _photos(scratch / "synthetic", max(sizes), image_size)
        env = os.environ | {"NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1"}
        results = {}
        for size in sizes:
            folder = scratch / f"archive_{size}"
            folder.mkdir()
            for photo in photos[:size]:
                os.symlink(photo, folder / photo.name)
            output = scratch / f"predictions_{size}.csv"
            argv = [sys.executable, "-m", "dr_hf.cli", "predict", str(folder), "--model"]
            argv += [str(model), "--output", str(output), "--batch-size", str(batch_size)]
            argv += ["--device", "cpu"]
            rss, pss, seconds = peak_memory(argv, env)
            rows = sum(1 for _ in open(output)) - 1
            if rows != size:
                raise RuntimeError(f"{output} holds {rows} rows for {size} photographs")
            results[str(size)] = {
                "peak_rss_mib": round(rss, 1),
                "peak_pss_with_workers_mib": round(pss, 1),
                "seconds": round(seconds, 1),
                "images_per_s": round(size / seconds, 1),
            }
    return {
        "method": "dr-hf predict FOLDER --output x.csv in a process of its own; its peak RSS, and "
        "the peak PSS of it and its DataLoader workers together, sampled every "
        f"{SAMPLE_SECONDS * 1000:.0f} ms from /proc",
        "model": "test_resnet (untrained), 32 px input",
        "image_size": image_size,
        "batch_size": batch_size,
        "sizes": results,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    results = bench_archive(tuple(args.sizes), args.image_size, args.batch_size)
    print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
