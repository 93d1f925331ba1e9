"""LoRA adapters through PEFT: what to adapt, and loading an adapter onto the base it was trained
on (checked through the base record, `dr_hf.models.base_record`)."""

import logging
import re
from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from dr_hf.config.arguments import ModelArguments
from dr_hf.models.base_record import (
    BASE_RECORD,
    BASE_WEIGHTS,
    base_fingerprint,
    describe_base,
    read_base_record,
)
from dr_hf.models.parts import trained_head

logger = logging.getLogger(__name__)

VIT_TARGETS = r".*\.attn\.qkv"
_REGEX_CHARS = re.compile(r"[\\*+?|()\[\]^$]")


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


def apply_lora(model: nn.Module, args: ModelArguments) -> PeftModel:
    """Wrap `model` (a TimmWrapperForImageClassification) in LoRA adapters.

    Trained in full beside the adapters (`modules_to_save`): the classifier, fc_norm of global-pool
    ViTs, and every BatchNorm (their running statistics move in training mode; outside the
    adapter a reloaded model would lose them). The base's provenance, `model.config.dr_hf_base`
    (set by `create_model`; a bare fingerprint otherwise), is what the base record holds.
    """
    timm_model = model.timm_model
    targets = _targets(args.lora_target_modules) or default_targets(timm_model)
    to_save = trained_head(timm_model) + [
        name
        for name, module in timm_model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
    ]
    model.config.dr_hf_base = getattr(model.config, "dr_hf_base", None) or {
        "fingerprint": base_fingerprint(model)
    }
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
            f"({describe_base(record)}), but the given base has fingerprint {actual} "
            f"({describe_base(base_model.config.to_dict())}). Build the base from the same weights "
            "file, or pass force=True to load it anyway."
        )
    if problem and not force:
        raise ValueError(problem)
    if problem:
        logger.warning(
            "!" * 20 + " %s Loading anyway (force=True): predictions may be garbage.", problem
        )
    return PeftModel.from_pretrained(base_model, str(folder), is_trainable=is_trainable)


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
