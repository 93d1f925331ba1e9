"""Weight files: finding them (a local file, a model folder, a Hub id), reading them safely, and
loading them into a grader with every gap or surplus checked.

torch pickles load with `weights_only=True`; a file that needs code execution is refused, never
run. Only the parts a fine-tuning model adds (the classifier, and fc_norm for RETFound) may be
absent from a file; anything else that does not fit is a `CheckpointError` listing the keys.
"""

import argparse
import logging
import pickle
import re
from pathlib import Path

import safetensors.torch
import torch
from timm.layers import resample_abs_pos_embed

from dr_hf.errors import CheckpointError, listing

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


def resolve_weights(weights: str) -> Path:
    """A local weights file: the path itself, the weights inside a model folder, or a Hub download."""
    path = Path(weights).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        found = [
            path / name
            for name in ("model.safetensors", "pytorch_model.bin")
            if (path / name).is_file()
        ]
        if not found:
            raise FileNotFoundError(f"{path} holds no model.safetensors or pytorch_model.bin.")
        return found[0]
    if re.fullmatch(r"[\w.-]+/[\w.-]+", weights) and not path.parent.is_dir():
        return _download(weights)
    raise FileNotFoundError(
        f"Weights file {weights} does not exist: give the path of a local file."
    )


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
        problems.append(f"shapes differ for {listing(mismatched, 8, inline=True)}")
    if bad_missing := [k for k in missing if not may_miss.match(k)]:
        problems.append(
            f"{len(bad_missing)} model weights are missing: {listing(bad_missing, 8, inline=True)}"
        )
    if unexpected:
        problems.append(
            f"{len(unexpected)} keys have no place in the model: {listing(unexpected, 8, inline=True)}"
        )
    if problems:
        raise CheckpointError(
            f"{source} does not fit {type(model).__name__}: "
            + "; ".join(problems)
            + ". Check that model_name (and image size) match the architecture the file was saved from."
        )
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return missing


def public_name(weights: str) -> str:
    """A Hub id as it is; a local file or folder by its name only."""
    path = Path(weights).expanduser()
    return path.name if path.exists() else weights


def _download(repo_id: str) -> Path:
    """The weights file of a Hub repository: model.safetensors, pytorch_model.bin, or its only
    weights file. hf_hub_download answers from the HF cache offline, so a cached repository needs
    no network; only a repository without the usual names is listed (or its cached snapshot)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        for name in ("model.safetensors", "pytorch_model.bin"):
            try:
                return Path(hf_hub_download(repo_id, name))
            except EntryNotFoundError:  # not in the repository, or offline and not cached
                continue
        files = _repo_weights_files(repo_id)
        if len(files) != 1:
            raise FileNotFoundError(
                f"{repo_id} holds {len(files)} weights files ({files}): pass a local path."
            )
        return Path(hf_hub_download(repo_id, files[0]))
    except Exception as error:  # Hub errors, and its HTTP client's own connection errors
        raise FileNotFoundError(
            f"Could not fetch weights for Hub id {repo_id!r} ({error}). Offline or gated (RETFound is "
            "gated): download the file yourself and pass its local path."
        ) from error


def _repo_weights_files(repo_id: str) -> list[str]:
    """The repository's weights files: the Hub's listing, or offline its cached snapshot's."""
    from huggingface_hub import HfApi, snapshot_download

    try:
        files = HfApi().list_repo_files(repo_id)
    except Exception:  # no network (its HTTP client's own error types): what the cache holds
        folder = Path(snapshot_download(repo_id, local_files_only=True))
        files = [
            path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()
        ]
    return [name for name in files if name.endswith(WEIGHT_SUFFIXES)]
