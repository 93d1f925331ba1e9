"""The documented distributed paths beyond one machine's torchrun, run for real on this machine
with CPU ranks (gloo): `dr-hf cv` under a 2-rank torchrun, and the multi-node configuration as two
`accelerate launch` processes (`--num_machines 2`, `--machine_rank 0/1`, `--main_process_ip
127.0.0.1`), a run and its resume. Only loopback addresses are used."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import tiny_config

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _config(path: Path, values: dict) -> Path:
    path.write_text(yaml.safe_dump(values))
    return path


def _ranks(runs: list[subprocess.Popen]) -> None:
    outputs = [run.communicate(timeout=400)[0] for run in runs]
    for run, output in zip(runs, outputs):
        assert run.returncode == 0, output[-4000:]


def test_cv_under_two_rank_torchrun(synthetic_dir, tmp_path):
    values = tiny_config(synthetic_dir, tmp_path / "cv", num_train_epochs=1, ddp_backend="gloo")
    config = _config(tmp_path / "cv.yaml", values)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command = [*torchrun, "--nproc_per_node", "2", "-m", "dr_hf.cli", "cv", "--folds", "2"]
    _ranks([_start([*command, "--config", str(config)])])

    output_dir = tmp_path / "cv"
    for fold in (0, 1):
        states = (output_dir / f"fold-{fold}").glob("checkpoint-*/trainer_state.json")
        # 30 training images in each fold, 2 ranks x 8 a step: 2 steps (one rank alone takes 4).
        assert json.loads(next(states).read_text())["global_step"] == 2
        assert (output_dir / f"fold-{fold}" / "best" / "model.safetensors").is_file()
    summary = json.loads((output_dir / "cv_summary.json").read_text())
    assert summary["num_images"] == 60  # each image graded once, by the model of the other fold


def _start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        command, env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _two_machines(config: Path, port: int) -> list[subprocess.Popen]:
    """The multi-node launch of accelerate_configs/multi_node.yaml, one process per "machine"."""
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    launch += ["--num_machines", "2", "--num_processes", "2", "--mixed_precision", "no"]
    launch += ["--main_process_ip", "127.0.0.1", "--main_process_port", str(port)]
    launch += ["--rdzv_backend", "static", "--same_network"]
    train = [str(REPO / "scripts" / "train.py"), "--config", str(config)]
    return [_start([*launch, "--machine_rank", str(rank), *train]) for rank in (0, 1)]


def test_two_machines_train_and_resume(synthetic_dir, tmp_path):
    output_dir = tmp_path / "run"
    values = tiny_config(synthetic_dir, output_dir, num_train_epochs=1, ddp_backend="gloo")
    values["per_device_train_batch_size"] = 6
    _ranks(_two_machines(_config(tmp_path / "first.yaml", values), _free_port()))
    first = json.loads((output_dir / "checkpoint-4" / "trainer_state.json").read_text())
    assert first["global_step"] == 4  # 48 training images, 2 ranks x 6: 4 steps an epoch

    values.update(num_train_epochs=2, resume_from_checkpoint="last")
    _ranks(_two_machines(_config(tmp_path / "resume.yaml", values), _free_port()))
    state = json.loads((output_dir / "checkpoint-8" / "trainer_state.json").read_text())
    assert state["global_step"] == 8
    # The second run continued: epoch 1's evaluation is the first run's, not a new one.
    evaluations = [log for log in state["log_history"] if "eval_qwk" in log]
    assert [log["epoch"] for log in evaluations] == [1.0, 2.0]
    assert evaluations[0] == next(log for log in first["log_history"] if "eval_qwk" in log)
    assert (output_dir / "best" / "model.safetensors").is_file()
