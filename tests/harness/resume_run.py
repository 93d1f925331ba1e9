"""One training run in its own process, optionally killed with SIGKILL mid-run.

Usage: python resume_run.py CONFIG_JSON [--kill-at-step N] [--record FILE]

CONFIG_JSON holds field values for `dr_hf.config.parsing.config_from_dict` (resume_from_checkpoint
included). With `--kill-at-step N` the process kills itself at the end of optimizer step N, before
that step's logging, evaluation and checkpoint: the way a crash or an OOM killer stops a run.
`--record FILE` writes the optimizer steps this process ran, which shows where a resume started.
"""

import argparse
import json
import os
import signal
from pathlib import Path

import torch
from transformers import TrainerCallback

from dr_hf.config.parsing import config_from_dict
from dr_hf.training.run import run_training


class KillAtStep(TrainerCallback):
    """SIGKILL this process when global_step reaches `step`: no cleanup, no flush, no save."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class RecordSteps(TrainerCallback):
    def __init__(self, path: str):
        self.path = Path(path)
        self.steps = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        self.path.write_text(json.dumps(self.steps))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--kill-at-step", type=int, default=None)
    parser.add_argument("--record", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the same reduction order in every run, and cheap on shared cores
    values = json.loads(Path(args.config).read_text())
    callbacks = []
    if args.kill_at_step:
        callbacks.append(KillAtStep(args.kill_at_step))
    if args.record:
        callbacks.append(RecordSteps(args.record))
    run_training(*config_from_dict(values), callbacks=callbacks)


if __name__ == "__main__":
    main()
