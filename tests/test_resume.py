"""Resume after SIGKILL, for full fine-tuning and LoRA: a run killed mid-epoch and resumed from its
last checkpoint ends with the weights and evaluation metrics of an uninterrupted run, bit for bit on
CPU; a checkpoint cut short while being written is never resumed from.

Each run is its own process (tests/harness/resume_run.py), one torch thread each. Augmentation is
on, and LoRA trains retfound_tiny with LoRA dropout and drop_path, so data order after
skip_first_batches, per-(seed, epoch, image) augmentation and the restored RNG state all count.

The training loss and accuracy are logged every `save_steps` here. The Trainer restarts its loss
accumulator on resume (and TrainAccuracy its counters), so a log window that straddles the resumed
checkpoint (e.g. per-epoch logging with mid-epoch saves) averages only the steps run after the
resume; the weights and evaluation metrics are exact either way.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from safetensors.torch import load_file

from dr_hf.config.parsing import config_from_dict
from dr_hf.training.run import run_training

pytestmark = pytest.mark.slow

HARNESS = Path(__file__).parent / "harness" / "resume_run.py"
KILL_AT = 11  # epoch 2, step 3 of 8; checkpoint-9 is the newest one on disk
TIMING_KEYS = ("epoch_time", "_runtime", "_per_second")

MODELS = {
    "full": ({"model_name": "test_resnet"}, "model.safetensors"),
    "lora": (
        {"model_name": "retfound_tiny", "lora": True, "lora_r": 4},
        "adapter_model.safetensors",
    ),
}


def _config(tmp_path: Path, data_dir, name: str, model: dict, **overrides) -> dict:
    return tiny_config(
        data_dir,
        tmp_path / name,
        num_train_epochs=2,
        per_device_train_batch_size=6,  # 48 training images: 8 steps an epoch
        save_strategy="steps",
        save_steps=3,
        eval_strategy="steps",
        eval_steps=3,
        logging_strategy="steps",
        logging_steps=3,
        augment=True,
        **model,
        **overrides,
    )


def _launch(values: dict, *flags: str) -> subprocess.Popen:
    output_dir = Path(values["output_dir"])
    config = output_dir.with_name(f"{output_dir.name}{''.join(flags[:1])}.json")
    config.write_text(json.dumps(values))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(HARNESS), str(config), *flags],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process: subprocess.Popen) -> int:
    output, _ = process.communicate(timeout=120)
    assert process.returncode in (0, -signal.SIGKILL), output[-3000:]
    return process.returncode


def _assert_identical(a: Path, b: Path) -> None:
    wa, wb = load_file(a), load_file(b)
    assert wa.keys() == wb.keys()
    differing = [key for key in wa if not torch.equal(wa[key], wb[key])]
    assert not differing, f"{a} and {b} differ in {differing}"


def _without_timings(logs: list[dict]) -> list[dict]:
    return [{k: v for k, v in log.items() if not k.endswith(TIMING_KEYS)} for log in logs]


def _simulate_kill_while_saving(output_dir: Path, how: str) -> Path:
    """checkpoint-10: a copy of checkpoint-9 whose trainer_state.json (written last) is missing or
    torn, as a kill during `_save_checkpoint` leaves it."""
    torn = output_dir / "checkpoint-10"
    shutil.copytree(output_dir / "checkpoint-9", torn)
    state = torn / "trainer_state.json"
    if how == "missing":
        state.unlink()
    else:
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    return torn


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_run_killed_mid_epoch_resumes_to_the_uninterrupted_result(kind, synthetic_dir, tmp_path):
    model, weights_file = MODELS[kind]
    reference = _launch(_config(tmp_path, synthetic_dir, "reference", model))
    killed = _launch(_config(tmp_path, synthetic_dir, "run", model), "--kill-at-step", str(KILL_AT))
    assert _finish(killed) == -signal.SIGKILL
    run_dir = tmp_path / "run"
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == [
        "checkpoint-3", "checkpoint-6", "checkpoint-9",
    ]  # fmt: skip

    torn = _simulate_kill_while_saving(run_dir, "missing" if kind == "full" else "truncated")
    with pytest.raises(ValueError, match="incomplete"):
        run_training(*config_from_dict(
            _config(tmp_path, synthetic_dir, "run", model, resume_from_checkpoint=str(torn))
        ))  # fmt: skip
    assert torn.is_dir()  # refused, left as it was

    steps = tmp_path / "resumed-steps.json"
    resumed = _launch(
        _config(tmp_path, synthetic_dir, "run", model, resume_from_checkpoint="last"),
        "--record", str(steps),
    )  # fmt: skip
    assert _finish(resumed) == 0
    assert _finish(reference) == 0

    # The resume started after checkpoint-9 and moved the torn folder aside.
    assert json.loads(steps.read_text()) == list(range(10, 17))
    assert not torn.exists() and (run_dir / "incomplete-checkpoint-10").is_dir()

    ref_dir = tmp_path / "reference"
    for folder in ("checkpoint-16", "best"):
        _assert_identical(ref_dir / folder / weights_file, run_dir / folder / weights_file)
    ref_state = json.loads((ref_dir / "checkpoint-16" / "trainer_state.json").read_text())
    run_state = json.loads((run_dir / "checkpoint-16" / "trainer_state.json").read_text())
    assert _without_timings(run_state["log_history"]) == _without_timings(ref_state["log_history"])
    assert (
        Path(run_state["best_model_checkpoint"]).name
        == Path(ref_state["best_model_checkpoint"]).name
    )

    ref_history = json.loads((ref_dir / "training_history.json").read_text())
    run_history = json.loads((run_dir / "training_history.json").read_text())
    assert len(ref_history["val_qwk"]) == 6 and ref_history["train_loss"].count(None) == 1
    ref_history.pop("epoch_time"), run_history.pop("epoch_time")
    assert run_history == ref_history
    ref_results = json.loads((ref_dir / "eval_results.json").read_text())
    run_results = json.loads((run_dir / "eval_results.json").read_text())
    for results in (ref_results, run_results):
        results["best_checkpoint"] = Path(results["best_checkpoint"]).name
    assert run_results == ref_results
