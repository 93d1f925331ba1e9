"""Which checkpoint `--resume` takes (folders laid out as the Trainer writes them), and the
history rebuilt from the checkpointed log history."""

import json

import pytest
import torch
from safetensors.torch import save_file

from dr_hf.training.resume import is_complete, resolve_resume


def make_checkpoint(output_dir, step, state: str | None = "valid"):
    folder = output_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    save_file({"weight": torch.zeros(2)}, folder / "model.safetensors")
    torch.save({"state": {}}, folder / "optimizer.pt")
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


# ---- Damage to a real checkpoint: cut short, deleted, half-written best/ ----------------------


def _cut(path, keep: float = 0.5):
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


DAMAGE = {
    "weights cut short": lambda folder: _cut(folder / "model.safetensors"),
    "weights deleted": lambda folder: (folder / "model.safetensors").unlink(),
    "optimizer cut short": lambda folder: _cut(folder / "optimizer.pt"),
    "optimizer deleted": lambda folder: (folder / "optimizer.pt").unlink(),
    "rng state cut short": lambda folder: _cut(folder / "rng_state.pth", 0.9),
    "trainer state deleted": lambda folder: (folder / "trainer_state.json").unlink(),
    "config cut short": lambda folder: _cut(folder / "config.json"),
}
NAMED = {
    "weights cut short": "model.safetensors",
    "weights deleted": "no weights file",
    "optimizer cut short": "optimizer.pt",
    "optimizer deleted": "optimizer state",
    "rng state cut short": "rng_state.pth",
    "trainer state deleted": "trainer_state.json",
    "config cut short": "config.json",
}


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A copy of a real 3-epoch run's folder (checkpoints as the Trainer wrote them, best/)."""
    import shutil

    output_dir, _ = trained_run
    copy = tmp_path / "run"
    shutil.copytree(output_dir, copy)
    return copy


@pytest.mark.parametrize("damage", DAMAGE)
def test_resume_last_falls_back_past_a_damaged_checkpoint_naming_it(damage, run_copy, caplog):
    from dr_hf.run_folder import folder_damage

    checkpoints = sorted(run_copy.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    newest, previous = checkpoints[-1], checkpoints[-2]
    assert folder_damage(newest, checkpoint=True) is None  # whole as the Trainer wrote it
    DAMAGE[damage](newest)
    assert NAMED[damage] in folder_damage(newest, checkpoint=True)
    with caplog.at_level("WARNING"):
        assert resolve_resume("last", run_copy) == str(previous)
    assert newest.name in caplog.text and NAMED[damage] in caplog.text
    assert (run_copy / f"incomplete-{newest.name}").is_dir()  # set aside, not deleted
    with pytest.raises(ValueError, match=NAMED[damage].split()[0]):
        resolve_resume(str(run_copy / f"incomplete-{newest.name}"), run_copy)


def test_every_checkpoint_damaged_stops_with_a_message(run_copy):
    for checkpoint in run_copy.glob("checkpoint-*"):
        _cut(checkpoint / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="No complete checkpoint"):
        resolve_resume("last", run_copy)


def test_a_half_written_model_folder_is_refused_naming_the_file(run_copy):
    from dr_hf.models.graders import load_trained_model

    best = run_copy / "best"
    load_trained_model(best)  # whole
    _cut(best / "model.safetensors")
    with pytest.raises(ValueError, match=r"best.*model\.safetensors"):
        load_trained_model(best)


def test_export_leaves_no_partial_folder(trained_run):
    output_dir, _ = trained_run
    assert (output_dir / "best" / "model.safetensors").is_file()
    assert not list(output_dir.glob("*.partial"))
