"""Forward throughput and peak memory of a grader in PyTorch against its ONNX export, fp32 and
int8.

Each model is built from random weights, saved as training saves it, exported by `dr-hf export`
(the parity check included) and quantised as `--quantize int8` does; the three graders then grade
the same normalised batches through `grade_batch`, interleaved round by round after a warm-up
round. File sizes are the saved `model.safetensors` and each `model.onnx`.

Peak memory: each runtime loads its folder and grades a few batches of the largest size in a
fresh process of its own that reports its high-water resident memory (VmHWM), so one
runtime's peak never mixes into another's. An exported folder is measured twice: through dr_hf
(which imports torch) and through its own torch-free grading script, the minimal runtime.

    python scripts/benchmark.py onnx --models resnet50 retfound_tiny --batch-sizes 1 16
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.report import summarize
from dr_hf.config.arguments import ModelArguments
from dr_hf.export import export_onnx
from dr_hf.inference import grade_batch, load_grader
from dr_hf.inference.onnx_model import OnnxModel
from dr_hf.models.graders import create_model

RUNTIMES = ("pytorch", "onnxruntime_fp32", "onnxruntime_int8")
MEMORY_BATCHES = 3

# run in a fresh process: grade random batches with a folder, print its peak RSS (KiB); not
# ru_maxrss, which keeps the parent's size from before the exec
PEAK_WITH_DR_HF = """
import sys, torch
from dr_hf.inference import grade_batch, load_grader
folder, batch, side, repeats = sys.argv[1], *map(int, sys.argv[2:5])
grader = load_grader(folder, device="cpu")
pixels = torch.randn(batch, 3, side, side)
for _ in range(repeats):
    grade_batch(grader, pixels)
