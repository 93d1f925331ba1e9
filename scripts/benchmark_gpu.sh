#!/usr/bin/env bash
# Throughput on one CUDA GPU, 224 px, bf16, random weights: resnet50 (full) and RETFound ViT-L
# (LoRA r=8, and full). 1. the model alone on device tensors, eager at batch 32 and at the largest
# batch that fits, compiled at the largest; 2. `dr-hf train` itself on a synthetic raw uint8 cache
# (4,096 rows on local disk), augmentation on the CPU against on the GPU, the machine's cores as
# workers; 3. inference. Images/s, peak memory, MFU (FLOPs counted by FlopCounterMode against the
# card's dense bf16 peak; --peak-tflops N to override) and the share of step time spent waiting
# for data. JSON and Markdown are rewritten after every case. Not yet timed on a GPU: estimated at
# 6 to 9 minutes on an H100 (3 compilations, 6 Trainer runs); --no-compile or --models resnet50
# vit-lora shorten it (the earlier batch-32-only script took 1 min 14 s on an H200).
#
#   scripts/benchmark_gpu.sh [--output outputs/benchmark_gpu] [--sections model train inference]
#   scripts/benchmark_gpu.sh --smoke --output /tmp/bench_gpu   # CPU, tiny models, ~1.5 minutes
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python
export NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
exec "$PYTHON" scripts/benchmark.py gpu "$@"
