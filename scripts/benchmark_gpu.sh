#!/usr/bin/env bash
# Training and inference throughput on one CUDA GPU: resnet50 (full, bf16 and fp16) and RETFound
# ViT-L at 224 px (LoRA r=8, and full) at batch 32, random weights, synthetic tensors.
# Estimated at 3 to 5 minutes on one H100 (most of it building ViT-L on the CPU); not yet timed.
#
#   scripts/benchmark_gpu.sh [--output outputs/benchmark_gpu] [--steps 10 --repeats 3]
#   scripts/benchmark_gpu.sh --smoke --output /tmp/bench_gpu   # CPU, tiny models: checks the script
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python
export NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
exec "$PYTHON" -m dr_hf.benchmarks.gpu "$@"
