"""Layer-wise learning-rate decay groups on tiny timm ViTs, wrapped and LoRA-adapted."""

import re

import pytest
import timm
import torch
from peft import LoraConfig, get_peft_model
from transformers import TimmWrapperConfig, TimmWrapperForImageClassification, get_scheduler

from dr_hf.training.optim import layer_decay_param_groups

LR, WD, DECAY, DEPTH = 1e-3, 0.05, 0.5, 3
VIT_ARGS = {"img_size": 32, "depth": DEPTH, "global_pool": "avg"}


def _vit():
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, **VIT_ARGS)


def _wrapped_vit():
    config = TimmWrapperConfig(
        architecture="vit_tiny_patch16_224", num_labels=5, model_args=dict(VIT_ARGS)
    )
    return TimmWrapperForImageClassification(config)


def _by_name(groups):
    """parameter name -> (lr, weight_decay, layer_id)"""
    return {
        name: (group["lr"], group["weight_decay"], group["layer_id"])
        for group in groups
        for name in group["param_names"]
    }


def _expected_lr(name: str) -> float:
    block = re.search(r"blocks\.(\d+)\.", name)
    if block:
        return LR * DECAY ** (DEPTH - int(block.group(1)))
    if re.search(r"(cls_token|pos_embed|patch_embed)", name):
        return LR * DECAY ** (DEPTH + 1)
    assert re.search(r"(head|fc_norm)", name), name
    return LR


@pytest.mark.parametrize("build, prefix", [(_vit, ""), (_wrapped_vit, "timm_model.")])
def test_layer_rates_and_weight_decay(build, prefix):
    model = build()
    groups = layer_decay_param_groups(model, LR, WD, DECAY)
    by_name = _by_name(groups)
    assert set(by_name) == {name for name, _ in model.named_parameters()}
    for name, (lr, wd, _) in by_name.items():
        assert lr == pytest.approx(_expected_lr(name)), name
        param = model.get_parameter(name)
        no_decay = param.ndim <= 1 or name.endswith(("pos_embed", "cls_token"))
        assert wd == (0.0 if no_decay else WD), name
    assert by_name[f"{prefix}head.weight"][:2] == (LR, WD)
    assert by_name[f"{prefix}blocks.{DEPTH - 1}.mlp.fc1.weight"][0] == pytest.approx(LR * DECAY)
    assert by_name[f"{prefix}blocks.0.attn.qkv.weight"][0] == pytest.approx(LR * DECAY**DEPTH)
    assert by_name[f"{prefix}patch_embed.proj.weight"][0] == pytest.approx(
        LR * DECAY ** (DEPTH + 1)
    )
    assert by_name[f"{prefix}blocks.1.norm1.weight"][1:] == (0.0, 2)
    assert by_name[f"{prefix}cls_token"][1:] == (0.0, 0)
    assert groups[0]["lr"] == LR and [g["lr"] for g in groups] == sorted(
        (g["lr"] for g in groups), reverse=True
    )


def test_every_trainable_parameter_in_exactly_one_group_of_an_optimizer():
    model = _wrapped_vit()
    groups = layer_decay_param_groups(model, LR, WD, DECAY)
    params = [p for group in groups for p in group["params"]]
    assert len(params) == len({id(p) for p in params}) == len(list(model.parameters()))
    optimizer = torch.optim.AdamW(groups, lr=1.0)  # the groups' own rates win
    assert {g["lr"] for g in optimizer.param_groups} == {LR * DECAY**k for k in range(DEPTH + 2)}


def test_lora_adapters_follow_their_block_and_frozen_weights_are_left_out():
    lora = LoraConfig(r=4, target_modules=r".*\.attn\.qkv", modules_to_save=["head"])
    model = get_peft_model(_wrapped_vit(), lora)
    by_name = _by_name(layer_decay_param_groups(model, LR, WD, DECAY))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert set(by_name) == trainable
    lora_names = [name for name in trainable if "lora_" in name]
    assert len(lora_names) == 2 * DEPTH
    for name in lora_names:
        block = int(re.search(r"blocks\.(\d+)\.attn\.qkv\.lora_[AB]\.", name).group(1))
        assert by_name[name] == (pytest.approx(LR * DECAY ** (DEPTH - block)), WD, block + 1)
    head = "base_model.model.timm_model.head.modules_to_save.default.weight"
    assert by_name[head][:2] == (LR, WD)
    assert not any("original_module" in n or "qkv.base_layer" in n for n in by_name)


class _ViTWithExtra(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.timm_model = _vit()
        self.calibration = torch.nn.Linear(5, 5)


def test_parameters_outside_the_timm_model_get_the_full_rate():
    model = _ViTWithExtra()
    by_name = _by_name(layer_decay_param_groups(model, LR, WD, DECAY))
    assert by_name["calibration.weight"] == (LR, WD, DEPTH + 1)
    assert by_name["calibration.bias"] == (LR, 0.0, DEPTH + 1)
    assert len(by_name) == len(list(model.parameters()))


def test_scheduler_keeps_the_layer_ratios():
    groups = layer_decay_param_groups(_vit(), LR, WD, DECAY)
    optimizer = torch.optim.AdamW(groups)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=2, num_training_steps=10)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    factor = scheduler.get_last_lr()[0] / LR
    assert 0.0 < factor < 1.0
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(group["initial_lr"] * factor)
        assert group["initial_lr"] == pytest.approx(LR * group["lr_scale"])


def test_trainer_builds_its_optimizer_from_the_groups(tmp_path):
    from transformers import Trainer, TrainingArguments

    model = _wrapped_vit()
    groups = layer_decay_param_groups(model, LR, WD, DECAY)
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    trainer = Trainer(
        model=model, args=args, optimizer_cls_and_kwargs=(torch.optim.AdamW, {"params": groups})
    )
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    lrs = [g["lr"] for g in trainer.optimizer.param_groups]
    assert lrs == [g["lr"] for g in groups] and len(set(lrs)) == DEPTH + 2


def test_cnn_raises():
    cnn = timm.create_model("resnet18", pretrained=False, num_classes=5)
    with pytest.raises(ValueError, match="layer_decay is for ViTs.*ResNet"):
        layer_decay_param_groups(cnn, LR, WD, DECAY)
    with pytest.raises(ValueError, match="layer_decay"):
        layer_decay_param_groups(_vit(), LR, WD, 1.5)
