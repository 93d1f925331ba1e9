"""Train a diabetic retinopathy grader with the HF Trainer.

Usage:
    python scripts/train.py --config configs/quickstart.yaml
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml scripts/train.py --config configs/default_config.yaml
    torchrun --nproc_per_node 2 scripts/train.py --config configs/quickstart.yaml --use_cpu

Any field of DataArguments, ModelArguments or DRTrainingArguments is a flag (`--help` lists them);
flags override the YAML. `--debug` prints the resolved configuration and exits.
"""

import sys

from dr_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
