"""RETFound as a timm ViT, and its official checkpoints' layouts (MAE and DINOv2) mapped onto it.

RETFound (Zhou et al., Nature 2023) is a ViT-Large/16 pre-trained on retinal images with MAE:
timm's `vit_large_patch16_224` with `global_pool="avg"` (mean of the patch tokens, cls excluded,
then `fc_norm`), exactly as the official `models_vit.py`. The DINOv2 variant is timm's
`vit_large_patch14_dinov2` at 224 pixels. `retfound_tiny` keeps the structure at a tiny width
for tests and CPU demonstrations. Finding, reading and checking weight files in general (a local
file, a model folder, a Hub id; `weights_only` pickles; every gap or surplus named) is
`dr_hf.models.weights`'; this module only says where RETFound's encoder sits in its files.
"""

import logging
import re
from pathlib import Path

import torch
from timm.layers import trunc_normal_

from dr_hf.errors import CheckpointError
from dr_hf.models.weights import adapt_pos_embed, load_checked, read_checkpoint

logger = logging.getLogger(__name__)

RETFOUND_DROP_PATH = 0.2
RETFOUND_SIZE = 224
_MAE = ("vit_large_patch16_224", {"global_pool": "avg"})
RETFOUND_ARCHITECTURES = {
    "retfound": _MAE,
    "retfound_mae": _MAE,
    "retfound_dinov2": ("vit_large_patch14_dinov2", {}),
    "retfound_tiny": (
        "vit_large_patch16_224",
        {"global_pool": "avg", "embed_dim": 64, "depth": 2, "num_heads": 4},
    ),
}
# Pre-training parts that fine-tuning discards (MAE decoder, mask token, final norm of MAE).
_PRETRAINING_ONLY = re.compile(r"^(decoder_.*|mask_token|norm\..*)$")
# What a fine-tuning model adds on top of the pre-trained encoder.
_NEW_FOR_FINETUNING = re.compile(r"^(head|fc_norm)\.")


def is_retfound(model_name: str) -> bool:
    """Whether `model_name` names a RETFound variant rather than a timm architecture."""
    return model_name.lower() in RETFOUND_ARCHITECTURES


def retfound_architecture(
    name: str, image_size: int | None = None, drop_path_rate: float | None = None
) -> tuple[str, dict]:
    """(timm architecture, timm keyword arguments) of a RETFound variant."""
    key = name.lower()
    if key not in RETFOUND_ARCHITECTURES:
        raise ValueError(
            f"Unknown RETFound variant {name!r}: use one of {list(RETFOUND_ARCHITECTURES)}."
        )
    architecture, model_args = RETFOUND_ARCHITECTURES[key]
    rate = RETFOUND_DROP_PATH if drop_path_rate is None else drop_path_rate
    return architecture, {
        **model_args,
        "img_size": image_size or RETFOUND_SIZE,
        "drop_path_rate": rate,
    }


def retfound_state_dict(checkpoint: dict, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The encoder weights of an official RETFound file, with timm's key names.

    MAE files keep them under "model"; DINOv2 files under "teacher", prefixed "backbone." beside
    the DINO/iBOT heads (dropped), with SwiGLU names mlp.w12/mlp.w3 for mlp.fc1/mlp.fc2.
    """
    if "model" in checkpoint:
        state = checkpoint["model"]
    elif "teacher" in checkpoint:
        state = checkpoint["teacher"]
    elif "patch_embed.proj.weight" in checkpoint:
        state = checkpoint
    else:
        raise CheckpointError(
            f"{source} is not a RETFound checkpoint: it has no 'model' (MAE) or 'teacher' (DINOv2) "
            f"entry and no ViT keys; top-level keys: {sorted(checkpoint)[:10]}. A classifier checkpoint "
            "of another architecture belongs in a baseline model_name, not a RETFound one."
        )
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{source}: the weights entry is not a dict of tensors.")
    if any(k.startswith("backbone.") for k in state):
        state = {
            k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")
        }
    state = {k.removeprefix("module."): v for k, v in state.items()}
    return {
        k.replace("mlp.w12.", "mlp.fc1.").replace("mlp.w3.", "mlp.fc2."): v
        for k, v in state.items()
    }


def load_retfound_weights(model: torch.nn.Module, path: str | Path) -> list[str]:
    """Load an official RETFound checkpoint into a timm ViT as the official fine-tuning code does.

    Drops the decoder, mask token and MAE norm, resamples pos_embed to the model's grid, drops a
    head of another shape and re-initialises it with trunc_normal(std=2e-5). Only head.* and
    fc_norm.* may stay missing; every other gap or surplus is an error that lists the keys.
    """
    state = retfound_state_dict(read_checkpoint(path), source=str(path))
    if not any(k.startswith("blocks.") for k in state):
        raise CheckpointError(
            f"{path} has no transformer blocks (blocks.N.*): it is not a ViT encoder."
        )
    adapt_pos_embed(state, model)
    missing = load_checked(model, state, str(path), _NEW_FOR_FINETUNING, _PRETRAINING_ONLY)
    if "head.weight" in missing:
        trunc_normal_(model.head.weight, std=2e-5)
    logger.info("Loaded RETFound weights from %s; newly initialised: %s.", path, missing or "none")
    return missing
