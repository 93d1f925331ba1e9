"""Graders as TimmWrapper models: initialisation, weights files, saving for plain transformers."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config

from dr_hf.config.arguments import ModelArguments
from dr_hf.errors import CheckpointError
from dr_hf.grades import GRADE_NAMES
from dr_hf.models.graders import create_model, load_trained_model, parameter_summary
from dr_hf.models.parts import data_config


def equal_states(a: dict, b: dict, skip: tuple[str, ...] = ()) -> list[str]:
    """Keys whose tensors differ (or are absent from b)."""
    return [
        k for k, v in a.items() if not k.startswith(skip) and not (k in b and torch.equal(v, b[k]))
    ]


@pytest.mark.parametrize(
    "name, timm_kwargs",
    [
        ("test_resnet", {}),
        ("retfound_tiny", {"global_pool": "avg", "embed_dim": 64, "depth": 2, "num_heads": 4}),
    ],
)
def test_random_init_is_timms_own(name, timm_kwargs):
    torch.manual_seed(3)
    model = create_model(ModelArguments(model_name=name))[0]
    torch.manual_seed(3)
    arch = "vit_large_patch16_224" if timm_kwargs else name
    extra = {"drop_path_rate": 0.2} if timm_kwargs else {}
    reference = timm.create_model(arch, num_classes=5, **timm_kwargs, **extra)
    assert equal_states(reference.state_dict(), model.timm_model.state_dict()) == []
    if (
        name == "test_resnet"
    ):  # timm zero-initialises the last BN of each block; N(0, 0.02) would not
        assert model.timm_model.layer4[0].bn2.weight.abs().sum() == 0


def test_forward_loss_and_config():
    model = create_model(ModelArguments(model_name="test_resnet"), image_size=48)[0]
    out = model(torch.randn(2, 3, 48, 48), labels=torch.tensor([0, 4]))
    assert out.logits.shape == (2, 5) and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.timm_model.fc.weight.grad is not None
    assert list(model.config.id2label.values()) == GRADE_NAMES
    assert model.config.pretrained_cfg["input_size"] == [3, 48, 48]
    assert model.config.dr_hf_base["pretrained_weights"] is None
    assert len(model.config.dr_hf_base["fingerprint"]) == 64


def test_retfound_vit_large_parameter_counts_on_meta_device():
    """RETFound ViT-L, 5 grades, LoRA on qkv: 793,605 of 303,306,757 (0.26 %), no memory used.

    On qkv+proj the regex leaves patch_embed.proj alone: 1,186,821, not the 1,201,157 that
    target_modules=["qkv", "proj"] gives by also adapting the patch convolution (14,336 more).
    """
    expected = {
        (8, None): 793_605,
        (16, None): 1_580_037,
        (8, r".*\.attn\.(qkv|proj)"): 1_186_821,
    }
    for (rank, targets), trainable in expected.items():
        args = ModelArguments(
            model_name="retfound",
            lora=True,
            lora_r=rank,
            lora_target_modules=[targets] if targets else None,
        )
        with torch.device("meta"):
            model = create_model(args)[0]
        summary = parameter_summary(model)
        assert summary["total"] == 303_306_757
        assert summary["trainable"] == trainable
        if trainable == 793_605:
            assert round(summary["trainable_pct"], 2) == 0.26
    timm_model = model.get_base_model().timm_model
    assert (timm_model.embed_dim, len(timm_model.blocks), timm_model.blocks[0].attn.num_heads) == (
        1024,
        24,
        16,
    )
    assert timm_model.fc_norm.eps == 1e-6 and isinstance(timm_model.norm, torch.nn.Identity)
    assert timm_model.blocks[0].attn.qkv.bias is not None
    assert timm_model.blocks[23].drop_path1.drop_prob == pytest.approx(0.2)


def test_unknown_model_name_is_refused():
    with pytest.raises(ValueError, match="resnet"):
        create_model(ModelArguments(model_name="resnet_does_not_exist"))[0]


def _resnet_state(num_classes: int) -> dict:
    torch.manual_seed(11)
    return timm.create_model("test_resnet", num_classes=num_classes).state_dict()


@pytest.mark.parametrize("layout", ["imagenet_safetensors", "torch_state_dict", "model_folder"])
def test_baseline_weights_from_local_files(tmp_path, layout):
    if layout == "imagenet_safetensors":  # 1000-class head: dropped, the grades' head stays new
        state = _resnet_state(1000)
        path = tmp_path / "resnet.safetensors"
        safetensors.torch.save_file(state, path)
    elif layout == "torch_state_dict":  # a training checkpoint saved from a DDP-wrapped model
        state = _resnet_state(5)
        path = tmp_path / "resnet.pth"
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    else:  # a dr_hf/transformers model folder
        torch.manual_seed(11)
        saved = create_model(ModelArguments(model_name="test_resnet"))[0]
        path = tmp_path / "saved"
        saved.save_pretrained(path)
        state = saved.timm_model.state_dict()
    torch.manual_seed(0)
    model = create_model(ModelArguments(model_name="test_resnet", pretrained_weights=str(path)))[0]
    loaded = model.timm_model.state_dict()
    head_kept = layout != "imagenet_safetensors"
    assert equal_states(state, loaded, skip=() if head_kept else ("fc.",)) == []
    assert torch.equal(loaded["fc.weight"], state["fc.weight"]) == head_kept
    assert model.config.dr_hf_base["pretrained_weights"] == path.name
    model.save_pretrained(tmp_path / "out")
    assert str(tmp_path) not in (tmp_path / "out" / "config.json").read_text()  # no local path


def test_baseline_weights_that_do_not_fit_are_refused(tmp_path):
    state = _resnet_state(5)
    del state["layer2.0.conv1.weight"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.safetensors"
    safetensors.torch.save_file(state, path)
    with pytest.raises(CheckpointError, match=r"layer2\.0\.conv1\.weight.*extra\.weight"):
        create_model(ModelArguments(model_name="test_resnet", pretrained_weights=str(path)))[0]
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        create_model(
            ModelArguments(
                model_name="test_resnet", pretrained_weights=str(tmp_path / "missing.pth")
            )
        )[0]


def test_hub_id_offline_says_to_download_the_file(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="YukunZhou/RETFound_mae_natureCFP.*local path"):
        create_model(
            ModelArguments(
                model_name="retfound_tiny", pretrained_weights="YukunZhou/RETFound_mae_natureCFP"
            )
        )[0]


def cache_repo(cache, repo_id: str, files: dict) -> None:
    """Files of a Hub repository as huggingface_hub caches them: snapshots/<commit> and refs/main."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name, save in files.items():
        save(repo / "snapshots" / commit / name)


