"""Benchmark dr_hf against the hand-written equivalents, side by side, on this machine.

    python scripts/benchmark.py --output outputs/benchmark
    python scripts/benchmark.py --sections data --num-images 12 --repeats 5
    python scripts/benchmark.py --smoke --output /tmp/bench   # every section's smallest real case

Writes benchmark.json (every run, median/min/max, machine and load average) and benchmark.md.
Synthetic 3000x2000 photographs are rendered once into --cache-dir and reused.

The benchmarks run on their own take their own flags (`--help` after the name):

    python scripts/benchmark.py archive [--sizes 1000 5000]     # dr-hf predict's peak memory
    python scripts/benchmark.py onnx [--models resnet50 retfound_tiny --batch-sizes 1 16]
    python scripts/benchmark.py gpu [--smoke] --output outputs/benchmark_gpu  # benchmark_gpu.sh
"""

import argparse
import importlib
import logging
import sys

from benchmarks import SECTIONS, run_benchmarks

STANDALONE = ("archive", "onnx", "gpu")


def build_parser() -> argparse.ArgumentParser:
    """The suite's flags (the benchmarks run on their own parse theirs)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog=f"Run on their own: {', '.join(STANDALONE)} (python scripts/benchmark.py NAME -h).",
    )
    parser.add_argument("--output", default="outputs/benchmark", help="Where results go.")
    parser.add_argument("--cache-dir", default="data/benchmark", help="Synthetic photos.")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--repeats", type=int, default=3, help="Runs per measurement.")
    parser.add_argument("--num-images", type=int, default=24, help="Photos per format.")
    parser.add_argument(
        "--smoke",
        "--tiny",
        action="store_true",
        help="Every section's smallest real case, seconds long: checks the harness.",
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="Where the trainer section runs both loops (model and batches).",
    )
    parser.add_argument(
        "--pointing-model",
        default="outputs/quickstart/best",
        help="Trained model folder the pointing-game and demo-load sections use (the quick start's by default).",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in STANDALONE:
        importlib.import_module(f"benchmarks.{argv[0]}").main(argv[1:])
        return
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger("dr_hf.models").setLevel(logging.WARNING)
    run_benchmarks(
        args.output,
        args.cache_dir,
        sections=tuple(args.sections),
        repeats=args.repeats,
        num_images=args.num_images,
        smoke=args.smoke,
        device=args.device,
        pointing_model=args.pointing_model,
    )
    print(open(f"{args.output}/benchmark.md").read())


if __name__ == "__main__":
    main()
