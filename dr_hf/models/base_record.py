"""The record of the base model an adapter was trained on, kept beside every adapter.

An adapter holds only the LoRA matrices and the `modules_to_save` copies: loaded onto a base built
with other weights it silently gives garbage. So every adapter folder also holds `dr_hf_base.json`:
the base model's config (timm architecture, model_args, image size, preprocessing) and its
provenance (the weights' Hub id or file name, never a local path, and a fingerprint: the SHA-256
of the frozen base tensors). `dr_hf.models.lora.load_adapter` refuses a base whose fingerprint
differs.

A randomly initialised base cannot be rebuilt (timm's initialisation is not reproducible across
versions and RNG histories), so for such a base the frozen weights are saved beside the adapter
(`dr_hf_base.safetensors`) and the folder stays self-contained.
"""

import hashlib
import json
from pathlib import Path

import safetensors.torch
import torch
from peft import PeftModel
from torch import nn

from dr_hf.models.parts import trained_head

BASE_RECORD = "dr_hf_base.json"
BASE_WEIGHTS = "dr_hf_base.safetensors"


def write_base_record(model: PeftModel, folder: str | Path) -> None:
    base = model.get_base_model()
    folder = Path(folder)
    (folder / BASE_RECORD).write_text(json.dumps(base.config.to_dict(), indent=2) + "\n")
    if not (getattr(base.config, "dr_hf_base", None) or {}).get("pretrained_weights"):
        safetensors.torch.save_file(_frozen_base_state(base), folder / BASE_WEIGHTS)


def read_base_record(folder: str | Path) -> dict | None:
    path = Path(folder) / BASE_RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def base_fingerprint(model: nn.Module) -> str | None:
    """SHA-256 of the base tensors (keys, dtypes, shapes, bytes), classifier and fc_norm excluded.

    None on the meta device, where there are no values to hash.
    """
    timm_model = model.timm_model
    skip = tuple(f"{name}." for name in trained_head(timm_model))
    digest = hashlib.sha256()
    for key, value in sorted(timm_model.state_dict().items()):
        if key.startswith(skip):
            continue
        if value.is_meta:
            return None
        value = value.detach().cpu().contiguous()
        digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _frozen_base_state(base: nn.Module) -> dict[str, torch.Tensor]:
    """The base model's own weights inside a PEFT wrapper: LoRA layers and trained copies removed."""
    state = {}
    for key, value in base.state_dict().items():
        if "lora_" in key or ".modules_to_save." in key:
            continue
        key = key.replace(".base_layer.", ".").replace(".original_module.", ".")
        state[key] = value.detach().contiguous()
    return state


def describe_base(config: dict) -> str:
    info = config.get("dr_hf_base") or {}
    weights = info.get("weights_file") or info.get("pretrained_weights") or "random initialisation"
    return f"{config.get('architecture')} {config.get('model_args')}, weights: {weights}"
