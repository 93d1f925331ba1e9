"""Benchmarks of dr_hf against the hand-written equivalents, measured side by side in one run.

`run_benchmarks` runs the sections asked for and writes `benchmark.json` and `benchmark.md`;
`scripts/benchmark.py` is its command line and `scripts/benchmark_gpu.sh` the GPU counterpart.
"""

from dr_hf.benchmarks.suite import SECTIONS, run_benchmarks

__all__ = ["SECTIONS", "run_benchmarks"]
