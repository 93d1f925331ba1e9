"""Data-parallel training with two real CPU processes (torchrun, gloo), observed from inside each
rank by tests/harness/ddp_train.py: disjoint halves of the data, identical weights after every
step, the true mean loss in the logs, and artifacts written by rank 0 only."""

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_config

pytestmark = pytest.mark.slow

HARNESS = Path(__file__).parent / "harness" / "ddp_train.py"
STEPS_PER_EPOCH = 4  # 48 training images, 2 ranks x 6 per device
CHECKPOINT_FILES = {
    "config.json", "model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json",
    "training_args.bin", "rng_state_0.pth", "rng_state_1.pth",  # each rank's RNG, for resuming
}  # fmt: skip
PROCESSOR_FILES = {"preprocessor_config.json", "fundus_processor.py", "preprocessing.py"}
MODEL_CODE = {"grading_pipeline.py"}  # an ordinal model's folders also carry ordered_heads.py


def run_files(head: str) -> set[str]:
    folder_files = (
        PROCESSOR_FILES | MODEL_CODE | ({"ordered_heads.py"} if head != "softmax" else set())
    )
    return {
        "config.yaml", "eval_results.json", "training_history.json", "validation_predictions.csv",
        *PROCESSOR_FILES,
        "best/config.json", "best/model.safetensors", "best/README.md",
        *(f"best/{name}" for name in folder_files),
        *(f"checkpoint-{step}/{name}" for step in (4, 8) for name in CHECKPOINT_FILES | folder_files),
    }  # fmt: skip


@pytest.fixture(scope="module", params=["softmax", "ordinal"])
def ddp_run(request, synthetic_dir, tmp_path_factory):
    """Two epochs of retfound_tiny on two gloo ranks, with a softmax or an ordinal (CORN) head,
    whose loss is the cross-entropy of its class log-probabilities:
    (output_dir, [rank 0 record, rank 1 record])."""
    root = tmp_path_factory.mktemp(f"ddp_{request.param}")
    scratch = root / "observations"  # outside output_dir
    scratch.mkdir()
    values = tiny_config(
        synthetic_dir,
        root / "out",
        model_name="retfound_tiny",
        drop_path_rate=0.0,  # LayerNorm, no dropout: each image's loss is batch-independent
        class_weighting="none",
        augment=False,
        num_train_epochs=2,
        per_device_train_batch_size=6,
        logging_strategy="steps",
        logging_steps=1,
        ddp_backend="gloo",
        head=request.param,
    )
    config = root / "config.json"
    config.write_text(json.dumps(values))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(HARNESS), str(config), str(scratch),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    records = [json.loads((scratch / f"rank-{rank}.json").read_text()) for rank in (0, 1)]
    return root / "out", records


def test_each_rank_trains_on_a_disjoint_half_of_every_epoch(ddp_run):
    _, (rank0, rank1) = ddp_run
    assert [r["rank"] for r in (rank0, rank1)] == [0, 1] and rank0["world_size"] == 2
    num_images = len(rank0["initial_losses"])
    assert num_images == 48
    assert len(rank0["batches"]) == len(rank1["batches"]) == 2 * STEPS_PER_EPOCH
    for epoch in range(2):
        steps = slice(epoch * STEPS_PER_EPOCH, (epoch + 1) * STEPS_PER_EPOCH)
        halves = [[i for batch in r["batches"][steps] for i in batch] for r in (rank0, rank1)]
        assert all(len(half) == len(set(half)) == num_images // 2 for half in halves)
        assert not set(halves[0]) & set(halves[1])
        assert set(halves[0]) | set(halves[1]) == set(range(num_images))
    assert rank0["batches"][0] != rank0["batches"][STEPS_PER_EPOCH]  # reshuffled each epoch


def test_ranks_hold_identical_weights_after_every_step(ddp_run):
    _, (rank0, rank1) = ddp_run
    assert rank0["weights"] == rank1["weights"]
    assert len(set(rank0["weights"])) == len(rank0["weights"])  # and the weights do move


def test_logged_loss_is_the_mean_over_both_ranks_batches(ddp_run):
    output_dir, (rank0, rank1) = ddp_run
    first_global_batch = rank0["batches"][0] + rank1["batches"][0]
    expected = statistics.fmean(rank0["initial_losses"][i] for i in first_global_batch)
    losses = [log["loss"] for log in rank0["log_history"] if "loss" in log]
    assert losses[0] == pytest.approx(expected, abs=1e-4)  # a sum over ranks would double it
    assert [log["loss"] for log in rank1["log_history"] if "loss" in log] == losses
    history = json.loads((output_dir / "training_history.json").read_text())
    assert history["train_loss"] == losses


def test_only_rank_zero_writes_the_run_artifacts(ddp_run):
    output_dir, (rank0, rank1) = ddp_run
    files = {p.relative_to(output_dir).as_posix() for p in output_dir.rglob("*") if p.is_file()}
    head = json.loads((output_dir / "best" / "config.json").read_text()).get("dr_hf_head")
    assert files == run_files(head or "softmax")
    # Rank 1's own Python-level writes: only the checkpoint folders for its RNG state file.
    assert set(rank1["writes"]) == {"os.mkdir checkpoint-4", "os.mkdir checkpoint-8"}
    written = {event.split(" ", 1)[1] for event in rank0["writes"] if event.startswith("open")}
    assert {
        "config.yaml",
        "eval_results.json",
        "training_history.json",
        "best.partial/README.md",  # best/ is written whole, then renamed
    } <= written


def test_gpu_augmentation_on_a_raw_cache_under_two_ranks(synthetic_dir, tmp_path):
    """`augment_on=gpu` with a `dr-hf prepare --format raw` cache, one persistent worker per rank:
    both ranks train (the device is the CPU here), in step, to the end."""
    from dr_hf.config.parsing import config_from_dict
    from dr_hf.data.loading import load_dr_dataset
    from dr_hf.data.prepare import prepare_dataset

    raw = prepare_dataset(
        load_dr_dataset(config_from_dict({"data_dir": str(synthetic_dir)})[0]),
        tmp_path / "raw", size=40, format="raw", image_size=32,
    )  # fmt: skip
    scratch = tmp_path / "observations"
    scratch.mkdir()
    values = tiny_config(
        raw, tmp_path / "out", augment_on="gpu", num_train_epochs=2, model_name="retfound_tiny",
        per_device_train_batch_size=6, dataloader_num_workers=1, ddp_backend="gloo",
    )  # fmt: skip
    config = tmp_path / "config.json"
    config.write_text(json.dumps(values))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(HARNESS), str(config), str(scratch),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    rank0, rank1 = (json.loads((scratch / f"rank-{r}.json").read_text()) for r in (0, 1))
    assert len(rank0["weights"]) == 2 * STEPS_PER_EPOCH
    assert rank0["weights"] == rank1["weights"] and len(set(rank0["weights"])) > 1
    assert (tmp_path / "out" / "best" / "model.safetensors").is_file()
