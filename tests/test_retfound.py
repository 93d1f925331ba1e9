"""RETFound: the official checkpoint layouts load as the official code loads them; others fail clearly."""

import argparse

import pytest
import timm
import torch
import torch.nn.functional as F

from dr_hf.config.arguments import ModelArguments
from dr_hf.errors import CheckpointError
from dr_hf.models.graders import create_model
from dr_hf.models.retfound import load_retfound_weights, retfound_architecture

TINY = {"embed_dim": 64, "depth": 2, "num_heads": 4}


def mae_checkpoint(seed: int = 0, **overrides) -> dict:
    """A checkpoint in the exact layout of RETFound_cfp_weights.pth, at tiny width.

    The MAE encoder (cls token pos_embed on the 224 grid, final norm), its decoder, the mask token
    and the training arguments as an argparse.Namespace, as MAE's save_model writes them.
    """
    torch.manual_seed(seed)
    encoder = timm.create_model(
        "vit_large_patch16_224", num_classes=0, global_pool="token", **{**TINY, **overrides}
    )
    state = dict(encoder.state_dict())
    dim, dec = encoder.embed_dim, 32
    state["mask_token"] = torch.randn(1, 1, dec)
    state["decoder_embed.weight"], state["decoder_embed.bias"] = (
        torch.randn(dec, dim),
        torch.randn(dec),
    )
    state["decoder_pos_embed"] = torch.randn(1, 197, dec)
    for part in ("norm1", "norm2"):
        state[f"decoder_blocks.0.{part}.weight"] = torch.ones(dec)
    state["decoder_blocks.0.attn.qkv.weight"] = torch.randn(3 * dec, dec)
    state["decoder_norm.weight"], state["decoder_norm.bias"] = torch.ones(dec), torch.zeros(dec)
    state["decoder_pred.weight"] = torch.randn(16 * 16 * 3, dec)
    assert state["pos_embed"].shape == (1, 197, dim) and "norm.weight" in state
    return {"model": state, "epoch": 799, "args": argparse.Namespace(model="mae_vit_large_patch16")}


@pytest.fixture
def mae_file(tmp_path):
    path = tmp_path / "RETFound_cfp_weights.pth"
    checkpoint = mae_checkpoint()
    torch.save(checkpoint, path)
    return path, checkpoint["model"]


