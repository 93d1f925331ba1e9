"""What makes a run fast on a GPU, checked on the CPU: the raw uint8 cache, augmentation on the
device inside `dr-hf train`, persistent workers, channels-last, fused AdamW, SDPA attention."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config
from datasets import DatasetDict, load_from_disk

from dr_hf.cli import main as cli_main
from dr_hf.config.arguments import DRTrainingArguments, default_num_workers
from dr_hf.config.parsing import config_from_dict
from dr_hf.data.loading import load_dr_dataset
from dr_hf.data.prepare import PREPARE_INFO, prepare_dataset
from dr_hf.data.transforms import FundusTransform, get_transforms
from dr_hf.training.run import build_trainer, run_training

SIZE = 32


@pytest.fixture(scope="module")
def caches(synthetic_dir, tmp_path_factory):
    """The synthetic set prepared twice, PNG and raw uint8, for training at SIZE."""
    root = tmp_path_factory.mktemp("caches")
    data = load_dr_dataset(*config_from_dict({"data_dir": str(synthetic_dir)})[:1])
    png = prepare_dataset(data, root / "png", size=40)
    raw = prepare_dataset(data, root / "raw", size=40, format="raw", image_size=SIZE)
    return png, raw


def test_raw_cache_holds_the_png_caches_training_input(caches):
    png, raw = caches
    info = json.loads((raw / PREPARE_INFO).read_text())
    assert info["format"] == "raw" and info["image_size"] == SIZE and info["size"] == 40
    png_rows, raw_rows = load_from_disk(str(png))["train"], load_from_disk(str(raw))["train"]
    assert raw_rows.column_names == ["pixels", "label", "image_id", "patient_id", "eye"]
    assert raw_rows["image_id"] == png_rows["image_id"]
    resize = get_transforms(SIZE).transforms[0]  # the training pipeline's Resize
    for row in (0, 7):
        expected = resize(image=np.asarray(png_rows[row]["image"]))["image"]
        stored = np.frombuffer(raw_rows[row]["pixels"], np.uint8).reshape(SIZE, SIZE, 3)
        np.testing.assert_array_equal(stored, expected)


def test_raw_and_png_caches_train_to_the_same_metrics_without_augmentation(caches, tmp_path):
    png, raw = caches
    histories = {}
    for name, folder in (("png", png), ("raw", raw)):
        values = tiny_config(folder, tmp_path / name, augment=False, num_train_epochs=2)
        histories[name] = run_training(*config_from_dict(values | {"image_size": SIZE}))
    for key in ("val_qwk", "val_acc", "val_loss", "val_macro_auroc", "train_loss"):
        assert len(histories["png"][key]) == 2
        assert histories["png"][key] == pytest.approx(histories["raw"][key], abs=1e-6), key


def test_a_raw_cache_refuses_another_image_size(caches, tmp_path):
    _, raw = caches
    values = tiny_config(raw, tmp_path / "x") | {"image_size": 48}
    with pytest.raises(ValueError, match=r"raw uint8 images of 32 px.*--image_size 32"):
        build_trainer(*config_from_dict(values))


def test_a_raw_cache_keeps_the_prepared_data_rules(caches, tmp_path):
    _, raw = caches
    values = tiny_config(raw, tmp_path / "x") | {"image_size": SIZE, "crop_fov": False}
    with pytest.raises(ValueError, match="prepared with crop=True but the run has crop_fov=False"):
        build_trainer(*config_from_dict(values))
    png_and_raw = tiny_config(raw, tmp_path / "y") | {"validation_dir": str(caches[0])}
    with pytest.raises(ValueError, match="prepared differently"):
        build_trainer(*config_from_dict(png_and_raw | {"image_size": SIZE}))


def test_cli_prepare_raw(synthetic_dir, tmp_path):
    out = tmp_path / "raw"
    argv = ["prepare", "--data_dir", str(synthetic_dir), "--output", str(out)]
    assert cli_main([*argv, "--size", "40", "--format", "raw", "--image_size", "32"]) == 0
    assert json.loads((out / PREPARE_INFO).read_text())["image_size"] == 32
    assert len(load_from_disk(str(out))["train"][0]["pixels"]) == 32 * 32 * 3


def test_train_with_gpu_augmentation_on_a_raw_cache_with_persistent_workers(caches, tmp_path):
    """`augment_on=gpu` trains through the Trainer (on the CPU here), with one persistent worker;
    every epoch's batches carry exactly the parameters of that epoch's draws."""
    _, raw = caches
    values = tiny_config(raw, tmp_path / "gpu", augment_on="gpu", num_train_epochs=2)
    values |= {"image_size": SIZE, "dataloader_num_workers": 1}
    run = build_trainer(*config_from_dict(values))
    trainer = run.trainer
    assert trainer.args.dataloader_persistent_workers and trainer.device_augmentation is not None
    seen: list[tuple[int, torch.Tensor]] = []
    augment = trainer.device_augmentation

    def recording(pixels, params):
        assert pixels.dtype == torch.uint8
        seen.append((run.train_transform.epoch, params.cpu()))
        return augment(pixels, params)

    trainer.device_augmentation = recording
    first = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert any(not torch.equal(first[n], p) for n, p in trainer.model.named_parameters())
    rows = run.dataset["train"].with_format(None)[:]  # pixels, label, image_id of every image
    key = lambda t: tuple(t.tolist())  # noqa: E731
    for epoch in (0, 1):
        fresh = FundusTransform(get_transforms(SIZE), seed=0, size=SIZE, augment_on="gpu")
        fresh.set_epoch(epoch)
        expected = fresh(rows)["augment_params"]
        got = torch.cat([params for e, params in seen if e == epoch])
        assert sorted(map(key, got)) == sorted(map(key, expected)), epoch


def test_persistent_workers_default_follows_the_workers(tmp_path):
    with_workers = DRTrainingArguments(output_dir=str(tmp_path), dataloader_num_workers=2)
    assert with_workers.dataloader_persistent_workers is True
    assert with_workers.dataloader_prefetch_factor == 4
    none = DRTrainingArguments(output_dir=str(tmp_path), dataloader_num_workers=0)
    assert none.dataloader_persistent_workers is False and none.dataloader_prefetch_factor is None
    with pytest.raises(ValueError, match="dataloader_persistent_workers needs workers"):
        DRTrainingArguments(
            output_dir=str(tmp_path), dataloader_num_workers=0, dataloader_persistent_workers=True
        )


def test_default_workers_follow_the_cores(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_num_workers() == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert default_num_workers() == 3
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    assert default_num_workers() == 0


def test_channels_last_gives_the_same_logits_and_trains(synthetic_dir, tmp_path):
    values = tiny_config(synthetic_dir, tmp_path / "cl", channels_last=True, num_train_epochs=1)
    run = build_trainer(*config_from_dict(values))
    model = run.trainer.model.eval()
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    pixels = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        channels_last = model(pixel_values=pixels.contiguous(memory_format=torch.channels_last))
        model.to(memory_format=torch.contiguous_format)
        plain = model(pixel_values=pixels)
    torch.testing.assert_close(channels_last.logits, plain.logits, rtol=1e-4, atol=1e-5)
    batch = run.trainer._prepare_inputs({"pixel_values": pixels})
    assert batch["pixel_values"].is_contiguous(memory_format=torch.channels_last)


def test_channels_last_default_is_off_on_the_cpu(synthetic_dir, tmp_path):
    run = build_trainer(*config_from_dict(tiny_config(synthetic_dir, tmp_path / "d")))
    assert run.trainer.channels_last is False


def test_layer_decay_optimizer_is_fused_adamw(synthetic_dir, tmp_path):
    values = tiny_config(synthetic_dir, tmp_path / "ld", model_name="retfound_tiny")
    run = build_trainer(*config_from_dict(values | {"layer_decay": 0.65}))
    optimizer = run.trainer.create_optimizer()
    assert type(optimizer).__name__ == "AdamW" and optimizer.defaults["fused"] is True
    assert len(optimizer.param_groups) > 2


@pytest.mark.parametrize("lora", [False, True])
def test_retfound_blocks_use_fused_attention(lora):
    from dr_hf.config.arguments import ModelArguments
    from dr_hf.models.graders import create_model
    from dr_hf.models.parts import timm_backbone

    model, _ = create_model(ModelArguments(model_name="retfound_tiny", lora=lora, lora_r=4))
    blocks = timm_backbone(model).blocks
    assert len(blocks) and all(block.attn.fused_attn for block in blocks)
    calls = []
    original = torch.nn.functional.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    torch.nn.functional.scaled_dot_product_attention = counting
    try:
        with torch.no_grad():
            model(pixel_values=torch.randn(1, 3, 224, 224))
    finally:
        torch.nn.functional.scaled_dot_product_attention = original
    assert len(calls) == len(blocks)


def test_dataset_dict_of_raw_rows_loads_through_load_dr_dataset(caches):
    _, raw = caches
    data = load_dr_dataset(*config_from_dict({"data_dir": str(raw)})[:1])
    assert isinstance(data, DatasetDict) and data["train"].column_names[0] == "pixels"


@pytest.mark.slow
def test_quickstart_with_augment_on_gpu_and_a_raw_cache_from_the_command_line(caches, tmp_path):
    """`dr-hf train --config configs/quickstart.yaml --augment_on gpu` on a raw cache (CPU here)."""
    _, raw = caches
    quickstart = Path(__file__).parent.parent / "configs" / "quickstart.yaml"
    argv = ["train", "--config", str(quickstart), "--data_dir", str(raw), "--image_size", "32"]
    argv += ["--augment_on", "gpu", "--output_dir", str(tmp_path / "qs"), "--num_train_epochs", "2"]
    argv += ["--dataloader_num_workers", "1", "--per_device_train_batch_size", "8"]
    argv += ["--auto_find_batch_size", "true"]  # halves the batch on CUDA OOM; a no-op here
    assert cli_main([*argv, "--disable_tqdm", "true"]) == 0
    history = json.loads((tmp_path / "qs" / "training_history.json").read_text())
    assert (
        len(history["val_qwk"]) == 2 and (tmp_path / "qs" / "best" / "model.safetensors").is_file()
    )
    config = (tmp_path / "qs" / "config.yaml").read_text()
    assert "augment_on: gpu" in config and "dataloader_persistent_workers: true" in config
    assert "auto_find_batch_size: true" in config


def test_prepare_jpeg_cache(synthetic_dir, tmp_path):
    data = load_dr_dataset(*config_from_dict({"data_dir": str(synthetic_dir)})[:1])
    folder = prepare_dataset(data, tmp_path / "jpeg", size=40, format="jpeg")
    assert json.loads((folder / PREPARE_INFO).read_text())["format"] == "jpeg"
    image = load_from_disk(str(folder))["train"][0]["image"]
    assert image.format == "JPEG" and min(image.size) == 40


def test_a_config_with_every_speed_setting_parses_and_builds(caches, tmp_path):
    """torch_compile, channels_last, workers that stay, prefetch and device augmentation
    together: the Trainer is built with each (compilation itself happens on the first step,
    too slow for a CPU test; the GPU benchmark's smoke run compiles)."""
    _, raw = caches
    values = tiny_config(raw, tmp_path / "all", image_size=SIZE, augment_on="gpu")
    values |= {"torch_compile": True, "channels_last": True, "dataloader_num_workers": 2}
    values |= {"dataloader_prefetch_factor": 2}
    run = build_trainer(*config_from_dict(values))
    args = run.trainer.args
    assert args.torch_compile and args.dataloader_persistent_workers
    assert args.dataloader_prefetch_factor == 2 and run.trainer.channels_last
    assert run.trainer.device_augmentation is not None
    assert run.config["augment_on"] == "gpu" and run.config["torch_compile"] is True
