"""The training job end to end on tiny models and the synthetic set: outputs, history, LoRA export,
the Python API, W&B offline and the Hub upload boundary."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_config
from transformers import AutoModelForImageClassification

from dr_hf.config.parsing import config_from_dict, config_from_yaml
from dr_hf.models.graders import load_trained_model
from dr_hf.predictions import read_predictions
from dr_hf.run_folder import read_validation_predictions
from dr_hf.training.run import build_trainer, run_training, train

HISTORY_KEYS = {"train_loss", "train_acc", "val_loss", "val_acc", "learning_rate", "epoch_time"}


def test_training_lowers_the_loss_and_keeps_the_original_history_keys(trained_run):
    output_dir, history = trained_run
    assert HISTORY_KEYS <= set(history)
    assert {"val_qwk", "val_macro_auroc", "val_class_0_acc", "val_referable_sensitivity"} <= set(
        history
    )
    assert len(history["train_loss"]) == 3 and len(history["val_qwk"]) == 3
    assert history["train_loss"][-1] < history["train_loss"][0]
    # Accuracies are percentages of whole images: of the 60, those in the validation table
    # are the validation split and the others trained.
    n_val = len(read_validation_predictions(output_dir)[0])
    for acc, n in [(a, n_val) for a in history["val_acc"]] + [
        (a, 60 - n_val) for a in history["train_acc"]
    ]:
        assert acc * n / 100 == pytest.approx(round(acc * n / 100)), (acc, n)
    # The best model's accuracy is that of the grades its saved rule gives the validation split
    # (fitted cut points, after calibration), as the validation table states them.
    best = json.loads((output_dir / "eval_results.json").read_text())
    table = read_predictions(output_dir / "validation_predictions.csv", require_labels=True)
    right = table["grade"].astype(int) == table["true_grade"].astype(int)
    assert best["accuracy"] == pytest.approx(right.mean())
    assert json.loads((output_dir / "training_history.json").read_text()) == history


def test_run_leaves_config_metrics_checkpoints_and_a_loadable_best_model(
    trained_run, synthetic_dir
):
    output_dir, _ = trained_run
    config = yaml.safe_load((output_dir / "config.yaml").read_text())
    assert config["model_name"] == "test_resnet" and config["data_dir"] == str(synthetic_dir)
    results = json.loads((output_dir / "eval_results.json").read_text())
    assert np.array(results["confusion_matrix"]).shape == (5, 5)
    assert results["best_checkpoint"] and Path(results["best_checkpoint"]).is_dir()
    checkpoints = sorted(output_dir.glob("checkpoint-*"))
    assert 1 <= len(checkpoints) <= 3  # save_total_limit=3, one per epoch

    best = output_dir / "best"
    model = AutoModelForImageClassification.from_pretrained(best).eval()
    assert model.config.id2label[4] == "Proliferative DR"
    preprocessing = json.loads((best / "preprocessor_config.json").read_text())
    assert (
        preprocessing["size"] == {"height": 32, "width": 32} and preprocessing["crop_fov"] is True
    )
    card = (best / "README.md").read_text()
    assert (
        "Not a medical device" in card
        and "test_resnet" in card
        and "Quadratic weighted kappa" in card
    )
    assert "| `lr_scheduler_type` | `cosine` |" in card
    # The exported model is the best checkpoint, and its reported QWK is that of its saved
    # rule: the cut points fitted on the validation split.
    best_qwk = max(json.loads((output_dir / "training_history.json").read_text())["val_qwk"])
    state = json.loads((Path(results["best_checkpoint"]) / "trainer_state.json").read_text())
    assert state["best_metric"] == pytest.approx(best_qwk, abs=1e-6)
    assert results["grade_rule"]["rule"] == "thresholds"
    assert results["qwk"] == pytest.approx(results["grade_rule"]["qwk_fitted"], abs=1e-6)


def test_output_dir_with_checkpoints_is_not_overwritten(trained_run, synthetic_dir):
    output_dir, _ = trained_run
    before = sorted(p.name for p in output_dir.iterdir())
    with pytest.raises(FileExistsError, match="--resume last"):
        run_training(*config_from_dict(tiny_config(synthetic_dir, output_dir)))
    assert sorted(p.name for p in output_dir.iterdir()) == before


def test_lora_run_trains_only_the_adapter_and_exports_it(synthetic_dir, trained_lora_run, tmp_path):
    values = tiny_config(
        synthetic_dir, tmp_path / "lora", model_name="retfound_tiny", lora=True, lora_r=4
    )
    run = build_trainer(*config_from_dict(values))
    trainable = {n for n, p in run.trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "modules_to_save" in n for n in trainable)
    assert run.trainer.args.label_names == ["labels"]

    output_dir = trained_lora_run[0]
    best = output_dir / "best"
    assert (best / "adapter_config.json").is_file()
    assert (best / "adapter_model.safetensors").is_file()
    assert not (best / "model.safetensors").exists() and not (best / "training_args.bin").exists()
    pixels = torch.randn(2, 3, 32, 32)
    logits = []
    # best/ and every checkpoint load on their own: each holds the record of its base.
    for folder in [best, *sorted(output_dir.glob("checkpoint-*"))]:
        assert (folder / "dr_hf_base.json").is_file(), folder
        with torch.no_grad():
            logits.append(load_trained_model(folder).eval()(pixel_values=pixels).logits)
    assert logits[0].shape == (2, 5) and torch.isfinite(logits[0]).all()
    # One epoch: best/ is the last checkpoint, with the calibrating temperature folded in.
    temperature = json.loads((output_dir / "eval_results.json").read_text())["calibration"]
    assert torch.allclose(logits[0], logits[-1] / temperature["temperature"], atol=1e-6)


def test_python_api_matches_the_original_signature(synthetic_dir, tmp_path):
    history = train(
        tiny_config(synthetic_dir, tmp_path / "api", num_train_epochs=1),
        enable_wandb=False,
        wandb_run_name="api-run",
    )
    assert HISTORY_KEYS <= set(history)
    assert len(history["val_acc"]) == 1
    saved = yaml.safe_load((tmp_path / "api" / "config.yaml").read_text())
    assert saved["run_name"] == "api-run" and saved["report_to"] == []


def test_layer_decay_reaches_the_optimizer(synthetic_dir, tmp_path):
    values = tiny_config(
        synthetic_dir,
        tmp_path / "ld",
        model_name="retfound_tiny",
        layer_decay=0.5,
        learning_rate=1e-3,
    )
    run = build_trainer(*config_from_dict(values))
    optimizer = run.trainer.create_optimizer()
    rates = sorted({group["lr"] for group in optimizer.param_groups})
    # retfound_tiny has 2 blocks: embeddings 0.5^3, blocks 0.5^2 and 0.5, head 1.
    assert rates == pytest.approx([1e-3 * 0.5**3, 1e-3 * 0.5**2, 1e-3 * 0.5, 1e-3])


def test_wandb_offline_run_holds_the_logged_metrics(synthetic_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    (tmp_path / "wandb").mkdir()
    values = tiny_config(synthetic_dir, tmp_path / "wb", num_train_epochs=1)
    train(
        values,
        enable_wandb=True,
        wandb_project="dr-tests",
        wandb_run_name="offline-run",
        wandb_tags=["tiny", "ci"],
    )
    import wandb

    wandb.teardown()  # stop the W&B service process: it has then written every record
    runs = list((tmp_path / "wandb").rglob("offline-run-*"))
    assert len(runs) == 1
    log = next(runs[0].glob("run-*.wandb"))  # the run's protobuf record log
    deadline = time.monotonic() + 30
    while b"best/qwk" not in (records := log.read_bytes()) and time.monotonic() < deadline:
        time.sleep(0.5)
    for logged in (
        b"eval/qwk",
        b"eval/referable_auroc",
        b"train/loss",
        b"train/train_acc",
        b"best/qwk",
    ):
        assert logged in records, logged
    assert b"dr-tests" in records and b"offline-run" in records and b"tiny" in records


def test_push_to_hub_uploads_exactly_the_export_without_token(synthetic_dir, tmp_path, monkeypatch):
    from huggingface_hub import HfApi
    from huggingface_hub.utils import filter_repo_objects

    calls = {}

    def fake_create_repo(self, repo_id, **kwargs):
        calls["repo"] = repo_id
        return f"https://huggingface.co/{repo_id}"

    def fake_upload_folder(
        self, repo_id, folder_path, ignore_patterns=None, allow_patterns=None, **kwargs
    ):
        # What upload_folder would send: the folder's files through its own pattern filter.
        files = sorted(
            p.relative_to(folder_path).as_posix()
            for p in Path(folder_path).rglob("*")
            if p.is_file()
        )
        kept = filter_repo_objects(
            files, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns
        )
        calls["files"] = {name: Path(folder_path) / name for name in kept}
        calls["card"] = (Path(folder_path) / "README.md").read_text()
        return type("Commit", (), {"commit_url": "https://huggingface.co/fake/commit"})()

    monkeypatch.setattr(HfApi, "create_repo", fake_create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", fake_upload_folder)
    token = "hf_TESTTOKEN1234567890abcdef"
    env_token = "hf_ENVTOKEN0987654321fedcba"  # the token a user keeps in the environment
    monkeypatch.setenv("HF_TOKEN", env_token)
    values = tiny_config(
        synthetic_dir, tmp_path / "hub", model_name="retfound_tiny", lora=True, lora_r=4,
        num_train_epochs=1, push_to_hub=True, hub_model_id="someone/dr-grader", hub_token=token,
    )  # fmt: skip
    run_training(*config_from_dict(values))
    best = tmp_path / "hub" / "best"
    assert calls["repo"] == "someone/dr-grader"
    assert set(calls["files"]) == {
        "adapter_config.json", "adapter_model.safetensors", "dr_hf_base.json",
        "preprocessor_config.json", "fundus_processor.py", "preprocessing.py", "README.md",
    }  # fmt: skip
    assert all(path.parent == best for path in calls["files"].values())
    assert "Not a medical device" in calls["card"] and "library_name: peft" in calls["card"]
    for secret in (token, env_token):  # neither token is written into the run or the card
        assert secret not in calls["card"]
        for path in (tmp_path / "hub").rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path


@pytest.mark.slow
def test_quickstart_config_shortened_lowers_the_loss(synthetic_dir, tmp_path):
    """The README's main job, configs/quickstart.yaml, on the small synthetic set and fewer pixels."""
    quickstart = Path(__file__).parent.parent / "configs" / "quickstart.yaml"
    data, model, training = config_from_yaml(
        quickstart,
        data_dir=str(synthetic_dir),
        output_dir=str(tmp_path / "qs"),
        image_size=48,
        num_train_epochs=4,
        per_device_train_batch_size=8,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    assert model.model_name == "resnet10t"
    history = run_training(data, model, training)
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert (tmp_path / "qs" / "best" / "model.safetensors").is_file()
