"""Benchmark dr_hf against the hand-written equivalents, side by side, on this machine.

    python scripts/benchmark.py --output outputs/benchmark
    python scripts/benchmark.py --sections data --num-images 12 --repeats 5
    python scripts/benchmark.py --tiny --output /tmp/bench   # seconds-long smoke run

Writes benchmark.json (every run, median/min/max, machine and load average) and benchmark.md.
Synthetic 3000x2000 photographs are rendered once into --cache-dir and reused.
"""

import argparse
import logging

from dr_hf.benchmarks import SECTIONS, run_benchmarks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="outputs/benchmark", help="Where results go.")
    parser.add_argument("--cache-dir", default="data/benchmark", help="Synthetic photos.")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--repeats", type=int, default=3, help="Runs per measurement.")
    parser.add_argument("--num-images", type=int, default=24, help="Photos per format.")
    parser.add_argument("--tiny", action="store_true", help="Tiny settings, for a smoke test.")
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
    args = parser.parse_args()
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger("dr_hf.models").setLevel(logging.WARNING)
    run_benchmarks(
        args.output,
        args.cache_dir,
        sections=tuple(args.sections),
        repeats=args.repeats,
        num_images=args.num_images,
        tiny=args.tiny,
        device=args.device,
        pointing_model=args.pointing_model,
    )
    print(open(f"{args.output}/benchmark.md").read())


if __name__ == "__main__":
    main()
