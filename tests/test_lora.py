"""LoRA: what trains, what saves, what reloads, and which bases an adapter accepts."""

import json
import logging
from types import SimpleNamespace

import pytest
import safetensors.torch
import timm
import torch
import yaml
from peft import PeftModel
from transformers import (
    AutoModelForImageClassification,
    TimmWrapperConfig,
    TimmWrapperForImageClassification,
)

from dr_hf.config.arguments import ModelArguments
from dr_hf.models.base_record import BASE_RECORD, BASE_WEIGHTS, write_base_record
from dr_hf.models.graders import build_model, create_model, load_trained_model
from dr_hf.models.lora import load_adapter
from dr_hf.training.trainer import BaseRecordCallback


def save_adapter(model: PeftModel, folder) -> None:
    """An adapter folder as training exports it: the PEFT files and the base record."""
    model.save_pretrained(str(folder))
    write_base_record(model, folder)


SIZES = {"test_resnet": 32, "retfound_tiny": 32}


def trained_lora(name: str, steps: int = 3, **kwargs) -> tuple[PeftModel, torch.Tensor]:
    """A LoRA model after a few AdamW steps (weight decay on), and a fixed eval batch."""
    size = SIZES.get(name, 32)
    torch.manual_seed(0)
    model = create_model(ModelArguments(model_name=name, lora=True, **kwargs), image_size=size)[0]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    model.train()
    for _ in range(steps):
        loss = model(torch.randn(4, 3, size, size), labels=torch.tensor([0, 1, 2, 4])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval(), torch.randn(2, 3, size, size)


@pytest.mark.parametrize("name", ["retfound_tiny", "test_resnet"])
def test_only_adapters_and_head_train(name):
    torch.manual_seed(0)
    model = create_model(ModelArguments(model_name=name, lora=True), image_size=32)[0]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or ".modules_to_save." in n for n in trainable)
    assert not any("patch_embed" in n for n in trainable)
    head = "head" if name == "retfound_tiny" else "fc"
    assert any(f"timm_model.{head}.modules_to_save" in n for n in trainable)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    for _ in range(3):
        model(torch.randn(4, 3, 32, 32), labels=torch.tensor([0, 1, 2, 4])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = dict(model.named_parameters())
    frozen_changed = [
        n for n in before if n not in trainable and not torch.equal(before[n], after[n])
    ]
    assert frozen_changed == []
    assert all(
        not torch.equal(before[n], after[n]) for n in trainable if "lora_B" in n or head in n
    )


def test_default_targets():
    vit = create_model(ModelArguments(model_name="retfound_tiny", lora=True))[0]
    wrapped = {n.rsplit(".lora_A", 1)[0] for n, _ in vit.named_parameters() if ".lora_A." in n}
    assert wrapped == {f"base_model.model.timm_model.blocks.{i}.attn.qkv" for i in range(2)}
    assert set(vit.peft_config["default"].modules_to_save) == {
        "timm_model.head",
        "timm_model.fc_norm",
    }
    cnn = create_model(ModelArguments(model_name="test_resnet", lora=True))[0]
    targets = cnn.peft_config["default"].target_modules
    assert targets and all(t.startswith("timm_model.layer4.") for t in targets)
    with pytest.raises(ValueError, match="patch_embed.proj"):
        create_model(
            ModelArguments(
                model_name="retfound_tiny", lora=True, lora_target_modules=["qkv", "proj"]
            )
        )[0]


@pytest.mark.parametrize("name", ["retfound_tiny", "test_resnet"])
def test_save_reload_and_merge_give_the_same_logits(tmp_path, name):
    model, x = trained_lora(name)
    with torch.no_grad():
        expected = model(x).logits
    save_adapter(model, tmp_path / "adapter")
    files = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", BASE_RECORD, BASE_WEIGHTS} <= files
    assert "save_pretrained" not in vars(model)  # PEFT's own method, not a patched one

    # Plain PEFT and transformers, from what the folder holds.
    record = json.loads((tmp_path / "adapter" / BASE_RECORD).read_text())
    with torch.device("meta"):
        base = TimmWrapperForImageClassification(TimmWrapperConfig.from_dict(record))
    base.load_state_dict(
        safetensors.torch.load_file(tmp_path / "adapter" / BASE_WEIGHTS), assign=True
    )
    plain = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    reloaded = load_trained_model(tmp_path / "adapter").eval()
    with torch.no_grad():
        assert torch.allclose(plain(x).logits, expected, atol=1e-6)
        assert torch.allclose(reloaded(x).logits, expected, atol=1e-6)

    merged = model.merge_and_unload()
    assert isinstance(merged, TimmWrapperForImageClassification)
    merged.save_pretrained(tmp_path / "merged")
    standalone = AutoModelForImageClassification.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        assert torch.allclose(merged(x).logits, expected, atol=1e-5)
        assert torch.allclose(standalone(x).logits, expected, atol=1e-5)


def test_adapter_on_another_base_is_refused(tmp_path, caplog):
    model, x = trained_lora("retfound_tiny", steps=1)
    save_adapter(model, tmp_path)
    recorded = model.get_base_model().config.dr_hf_base["fingerprint"]
    torch.manual_seed(123)  # same architecture, other weights
    other = create_model(ModelArguments(model_name="retfound_tiny"), image_size=32)[0]
    other_fingerprint = other.config.dr_hf_base["fingerprint"]
    with pytest.raises(ValueError, match=f"{recorded}.*{other_fingerprint}"):
        load_adapter(tmp_path, other)
    with caplog.at_level(logging.WARNING, logger="dr_hf.models.lora"):
        forced = load_adapter(tmp_path, other, force=True)
    assert "force=True" in caplog.text and isinstance(forced, PeftModel)


def test_adapter_on_a_base_from_a_weights_file(tmp_path):
    torch.manual_seed(5)
    weights = tmp_path / "pretrained" / "resnet_base.safetensors"
    weights.parent.mkdir()
    safetensors.torch.save_file(
        timm.create_model("test_resnet", num_classes=1000).state_dict(), weights
    )
    model, x = trained_lora("test_resnet", pretrained_weights=str(weights))
    with torch.no_grad():
        expected = model(x).logits
    save_adapter(model, tmp_path / "adapter")
    assert not (tmp_path / "adapter" / BASE_WEIGHTS).exists()  # rebuilt from the file instead
    saved = {p.name: p.read_text() for p in (tmp_path / "adapter").glob("*.json")}
    record = json.loads(saved[BASE_RECORD])["dr_hf_base"]
    assert record["weights_file"] == record["pretrained_weights"] == "resnet_base.safetensors"
    assert not [name for name, text in saved.items() if str(tmp_path) in text]  # no local path

    # On the machine that trained it, the run's config.yaml beside the adapter gives the path.
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"pretrained_weights": str(weights)}))
    with torch.no_grad():
        reloaded = load_trained_model(tmp_path / "adapter").eval()
        assert torch.allclose(reloaded(x).logits, expected, atol=1e-6)
    (tmp_path / "config.yaml").unlink()

    moved = weights.rename(tmp_path / "elsewhere.safetensors")
    with pytest.raises(FileNotFoundError, match="resnet_base.safetensors.*retfound_weights="):
        load_trained_model(tmp_path / "adapter")
    reloaded = load_trained_model(tmp_path / "adapter", retfound_weights=str(moved)).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(x).logits, expected, atol=1e-6)

    torch.manual_seed(6)  # a different file under the expected name is caught by the fingerprint
    safetensors.torch.save_file(
        timm.create_model("test_resnet", num_classes=1000).state_dict(), moved
    )
    with pytest.raises(ValueError, match="fingerprint"):
        load_trained_model(tmp_path / "adapter", retfound_weights=str(moved))