def test_hub_id_loads_offline_from_the_hf_cache(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    state = _resnet_state(1000)
    cache_repo(
        tmp_path / "hub",
        "someone/resnet-dr",
        {"model.safetensors": lambda path: safetensors.torch.save_file(state, path)},
    )
    model = create_model(
        ModelArguments(model_name="test_resnet", pretrained_weights="someone/resnet-dr")
    )[0]
    assert equal_states(state, model.timm_model.state_dict(), skip=("fc.",)) == []
    # One weights file under its own name (RETFound's layout): found in the cached snapshot.
    cache_repo(
        tmp_path / "hub",
        "someone/retfound-like",
        {"weights.pth": lambda path: torch.save(state, path), "README.md": Path.touch},
    )
    model = create_model(
        ModelArguments(model_name="test_resnet", pretrained_weights="someone/retfound-like")
    )[0]
    assert equal_states(state, model.timm_model.state_dict(), skip=("fc.",)) == []
    assert model.config.dr_hf_base["weights_file"] == "weights.pth"


def test_load_trained_model_reads_model_folders_and_names_wrong_ones(tmp_path):
    model = create_model(ModelArguments(model_name="retfound_tiny"), image_size=32)[0].eval()
    model.save_pretrained(tmp_path / "best")
    reloaded = load_trained_model(tmp_path / "best").eval()
    x = torch.randn(1, 3, 32, 32)
    assert torch.allclose(model(x).logits, reloaded(x).logits, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="neither a model"):
        load_trained_model(tmp_path)


FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys, torch
    from PIL import Image
    from transformers import AutoModelForImageClassification, pipeline
    out = {}
    for name in sys.argv[2:]:
        folder = sys.argv[1] + "/" + name
        model = AutoModelForImageClassification.from_pretrained(folder).eval()
        with torch.no_grad():
            logits = model(torch.load(sys.argv[1] + "/x.pt")).logits
        scores = pipeline("image-classification", model=folder)(Image.open(sys.argv[1] + "/eye.png"))
        out[name] = {"logits": logits.tolist(), "scores": {s["label"]: s["score"] for s in scores}}
    out["dr_hf_imported"] = any(m.startswith("dr_hf") for m in sys.modules)
    print(json.dumps(out))
    """
)


@pytest.mark.slow
def test_saved_models_load_in_plain_transformers_in_a_fresh_process(tmp_path):
    models = {
        "baseline": create_model(ModelArguments(model_name="test_resnet"), image_size=48)[0],
        "retfound_tiny": create_model(ModelArguments(model_name="retfound_tiny"), image_size=64)[0],
    }
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8))
    image.save(tmp_path / "eye.png")
    x = torch.randn(2, 3, 64, 64)
    torch.save(x, tmp_path / "x.pt")
    expected = {}
    for name, model in models.items():
        model.eval()
        model.save_pretrained(tmp_path / name)
        transform = create_transform(**resolve_data_config(model.config.pretrained_cfg))
        with torch.no_grad():
            probs = model(transform(image)[None]).logits.softmax(-1)[0]
            expected[name] = model(x).logits
        expected[name + "_scores"] = dict(zip(GRADE_NAMES, probs.tolist()))
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(tmp_path), *models],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["dr_hf_imported"] is False
    for name in models:
        assert torch.allclose(torch.tensor(out[name]["logits"]), expected[name], atol=1e-6)
        assert out[name]["scores"] == pytest.approx(expected[name + "_scores"], abs=1e-6)


def test_data_config_from_timm_wrapper_config():
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    cfg = {"mean": [0.4, 0.3, 0.2], "std": [0.2, 0.3, 0.4], "input_size": [3, 192, 192]}
    config = TimmWrapperConfig(architecture="test_resnet", pretrained_cfg=cfg, num_labels=5)
    expected = ((0.4, 0.3, 0.2), (0.2, 0.3, 0.4), 192)
    assert data_config(config) == expected
    model = TimmWrapperForImageClassification(config)
    assert data_config(model) == expected

    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=r".*conv2"))
    assert data_config(peft_model) == expected


def test_data_config_from_timm_model_and_fallback():
    import timm

    model = timm.create_model("test_vit", pretrained=False)
    mean, std, size = data_config(model)
    assert mean == tuple(model.pretrained_cfg["mean"]) and std == tuple(model.pretrained_cfg["std"])
    assert size == model.pretrained_cfg["input_size"][-1]
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert data_config(torch.nn.Linear(2, 2)) == (*imagenet, 224)