def official_interpolation(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """util/pos_embed.interpolate_pos_embed of the official code."""
    extra, tokens = pos_embed[:, :1], pos_embed[:, 1:]
    old = int(tokens.shape[1] ** 0.5)
    tokens = tokens.reshape(-1, old, old, tokens.shape[-1]).permute(0, 3, 1, 2)
    tokens = F.interpolate(tokens, size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat((extra, tokens.permute(0, 2, 3, 1).flatten(1, 2)), dim=1)


def test_architectures_follow_the_official_code():
    assert retfound_architecture("RETFound") == (
        "vit_large_patch16_224",
        {"global_pool": "avg", "img_size": 224, "drop_path_rate": 0.2},
    )
    arch, kwargs = retfound_architecture("retfound_dinov2", image_size=448, drop_path_rate=0.1)
    assert arch == "vit_large_patch14_dinov2" and kwargs["img_size"] == 448
    with pytest.raises(ValueError, match="retfound_tiny"):
        retfound_architecture("retfound_huge")


def test_official_mae_checkpoint_loads_at_224(mae_file):
    path, state = mae_file
    model = create_model(
        ModelArguments(model_name="retfound_tiny", pretrained_weights=str(path)), image_size=224
    )[0]
    loaded = model.timm_model.state_dict()
    encoder = {
        k: v for k, v in state.items() if not k.startswith(("decoder_", "mask_token", "norm."))
    }
    assert [k for k, v in encoder.items() if not torch.equal(v, loaded[k])] == []
    assert sorted(set(loaded) - set(encoder)) == [
        "fc_norm.bias",
        "fc_norm.weight",
        "head.bias",
        "head.weight",
    ]
    head = model.timm_model.head.weight
    assert 0 < head.std() < 1e-4  # trunc_normal(std=2e-5), as the official fine-tuning code
    assert torch.equal(model.timm_model.fc_norm.weight, torch.ones(64))
    assert model.config.dr_hf_base["weights_file"] == "RETFound_cfp_weights.pth"
    logits = model(torch.randn(1, 3, 224, 224)).logits
    assert logits.shape == (1, 5)


def test_official_mae_checkpoint_loads_at_another_size(mae_file):
    path, state = mae_file
    model = create_model(
        ModelArguments(model_name="retfound_tiny", pretrained_weights=str(path)), image_size=112
    )[0]
    loaded = model.timm_model.state_dict()
    assert loaded["pos_embed"].shape == (1, 1 + 7 * 7, 64)
    assert torch.allclose(
        loaded["pos_embed"], official_interpolation(state["pos_embed"], 7), atol=1e-6
    )
    assert torch.equal(loaded["pos_embed"][:, 0], state["pos_embed"][:, 0])
    assert torch.equal(loaded["blocks.1.attn.qkv.weight"], state["blocks.1.attn.qkv.weight"])
    assert model(torch.randn(1, 3, 112, 112)).logits.shape == (1, 5)


def test_dinov2_teacher_layout(tmp_path):
    kwargs = {**TINY, "img_size": 56, "num_classes": 5}
    torch.manual_seed(1)
    source = timm.create_model("vit_large_patch14_dinov2", **kwargs).state_dict()
    teacher = {f"backbone.{k}": v for k, v in source.items() if not k.startswith("head.")}
    for suffix in ("weight", "bias"):  # the SwiGLU names of the official DINOv2 code
        teacher[f"backbone.blocks.0.mlp.w12.{suffix}"] = teacher.pop(
            f"backbone.blocks.0.mlp.fc1.{suffix}"
        )
        teacher[f"backbone.blocks.0.mlp.w3.{suffix}"] = teacher.pop(
            f"backbone.blocks.0.mlp.fc2.{suffix}"
        )
    teacher["backbone.mask_token"] = torch.zeros(1, 64)
    teacher["dino_head.mlp.0.weight"] = torch.randn(8, 64)
    path = tmp_path / "RETFound_dinov2_meh.pth"
    torch.save({"teacher": teacher, "iteration": 10}, path)
    torch.manual_seed(2)
    model = timm.create_model("vit_large_patch14_dinov2", **kwargs)
    assert load_retfound_weights(model, path) == ["head.weight", "head.bias"]
    loaded = model.state_dict()
    assert [
        k for k, v in source.items() if not k.startswith("head.") and not torch.equal(v, loaded[k])
    ] == []


def _save(path, obj):
    torch.save(obj, path)
    return path


class RunsCode:
    """Unpickling this object would create a file: the loader must refuse before that."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize(
    "layout, message",
    [
        ("missing_block", r"missing: blocks\.1\."),
        ("classifier", "not a RETFound checkpoint.*state_dict"),
        ("not_a_dict", "holds a Tensor, not a dict"),
        ("pickle_with_code", r"refused: .*\(\w+\.open\)"),
        ("other_width", r"shapes differ for cls_token .*blocks\.0\.attn\.qkv\.weight \(96, 32\)"),
        ("unknown_keys", r"no place in the model: extra_adapter\.weight"),
    ],
)
def test_wrong_layouts_fail_with_the_problem_named(tmp_path, layout, message):
    path = tmp_path / f"{layout}.pth"
    if layout == "missing_block":
        checkpoint = mae_checkpoint()
        checkpoint["model"] = {
            k: v for k, v in checkpoint["model"].items() if not k.startswith("blocks.1.")
        }
        _save(path, checkpoint)
    elif layout == "classifier":
        _save(path, {"state_dict": timm.create_model("test_resnet", num_classes=5).state_dict()})
    elif layout == "not_a_dict":
        _save(path, torch.zeros(3))
    elif layout == "pickle_with_code":
        _save(path, {"model": RunsCode(tmp_path / "ran")})
    elif layout == "other_width":
        _save(path, mae_checkpoint(embed_dim=32, num_heads=2))
    else:
        checkpoint = mae_checkpoint()
        checkpoint["model"]["extra_adapter.weight"] = torch.zeros(2)
        _save(path, checkpoint)
    with pytest.raises(CheckpointError, match=message) as error:
        create_model(ModelArguments(model_name="retfound_tiny", pretrained_weights=str(path)))[0]
    assert str(path) in str(error.value)
    assert not (tmp_path / "ran").exists()
