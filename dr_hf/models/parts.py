"""Finding the parts of a grader: the model inside a PEFT wrapper, the timm model inside it, its
head, and the input size and normalisation it was built for."""

from timm.data import resolve_data_config
from torch import nn


def base_model(model: nn.Module) -> nn.Module:
    """The grader inside a PEFT model, or the model itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def timm_backbone(model: nn.Module) -> nn.Module:
    """The timm model inside a (PEFT-wrapped) TimmWrapper, or the model itself."""
    model = base_model(model)
    return getattr(model, "timm_model", model)


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


def data_config(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...], int]:
    """(mean, std, input side) of a (PEFT-wrapped) grader or its config, through timm's
    `resolve_data_config`.

    Read from the grader's `config.pretrained_cfg`, not from `resolve_model_data_config(timm
    model)`: a model that transformers loads from a folder gets timm's defaults there, not the
    size and normalisation the grader was built for.
    """
    config = getattr(base_model(model), "config", model)
    pretrained_cfg = dict(getattr(config, "pretrained_cfg", None) or {}) or {
        "input_size": (3, 224, 224)
    }
    cfg = resolve_data_config(pretrained_cfg=pretrained_cfg)  # ImageNet's mean and std by default
    return tuple(cfg["mean"]), tuple(cfg["std"]), int(cfg["input_size"][-1])


OPERATING_POINTS_KEY = "dr_hf_operating_points"


def operating_points(model: nn.Module) -> dict:
    """The referable-DR thresholds training saved in the grader's config (`spec_90`, `spec_95`:
    threshold on P(grade >= 2), sensitivity and specificity on the validation split); {} for a
    model trained without them."""
    config = getattr(base_model(model), "config", None)
    return dict(getattr(config, OPERATING_POINTS_KEY, None) or {})
