"""Benchmarks of dr_hf against the hand-written equivalents, measured side by side in one run.

A package beside `scripts/benchmark.py`, not part of the installed `dr_hf`: it imports dr_hf as
any user does. `run_benchmarks` runs the sections asked for and writes `benchmark.json` and
`benchmark.md`; `scripts/benchmark.py` is its command line (and that of the benchmarks run on
their own: `archive`, `onnx`, `gpu`), `scripts/benchmark_gpu.sh` the GPU counterpart.
"""

import os
from pathlib import Path

from benchmarks.suite import SECTIONS, run_benchmarks

SCRIPTS_DIR = Path(__file__).resolve().parents[1]


def subprocess_env(env: dict | None = None) -> dict:
    """`env` (default: this process's) with `scripts/` on PYTHONPATH, so that a fresh Python
    process can `import benchmarks` too."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SCRIPTS_DIR), env.get("PYTHONPATH")]))
    return env


__all__ = ["SCRIPTS_DIR", "SECTIONS", "run_benchmarks", "subprocess_env"]