def test_build_model_rebuilds_the_architecture_from_the_config():
    model = create_model(ModelArguments(model_name="retfound_tiny"), image_size=48)[0]
    rebuilt = build_model(TimmWrapperConfig.from_dict(model.config.to_dict()))
    assert rebuilt.timm_model.pos_embed.shape == model.timm_model.pos_embed.shape == (1, 10, 64)


def test_trainer_checkpoints_hold_the_base_record(tmp_path):
    from transformers import Trainer, TrainingArguments

    torch.manual_seed(0)
    model = create_model(ModelArguments(model_name="retfound_tiny", lora=True), image_size=32)[0]
    data = [{"pixel_values": torch.randn(3, 32, 32), "labels": i % 5} for i in range(8)]
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        save_steps=2,
        per_device_train_batch_size=4,
        use_cpu=True,
        report_to="none",
        label_names=["labels"],
        remove_unused_columns=False,
    )
    Trainer(model=model, args=args, train_dataset=data, callbacks=[BaseRecordCallback()]).train()
    checkpoint = tmp_path / "checkpoint-2"
    assert (checkpoint / BASE_RECORD).is_file() and (checkpoint / "adapter_config.json").is_file()
    assert (checkpoint / BASE_WEIGHTS).is_file()  # a random base travels with the checkpoint
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model.eval()(x).logits
        assert torch.allclose(load_trained_model(checkpoint).eval()(x).logits, expected, atol=1e-6)


def test_base_record_callback_writes_on_the_main_process_only(tmp_path):
    from transformers import TrainerState

    model = create_model(ModelArguments(model_name="retfound_tiny", lora=True), image_size=32)[0]
    state = TrainerState(global_step=5)
    (tmp_path / "checkpoint-5").mkdir()
    for should_save in (False, True):
        args = SimpleNamespace(output_dir=str(tmp_path), should_save=should_save)
        BaseRecordCallback().on_save(args, state, None, model=model)
        assert (tmp_path / "checkpoint-5" / BASE_RECORD).is_file() == should_save
    record = json.loads((tmp_path / "checkpoint-5" / BASE_RECORD).read_text())
    assert record["dr_hf_base"] == model.get_base_model().config.dr_hf_base
    state = TrainerState(global_step=6)  # a full model: nothing to record
    plain = create_model(ModelArguments(model_name="retfound_tiny"), image_size=32)[0]
    (tmp_path / "checkpoint-6").mkdir()
    BaseRecordCallback().on_save(args, state, None, model=plain)
    assert not any((tmp_path / "checkpoint-6").iterdir())
