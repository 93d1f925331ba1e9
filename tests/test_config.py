"""Configuration: YAML defaults, command-line overrides, the short flags (--epochs, --resume, --wandb...), shipped configs."""

from pathlib import Path

import pytest
import yaml

from dr_hf.cli import main
from dr_hf.config.parsing import (
    ConfigError,
    DRArgumentParser,
    config_from_dict,
    config_from_yaml,
    load_yaml_config,
    resolved_config,
)
from dr_hf.models.retfound import is_retfound

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def parse(argv):
    return DRArgumentParser().parse(argv)


def write_yaml(tmp_path, values):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_yaml_values_are_defaults_and_flags_override(tmp_path):
    config = write_yaml(
        tmp_path,
        {
            "model_name": "resnet18",
            "learning_rate": 0.01,
            "image_size": 96,
            "output_dir": str(tmp_path),
        },
    )
    data, model, training, debug = parse(["--config", config, "--learning_rate", "0.5"])
    assert model.model_name == "resnet18"
    assert data.image_size == 96
    assert training.learning_rate == 0.5
    assert not debug


def test_unknown_yaml_key_is_named(tmp_path):
    config = write_yaml(tmp_path, {"model_name": "resnet18", "lerning_rate": 0.1, "epochz": 3})
    with pytest.raises(ConfigError, match="epochz, lerning_rate"):
        parse(["--config", config])


def test_unknown_flag_is_named():
    with pytest.raises(ConfigError, match="--no_such_flag"):
        parse(["--no_such_flag", "3"])


def test_original_flags_are_aliases(tmp_path):
    data, model, training, debug = parse([
        "--output_dir", str(tmp_path),
        "--wandb", "--wandb-project", "dr-lora", "--wandb-run-name", "lora_r8_exp1",
        "--wandb-tags", "baseline", "resnet50",
        "--resume", "last",
        "--checkpoint_path", "models/RETFound_cfp_weights.pth",
        "--lora_r", "16", "--lora_alpha", "64",
        "--batch_size", "48", "--epochs", "15", "--learning_rate", "1e-4",
        "--debug",
    ])  # fmt: skip
    assert training.report_to == ["wandb"]
    assert training.wandb_project == "dr-lora"
    assert training.run_name == "lora_r8_exp1"
    assert training.wandb_tags == ["baseline", "resnet50"]
    assert training.resume_from_checkpoint == "last"
    assert model.pretrained_weights == "models/RETFound_cfp_weights.pth"
    assert (model.lora_r, model.lora_alpha) == (16, 64)
    assert training.per_device_train_batch_size == training.per_device_eval_batch_size == 48
    assert training.num_train_epochs == 15
    assert training.learning_rate == 1e-4
    assert debug


def test_without_wandb_nothing_is_reported(tmp_path):
    _, _, training, _ = parse(["--output_dir", str(tmp_path)])
    assert training.report_to == []


def test_fp16_is_turned_off_on_cpu_with_a_message(tmp_path, caplog):
    import torch

    if torch.cuda.is_available():
        pytest.skip("fp16 stays on with a GPU")
    _, _, training, _ = parse(["--output_dir", str(tmp_path), "--fp16"])
    assert training.fp16 is False
    assert "fp16 needs a CUDA GPU" in caplog.text


def test_invalid_values_say_what_to_change(tmp_path):
    with pytest.raises(ValueError, match="validation_split"):
        parse(["--output_dir", str(tmp_path), "--validation_split", "1.5"])
    with pytest.raises(ValueError, match="loss='hinge'"):
        parse(["--output_dir", str(tmp_path), "--loss", "hinge"])


def test_debug_prints_the_resolved_config_and_exits(tmp_path, capsys):
    config = write_yaml(tmp_path, {"model_name": "resnet18", "output_dir": str(tmp_path / "out")})
    assert main(["train", "--config", config, "--epochs", "7", "--debug"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model_name"] == "resnet18"
    assert printed["num_train_epochs"] == 7
    assert not (tmp_path / "out").exists()


def test_resolved_config_holds_no_token(tmp_path):
    _, _, training, _ = parse(["--output_dir", str(tmp_path), "--hub_token", "hf_secret_value"])
    data, model, _, _ = parse(["--output_dir", str(tmp_path)])
    dumped = yaml.safe_dump(resolved_config(data, model, training))
    assert "hf_secret_value" not in dumped


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_validates(path):
    values = load_yaml_config(path)
    data, model, training = config_from_yaml(path)
    assert model.model_name == values["model_name"]
    assert training.output_dir == values["output_dir"]
    assert training.metric_for_best_model == "qwk" and training.greater_is_better
    assert training.remove_unused_columns is False


def test_shipped_configs_cover_the_documented_recipes():
    names = {p.name for p in CONFIGS}
    assert {
        "quickstart.yaml",
        "default_config.yaml",
        "retfound_lora_config.yaml",
        "retfound_full_config.yaml",
    } <= names
    _, model, training = config_from_yaml(Path(CONFIGS[0]).parent / "retfound_lora_config.yaml")
    assert (
        model.lora
        and model.lora_r == 8
        and model.lora_alpha == 32
        and is_retfound(model.model_name)
    )
    assert training.layer_decay == 0.65


def test_only_the_five_grade_scale(tmp_path):
    with pytest.raises(ValueError, match="num_labels=3"):
        parse(["--output_dir", str(tmp_path), "--num_labels", "3"])


def test_push_to_hub_without_a_repository_fails_before_training(synthetic_dir, tmp_path):
    from conftest import tiny_config

    from dr_hf.training.run import build_trainer

    values = tiny_config(synthetic_dir, tmp_path / "hub", push_to_hub=True)
    with pytest.raises(ValueError, match="hub_model_id"):
        build_trainer(*config_from_dict(values))


def test_wandb_project_flag_then_environment_then_default(tmp_path, monkeypatch):
    import os

    from dr_hf.training.reporting import wandb_environment

    monkeypatch.setenv("WANDB_PROJECT", "from-env")
    data, model, training, _ = parse(["--output_dir", str(tmp_path), "--wandb"])
    with wandb_environment(training):
        assert os.environ["WANDB_PROJECT"] == "from-env"
    data, model, training, _ = parse(
        ["--output_dir", str(tmp_path), "--wandb", "--wandb-project", "mine"]
    )
    with wandb_environment(training):
        assert os.environ["WANDB_PROJECT"] == "mine"
    assert os.environ["WANDB_PROJECT"] == "from-env"  # restored after the run
    monkeypatch.delenv("WANDB_PROJECT")
    data, model, training, _ = parse(["--output_dir", str(tmp_path), "--wandb"])
    with wandb_environment(training):
        assert os.environ["WANDB_PROJECT"] == "diabetic-retinopathy"