print(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:")))
"""
PEAK_WITHOUT_TORCH = """
import sys
sys.modules["torch"] = None
folder, batch, side, repeats = sys.argv[1], *map(int, sys.argv[2:5])
sys.path.insert(0, folder)
import numpy as np
import dr_hf_onnx_grade
grader = dr_hf_onnx_grade.OnnxGrader(folder)
pixels = np.random.default_rng(0).standard_normal((batch, 3, side, side), dtype=np.float32)
for _ in range(repeats):
    grader.session.run(None, {"pixel_values": pixels})
print(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:")))
"""


def peak_rss_mib(script: str, folder: Path, batch_size: int, image_size: int) -> float:
    """Peak resident MiB of `script` grading with `folder` in a process of its own."""
    argv = [sys.executable, "-c", script, str(folder), str(batch_size), str(image_size)]
    ran = subprocess.run([*argv, str(MEMORY_BATCHES)], capture_output=True, text=True)
    if ran.returncode != 0:
        raise RuntimeError(f"Grading with {folder} in a fresh process failed: {ran.stderr[-2000:]}")
    return round(int(ran.stdout.split()[-1]) / 1024, 1)


def _rate(grader, pixels: torch.Tensor, batch_size: int, min_seconds: float) -> float:
    """Images/s of `grade_batch` over `pixels` in batches, repeated for at least `min_seconds`."""
    done, start = 0, time.perf_counter()
    while True:
        for begin in range(0, len(pixels), batch_size):
            grade_batch(grader, pixels[begin : begin + batch_size])
        done += len(pixels)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return done / elapsed


def _mb(file: Path) -> float:
    return round(file.stat().st_size / 1e6, 1)


def bench_onnx(
    model_names: tuple[str, ...] = ("resnet50", "retfound_tiny"),
    image_size: int = 224,
    batch_sizes: tuple[int, ...] = (1, 16),
    repeats: int = 3,
    min_seconds: float = 1.0,
    memory: bool = True,
    threads: int | None = None,
) -> dict:
    """Images/s of PyTorch, ONNX Runtime fp32 and ONNX Runtime int8 for each model and batch
    size (median, min, max over `repeats` rounds), the speed-up of each over PyTorch, the
    models' file sizes in MB, the int8 settings, the export times and (with `memory`) the peak
    resident MiB of grading with each at the largest batch size. `threads` sets both runtimes'
    threads (default: torch's and onnxruntime's own); one thread each is the fairer comparison
    while other jobs share the cores."""
    torch.manual_seed(0)
    torch_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    load_average = [round(v, 2) for v in os.getloadavg()]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in model_names:
            model, processor = create_model(ModelArguments(model_name=name), image_size=image_size)
            folder = Path(tmp) / name
            processor.name_in(model.config)
            model.save_pretrained(folder / "torch")
            processor.save_pretrained(str(folder / "torch"))
            del model
            seconds = {}
            for runtime, quantize in (("onnxruntime_fp32", None), ("onnxruntime_int8", "int8")):
                start = time.perf_counter()
                export = export_onnx(folder / "torch", folder / runtime, quantize=quantize)
                seconds[runtime] = round(time.perf_counter() - start, 1)
            folders = {"pytorch": folder / "torch"} | {r: folder / r for r in RUNTIMES[1:]}
            graders = {
                runtime: load_grader(path, device="cpu") for runtime, path in folders.items()
            }
            for runtime in RUNTIMES[1:]:  # onnxruntime's threads are set when its session opens
                graders[runtime].model = OnnxModel(folders[runtime], threads=threads)
            pixels = torch.randn(max(batch_sizes), 3, image_size, image_size)
            rates = {(g, b): [] for g in graders for b in batch_sizes}
            for round_ in range(repeats + 1):  # round 0 warms up
                for (runtime, batch_size), values in rates.items():
                    rate = _rate(graders[runtime], pixels, batch_size, min_seconds)
                    if round_:
                        values.append(rate)
            del graders
            images_per_s = {
                f"{runtime}, batch {b}": summarize(values, 2)
                for (runtime, b), values in rates.items()
            }
            result = {
                "model": name,
                "image_size": image_size,
                "images_per_s": images_per_s,
                "speedup_over_pytorch": {
                    key: round(
                        stats["median"]
                        / images_per_s[f"pytorch, batch {key.rsplit(' ', 1)[1]}"]["median"],
                        2,
                    )
                    for key, stats in images_per_s.items()
                    if not key.startswith("pytorch")
                },
                "file_mb": {
                    "pytorch": _mb(folders["pytorch"] / "model.safetensors"),
                    **{r: _mb(folders[r] / "model.onnx") for r in RUNTIMES[1:]},
                },
                "export_seconds": seconds,
                "int8": export.quantization["settings"],
                "int8_max_probability_difference": export.quantization[
                    "max_probability_difference"
                ],
            }
            if memory:
                batch = max(batch_sizes)
                result["peak_rss_mib"] = {
                    "batch_size": batch,
                    **{
                        r: peak_rss_mib(PEAK_WITH_DR_HF, f, batch, image_size)
                        for r, f in folders.items()
                    },
                    **{
                        f"{r}, without torch": peak_rss_mib(
                            PEAK_WITHOUT_TORCH, folders[r], batch, image_size
                        )
                        for r in RUNTIMES[1:]
                    },
                }
            results.append(result)
    import onnxruntime

    used_threads = torch.get_num_threads()
    torch.set_num_threads(torch_threads)
    return {
        "method": "grade_batch on random normalised batches, CPU, interleaved; ONNX Runtime "
        "sessions with their default options (all graph optimisations, one thread per "
        "physical core), PyTorch with torch's threads; peak memory: VmHWM of a fresh "
        f"process loading the folder and grading {MEMORY_BATCHES} batches",
        "threads": used_threads if threads else f"torch {used_threads}, onnxruntime its default",
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "repeats": repeats,
        "load_average": {"start": load_average, "end": [round(v, 2) for v in os.getloadavg()]},
        "results": results,
    }


def onnx_table(report: dict) -> str:
    """The Markdown table of a `bench_onnx` report: images/s (median), speed-up over PyTorch,
    file size and peak memory per model and runtime."""
    lines = []
    for result in report["results"]:
        batches = sorted({int(k.rsplit(" ", 1)[1]) for k in result["images_per_s"]})
        memory = result.get("peak_rss_mib", {})
        header = ["model", "runtime"] + [f"images/s batch {b} (x PyTorch)" for b in batches]
        header += ["file MB"]
        if memory:
            header += [f"peak RSS MiB, batch {memory['batch_size']} (without torch)"]
        if not lines:
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for runtime in RUNTIMES:
            cells = [f"{result['model']} ({result['image_size']} px)", runtime]
            for b in batches:
                rate = result["images_per_s"][f"{runtime}, batch {b}"]["median"]
                speedup = result.get("speedup_over_pytorch", {}).get(f"{runtime}, batch {b}")
                cells.append(f"{rate:g}" + (f" ({speedup:.2f}x)" if speedup else ""))
            cells.append(f"{result['file_mb'][runtime]:g}")
            if memory:
                alone = memory.get(f"{runtime}, without torch")
                cells.append(f"{memory[runtime]:,.0f}" + (f" ({alone:,.0f})" if alone else ""))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "retfound_tiny"])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--no-memory", action="store_true", help="Skip the peak memory runs.")
    parser.add_argument("--threads", type=int, help="Threads of both runtimes (default: theirs).")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    report = bench_onnx(
        tuple(args.models),
        args.image_size,
        tuple(args.batch_sizes),
        args.repeats,
        args.min_seconds,
        memory=not args.no_memory,
        threads=args.threads,
    )
    print(json.dumps(report, indent=1))
    print(onnx_table(report))
    return report


__all__ = ["bench_onnx", "onnx_table", "peak_rss_mib"]


if __name__ == "__main__":
    main()
