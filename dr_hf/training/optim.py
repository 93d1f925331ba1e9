"""Layer-wise learning-rate decay for ViT graders (BEiT, MAE and RETFound fine-tuning).

timm's `param_groups_layer_decay` does the grouping on the timm model inside the transformers
wrapper (and inside a PEFT model, whose LoRA matrices sit in `blocks.i.attn.*` and so share
block i's rate); this module turns its relative `lr_scale` into absolute rates and names.

With a depth-L ViT and decay d: head and fc_norm get lr, blocks.i get lr * d^(L - i), and
cls_token, pos_embed and patch_embed get lr * d^(L + 1). Biases, norms, pos_embed and cls_token
(timm's `no_weight_decay()`) get no weight decay. Pass the groups to the Trainer with
`optimizer_cls_and_kwargs=(torch.optim.AdamW, {"params": groups, ...})` or
`optimizers=(AdamW(groups), None)`: its LambdaLR schedulers multiply each group's own initial lr,
so warm-up and cosine decay keep the per-layer ratios. The groups come sorted by decreasing lr,
so the Trainer's logged learning rate is the head's.
"""

import torch
from timm.models import group_parameters
from timm.optim import param_groups_layer_decay
from torch import nn
from transformers import Trainer, TrainingArguments

from dr_hf.models.parts import timm_backbone


def layer_decay_param_groups(
    model: nn.Module, learning_rate: float, weight_decay: float, layer_decay: float
) -> list[dict]:
    """Optimizer param groups with layer-wise lr decay, trainable parameters only.

    Each group has "params", "param_names" (names in `model`), "lr" (absolute), "lr_scale",
    "weight_decay" and "layer_id" (0 = embeddings, i + 1 = blocks.i, L + 1 = norm and head).
    Raises ValueError for models without ViT blocks (CNNs).
    """
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay={layer_decay} must lie in (0, 1], e.g. 0.65 for RETFound.")
    backbone = timm_backbone(model)
    if not all(hasattr(backbone, a) for a in ("blocks", "patch_embed", "group_matcher")):
        raise ValueError(
            f"layer_decay is for ViTs (timm models with patch_embed and blocks); "
            f"{type(backbone).__name__} has none: leave layer_decay unset for this model."
        )
    no_decay = backbone.no_weight_decay() if hasattr(backbone, "no_weight_decay") else ()
    groups = param_groups_layer_decay(
        backbone, weight_decay=weight_decay, no_weight_decay_list=no_decay, layer_decay=layer_decay
    )
    layer_of = group_parameters(backbone, backbone.group_matcher(coarse=False), reverse=True)
    top = max(layer_of.values())
    backbone_names = {id(p): name for name, p in backbone.named_parameters()}
    names = {id(p): name for name, p in model.named_parameters()}

    result = []
    for group in groups:
        layer_id = layer_of.get(backbone_names[id(group["params"][0])], top)
        result.append(_group(group["params"], names, learning_rate, group, layer_id))

    grouped = {id(p) for group in result for p in group["params"]}
    outside = [p for p in model.parameters() if p.requires_grad and id(p) not in grouped]
    for decays in (True, False):  # parameters outside the timm model: full rate, like the head
        params = [p for p in outside if (p.ndim > 1) == decays]
        if params:
            scale = {"lr_scale": 1.0, "weight_decay": weight_decay if decays else 0.0}
            result.append(_group(params, names, learning_rate, scale, top))
    return sorted(result, key=lambda group: -group["lr"])


def _group(params: list[torch.Tensor], names: dict, learning_rate: float, settings: dict, layer_id):
    return {
        "params": params,
        "param_names": [names[id(p)] for p in params],
        "lr": learning_rate * settings["lr_scale"],
        "lr_scale": settings["lr_scale"],
        "weight_decay": settings["weight_decay"],
        "layer_id": layer_id,
    }


def layer_decay_optimizer(model: nn.Module, args: TrainingArguments) -> tuple | None:
    """The Trainer's `optimizer_cls_and_kwargs` for `args.layer_decay` (None without it): the
    optimizer `args.optim` names, over `layer_decay_param_groups`."""
    if getattr(args, "layer_decay", None) is None:
        return None
    groups = layer_decay_param_groups(
        model, args.learning_rate, args.weight_decay, args.layer_decay
    )
    optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    return optimizer_cls, {**optimizer_kwargs, "params": groups}
