"""Which checkpoint `--resume` takes (folders laid out as the Trainer writes them), and the
history rebuilt from the checkpointed log history."""

import json

import pytest

from dr_hf.training.resume import is_complete, resolve_resume


def make_checkpoint(output_dir, step, state: str | None = "valid"):
    folder = output_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    if state == "valid":
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    elif state == "torn":
        (folder / "trainer_state.json").write_text('{"global_step": ')
    return folder


def test_last_takes_the_newest_complete_checkpoint_and_sets_torn_ones_aside(tmp_path):
    make_checkpoint(tmp_path, 3)
    good = make_checkpoint(tmp_path, 10)
    make_checkpoint(tmp_path, 12, state="torn")
    make_checkpoint(tmp_path, 14, state=None)
    assert resolve_resume("last", tmp_path) == str(good)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint-10", "checkpoint-3", "incomplete-checkpoint-12", "incomplete-checkpoint-14",
    ]  # fmt: skip


def test_other_ranks_skip_torn_checkpoints_without_moving_them(tmp_path):
    good = make_checkpoint(tmp_path, 2)
    torn = make_checkpoint(tmp_path, 4, state=None)
    assert resolve_resume(True, tmp_path, move_incomplete=False) == str(good)
    assert torn.is_dir()


def test_step_mismatch_is_incomplete(tmp_path):
    folder = make_checkpoint(tmp_path, 5)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
    assert not is_complete(folder)


def test_no_resume_over_earlier_checkpoints_and_nothing_to_resume(tmp_path):
    assert resolve_resume(None, tmp_path / "new") is None
    make_checkpoint(tmp_path, 1, state=None)
    with pytest.raises(FileExistsError, match="--resume last"):
        resolve_resume(None, tmp_path)
    with pytest.raises(FileNotFoundError, match="No complete checkpoint"):
        resolve_resume("last", tmp_path)
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        resolve_resume(str(tmp_path / "checkpoint-99"), tmp_path)


def test_history_pairs_evaluations_with_training_logs_by_epoch():
    from dr_hf.training.history import build_history

    logs = [
        {"eval_loss": 2.0, "eval_accuracy": 0.1, "epoch": 0.0},  # eval_on_start
        {"loss": 1.5, "train_acc": 40.0, "learning_rate": 1e-3, "epoch_time": 3.0, "epoch": 1.0},
        {"eval_loss": 1.2, "eval_accuracy": 0.5, "eval_qwk": 0.3, "epoch": 1.0},
        {"loss": 1.1, "train_acc": 55.0, "learning_rate": 5e-4, "epoch_time": 2.5, "epoch": 2.0},
        {"train_loss": 1.3, "train_runtime": 9.0, "epoch": 2.0},
    ]
    history = build_history(logs)
    assert history["epoch"] == [0.0, 1.0, 2.0]
    assert history["train_loss"] == [None, 1.5, 1.1] and history["train_acc"] == [None, 40.0, 55.0]
    assert history["val_loss"] == [2.0, 1.2, None]
    assert history["val_acc"] == [10.0, 50.0, None] and history["val_qwk"] == [None, 0.3, None]
    assert history["epoch_time"] == [None, 3.0, 2.5]
