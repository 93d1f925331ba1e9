"""The `dr-hf` console script's data commands, the accelerate configs and scheduler options."""

import json
from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from conftest import tiny_config

from dr_hf.cli import main
from dr_hf.config.parsing import config_from_dict
from dr_hf.training.run import build_trainer, run_training

ACCELERATE_CONFIGS = sorted((Path(__file__).parent.parent / "accelerate_configs").glob("*.yaml"))


def test_help_and_unknown_command(capsys):
    assert main([]) == 0
    assert "make-synthetic" in capsys.readouterr().out
    assert main(["no-such-command"]) == 2


@pytest.mark.parametrize("command", ["train", "cv"])
def test_a_torch_commands_help_is_saved_once_and_matches_its_parser(command, capsys, monkeypatch):
    from dr_hf.cli import COMMANDS
    from dr_hf.config.help_cache import cache_folder, cached_help

    live = COMMANDS[command].parser().format_help()
    assert main([command, "--help"]) == 0
    assert capsys.readouterr().out == live
    saved = list(cache_folder().glob(f"{command}-*.txt"))
    assert len(saved) == 1 and saved[0].read_text() == live
    built = []
    assert cached_help(command, lambda: built.append(1) or "rebuilt") == live and not built
    monkeypatch.setenv("COLUMNS", "61")  # another width wraps the text otherwise: a new key
    assert cached_help(command, lambda: "rebuilt") == "rebuilt"


def test_make_synthetic_writes_the_aptos_layout_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "syn"
    assert (
        main(
            [
                "make-synthetic",
                "--output",
                str(out),
                "--num-images",
                "12",
                "--image-size",
                "48",
                "--height",
                "32",
            ]
        )
        == 0
    )
    rows = (out / "train.csv").read_text().splitlines()
    assert rows[0] == "id_code,diagnosis" and len(rows) == 13
    assert len(list((out / "train_images").glob("*.png"))) == 12
    with pytest.raises(FileExistsError):
        main(["make-synthetic", "--output", str(out), "--num-images", "12"])
    assert main(["make-synthetic", "--output", str(out), "--num-images", "10", "--overwrite"]) == 0
    assert len(list((out / "train_images").glob("*.png"))) == 10


def test_prepare_then_train_on_the_prepared_copy(synthetic_dir, tmp_path):
    prepared = tmp_path / "prepared"
    assert (
        main(
            ["prepare", "--data_dir", str(synthetic_dir), "--output", str(prepared), "--size", "40"]
        )
        == 0
    )
    info = json.loads((prepared / "dr_hf_prepare.json").read_text())
    assert info["crop"] is True and info["size"] == 40
    values = tiny_config(prepared, tmp_path / "run", num_train_epochs=1)
    run = build_trainer(*config_from_dict(values))
    assert run.train_transform.crop is False  # cropped once by prepare, not again per epoch
    assert len(run.dataset["train"]) + len(run.dataset["validation"]) == 60
    history = run_training(*config_from_dict(values))
    assert len(history["val_qwk"]) == 1


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_configs_load_and_name_their_launch_command(path):
    config = load_config_from_file(str(path))
    assert config.num_processes >= 1 and config.num_machines >= 1
    header = path.read_text().split("compute_environment")[0]
    assert "accelerate launch" in header and "scripts/train.py" in header


def test_accelerate_configs_cover_the_documented_setups():
    assert {p.name for p in ACCELERATE_CONFIGS} >= {
        "single_gpu.yaml", "multi_gpu.yaml", "fsdp.yaml", "deepspeed_zero2.yaml", "multi_node.yaml",
    }  # fmt: skip


def test_reduce_on_plateau_follows_the_best_model_metric(synthetic_dir, tmp_path):
    values = tiny_config(
        synthetic_dir, tmp_path / "plateau", lr_scheduler_type="reduce_lr_on_plateau"
    )
    run = build_trainer(*config_from_dict(values))
    run.trainer.create_optimizer_and_scheduler(num_training_steps=10)
    scheduler = run.trainer.lr_scheduler
    assert type(scheduler).__name__ == "ReduceLROnPlateau"
    assert (scheduler.mode, scheduler.factor, scheduler.patience) == (
        "max",
        0.5,
        3,
    )  # QWK: higher is better


def test_prepared_steps_must_match_the_run(synthetic_dir, tmp_path):
    from dr_hf.config.arguments import DataArguments
    from dr_hf.data.prepared import steps_left_to_apply

    prepared = tmp_path / "bg"
    assert (
        main(
            [
                "prepare",
                "--data_dir",
                str(synthetic_dir),
                "--output",
                str(prepared),
                "--size",
                "40",
                "--ben_graham",
                "true",
            ]
        )
        == 0
    )
    assert steps_left_to_apply(DataArguments(data_dir=str(prepared), ben_graham=True)) == (
        False,
        False,
    )
    with pytest.raises(ValueError, match="prepared with ben_graham=True"):
        steps_left_to_apply(DataArguments(data_dir=str(prepared)))
    with pytest.raises(ValueError, match="prepared differently"):
        steps_left_to_apply(
            DataArguments(
                data_dir=str(prepared), ben_graham=True, validation_dir=str(synthetic_dir)
            )
        )
    assert steps_left_to_apply(DataArguments(data_dir=str(synthetic_dir))) == (True, False)


def test_model_card_names_a_hub_base_model_but_never_a_local_file():
    from dr_hf.config.arguments import DataArguments, DRTrainingArguments, ModelArguments
    from dr_hf.training.model_card import render_model_card

    training = DRTrainingArguments(output_dir="unused", use_cpu=True)
    results = {"qwk": 0.8, "accuracy": 0.7}
    local = ModelArguments(
        model_name="retfound", lora=True, pretrained_weights="models/RETFound_cfp_weights.pth"
    )
    card = str(
        render_model_card(DataArguments(), local, training, results, local.pretrained_weights, 224)
    )
    assert "base_model" not in card and "retfound_weights=" in card
    hub = ModelArguments(model_name="resnet50", pretrained_weights="timm/resnet50.a1_in1k")
    card = str(
        render_model_card(DataArguments(), hub, training, results, hub.pretrained_weights, 224)
    )
    assert (
        "base_model: timm/resnet50.a1_in1k" in card
        and "| Quadratic weighted kappa | 0.8000 |" in card
    )
