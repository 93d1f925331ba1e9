"""RETFound as a timm ViT, and safe loading of checkpoint files (the official layouts included).

RETFound (Zhou et al., Nature 2023) is a ViT-Large/16 pre-trained on retinal images with MAE:
timm's `vit_large_patch16_224` with `global_pool="avg"` (mean of the patch tokens, cls excluded,
then `fc_norm`), exactly as the official `models_vit.py`. The DINOv2 variant is timm's
`vit_large_patch14_dinov2` at 224 pixels. `retfound_tiny` keeps the structure at a tiny width
for tests and CPU demonstrations.
"""

import argparse
import logging
import pickle
import re
from pathlib import Path

import safetensors.torch
import torch
from timm.layers import resample_abs_pos_embed, trunc_normal_

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


class CheckpointError(ValueError):
    """A weights file that cannot be used as asked; the message says why and what to do."""


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


def read_checkpoint(path: str | Path) -> dict:
    """Read a `.safetensors` file or a torch pickle that holds only tensors and plain containers.

    torch pickles load with `weights_only=True` (argparse.Namespace allowed: MAE checkpoints store
    their training arguments); a file that needs code execution is refused, never executed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Weights file {path} does not exist: give the path of a local file."
        )
    if path.suffix == ".safetensors":
        return safetensors.torch.load_file(path, device="cpu")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        try:
            found = ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        except Exception:  # an old-format pickle: torch cannot list its globals
            found = ""
        raise CheckpointError(
            f"{path} was refused: loading it would run code or build objects other than tensors "
            f"({found or 'non-allowlisted pickle globals'}). Only load files you trust; if you trust "
            "this one, re-save its state dict once with torch.save(state_dict) or safetensors and "
            "pass that file."
        ) from error
    except RuntimeError as error:
        raise CheckpointError(f"{path} is not a readable torch checkpoint: {error}") from error
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"{path} holds a {type(checkpoint).__name__}, not a dict of weights: save the model's "
            "state_dict() rather than the model object."
        )
    return checkpoint


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


def adapt_pos_embed(state: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    """Bicubically resample a ViT's position embedding to the model's grid, as the official code."""
    if "pos_embed" not in state or getattr(model, "pos_embed", None) is None:
        return
    old, new = state["pos_embed"], model.pos_embed
    if old.shape == new.shape:
        return
    prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
    state["pos_embed"] = resample_abs_pos_embed(
        old, new_size=list(model.patch_embed.grid_size), num_prefix_tokens=prefix, antialias=False
    )
    logger.info("Resampled pos_embed %s -> %s.", tuple(old.shape), tuple(new.shape))


def load_checked(
    model: torch.nn.Module,
    state: dict[str, torch.Tensor],
    source: str,
    may_miss: re.Pattern,
    may_ignore: re.Pattern | None = None,
) -> list[str]:
    """Load `state` non-strictly, refusing any gap or surplus the caller did not allow.

    Returns the missing keys (those matching `may_miss`, left at their initialisation). Keys of
    `state` that match `may_ignore` and are not in the model are dropped; so are keys that may be
    missing (the classifier) when their shape differs from the model's (another class count).
    """
    own = model.state_dict()
    for key in [k for k in state if k in own and may_miss.match(k)]:
        if state[key].shape != own[key].shape:
            old, new = tuple(state[key].shape), tuple(own[key].shape)
            logger.info("Dropping %s %s from %s (model: %s).", key, old, source, new)
            del state[key]
    mismatched = [
        f"{k} {tuple(v.shape)} (model: {tuple(own[k].shape)})"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own and not (may_ignore and may_ignore.match(k))]
    problems = []
    if mismatched:
        problems.append(f"shapes differ for {_listing(mismatched)}")
    if bad_missing := [k for k in missing if not may_miss.match(k)]:
        problems.append(f"{len(bad_missing)} model weights are missing: {_listing(bad_missing)}")
    if unexpected:
        problems.append(
            f"{len(unexpected)} keys have no place in the model: {_listing(unexpected)}"
        )
    if problems:
        raise CheckpointError(
            f"{source} does not fit {type(model).__name__}: "
            + "; ".join(problems)
            + ". Check that model_name (and image size) match the architecture the file was saved from."
        )
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return missing


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


def _listing(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")
