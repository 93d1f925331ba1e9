"""LoRA adapters through PEFT, and the record of the base model each adapter belongs to.

An adapter holds only the LoRA matrices and the `modules_to_save` copies: loaded onto a base built
with other weights it silently gives garbage. So every adapter folder also holds `dr_hf_base.json`:
the base model's config (timm architecture, model_args, image size, preprocessing) and its
provenance (the weights' Hub id or file name, never a local path, and a fingerprint: the SHA-256
of the frozen base tensors). `load_adapter` refuses a base whose fingerprint differs.

A randomly initialised base cannot be rebuilt (timm's initialisation is not reproducible across
versions and RNG histories), so for such a base the frozen weights are saved beside the adapter
(`dr_hf_base.safetensors`) and the folder stays self-contained.
"""

import hashlib
import json
import logging
import re
from pathlib import Path

import safetensors.torch
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from dr_hf.config import ModelArguments

logger = logging.getLogger(__name__)

BASE_RECORD = "dr_hf_base.json"
BASE_WEIGHTS = "dr_hf_base.safetensors"
VIT_TARGETS = r".*\.attn\.qkv"
_REGEX_CHARS = re.compile(r"[\\*+?|()\[\]^$]")


def trained_head(timm_model: nn.Module) -> list[str]:
    """Names (inside the timm model) of the classifier, and of fc_norm for global-pool ViTs.

    RETFound's checkpoint holds neither: they train in full while the rest is adapted.
    """
    classifier = timm_model.get_classifier()
    names = [name for name, module in timm_model.named_modules() if module is classifier]
    fc_norm = getattr(timm_model, "fc_norm", None)
    if fc_norm is not None and any(True for _ in fc_norm.parameters()):
        names.append("fc_norm")
    return names


def default_targets(timm_model: nn.Module) -> str | list[str]:
    """ViTs: the attention qkv Linear (a regex that leaves patch_embed.proj alone). CNNs: the
    ordinary (groups=1) convolutions of the last feature stage, e.g. layer4 of a ResNet."""
    names = [name for name, _ in timm_model.named_modules()]
    if any(re.fullmatch(VIT_TARGETS, name) for name in names):
        return VIT_TARGETS
    stage = timm_model.feature_info[-1]["module"]
    convs = [
        f"timm_model.{stage}.{name}"
        for name, module in timm_model.get_submodule(stage).named_modules()
        if isinstance(module, nn.Conv2d) and module.groups == 1
    ]
    if not convs:
        raise ValueError(
            f"No convolution found in the last stage ({stage}) of {type(timm_model).__name__}: "
            "set lora_target_modules to the module names to adapt."
        )
    return convs


def apply_lora(model: nn.Module, args: ModelArguments, base_info: dict | None = None) -> PeftModel:
    """Wrap `model` (a TimmWrapperForImageClassification) in LoRA adapters.

    Trained in full beside the adapters (`modules_to_save`): the classifier, fc_norm of global-pool
    ViTs, and every BatchNorm (their running statistics move in training mode; outside the
    adapter a reloaded model would lose them). `base_info` (default: `model.config.dr_hf_base`,
    set by `create_model`) is what `save_adapter` and `BaseRecordCallback` record.
    """
    timm_model = model.timm_model
    targets = _targets(args.lora_target_modules) or default_targets(timm_model)
    to_save = trained_head(timm_model) + [
        name
        for name, module in timm_model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
    ]
    model.config.dr_hf_base = (
        base_info
        or getattr(model.config, "dr_hf_base", None)
        or {"fingerprint": base_fingerprint(model)}
    )
    config = LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=targets,
        modules_to_save=[f"timm_model.{name}" for name in to_save],
    )
    peft_model = get_peft_model(model, config)
    if not model.config.dr_hf_base.get("pretrained_weights"):
        logger.warning(
            "LoRA on a randomly initialised base: its frozen weights will be saved beside every "
            "adapter (%s), as such a base cannot be rebuilt.",
            BASE_WEIGHTS,
        )
    return peft_model


def save_adapter(model: PeftModel, folder: str | Path) -> None:
    """Save the adapter as a standard PEFT folder, with the base record beside it."""
    model.save_pretrained(str(folder))
    write_base_record(model, folder)


class BaseRecordCallback(TrainerCallback):
    """Writes the base record into each `checkpoint-N` the Trainer saves of a LoRA model (main
    process only), so that a checkpoint loads on its own as `best/` does."""

    def on_save(self, args, state, control, model=None, **kwargs):
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if isinstance(model, PeftModel) and args.should_save and folder.is_dir():
            write_base_record(model, folder)


def write_base_record(model: PeftModel, folder: str | Path) -> None:
    base = model.get_base_model()
    folder = Path(folder)
    (folder / BASE_RECORD).write_text(json.dumps(base.config.to_dict(), indent=2) + "\n")
    if not (getattr(base.config, "dr_hf_base", None) or {}).get("pretrained_weights"):
        safetensors.torch.save_file(_frozen_base_state(base), folder / BASE_WEIGHTS)


def read_base_record(folder: str | Path) -> dict | None:
    path = Path(folder) / BASE_RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def load_adapter(
    folder: str | Path, base_model: nn.Module, force: bool = False, is_trainable: bool = False
) -> PeftModel:
    """Load a LoRA adapter onto `base_model`, refusing a base other than the one it was trained on.

    With force=True a mismatch (or a folder without a base record) only logs a warning.
    """
    folder = Path(folder)
    record = read_base_record(folder)
    expected = (record or {}).get("dr_hf_base", {}).get("fingerprint")
    actual = base_fingerprint(base_model)
    problem = None
    if record is None:
        problem = f"{folder} has no {BASE_RECORD}: the adapter's base cannot be checked."
    elif expected != actual:
        problem = (
            f"The adapter in {folder} was trained on base fingerprint {expected} "
            f"({_describe(record)}), but the given base has fingerprint {actual} "
            f"({_describe(base_model.config.to_dict())}). Build the base from the same weights "
            "file, or pass force=True to load it anyway."
        )
    if problem and not force:
        raise ValueError(problem)
    if problem:
        logger.warning(
            "!" * 20 + " %s Loading anyway (force=True): predictions may be garbage.", problem
        )
    return PeftModel.from_pretrained(base_model, str(folder), is_trainable=is_trainable)


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


def _targets(names: list[str] | None) -> str | list[str] | None:
    """One name with regex characters is a regex (full match); otherwise names match by suffix."""
    if not names:
        return None
    if len(names) == 1 and _REGEX_CHARS.search(names[0]):
        return names[0]
    if "proj" in names:
        raise ValueError(
            f"lora_target_modules={names} would also adapt patch_embed.proj (the input convolution): "
            r"use a regex such as '.*\.attn\.(qkv|proj)'."
        )
    return list(names)


def _frozen_base_state(base: nn.Module) -> dict[str, torch.Tensor]:
    """The base model's own weights inside a PEFT wrapper: LoRA layers and trained copies removed."""
    state = {}
    for key, value in base.state_dict().items():
        if "lora_" in key or ".modules_to_save." in key:
            continue
        key = key.replace(".base_layer.", ".").replace(".original_module.", ".")
        state[key] = value.detach().contiguous()
    return state


def _describe(config: dict) -> str:
    info = config.get("dr_hf_base") or {}
    weights = info.get("weights_file") or info.get("pretrained_weights") or "random initialisation"
    return f"{config.get('architecture')} {config.get('model_args')}, weights: {weights}"
