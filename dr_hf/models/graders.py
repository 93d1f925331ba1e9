"""Graders as plain `transformers.TimmWrapperForImageClassification` models.

A softmax grader is a plain `TimmWrapperForImageClassification`; ordinal and regression graders
are its subclass `OrderedTimmForImageClassification` (`dr_hf.models.ordered_heads`), whose code
travels with the saved folder. A saved model is a standard transformers folder: `AutoModelForImageClassification`,
`AutoImageProcessor` and `pipeline("image-classification")` load it without dr_hf, since
config.json holds the timm architecture, its model_args, the grade names and a `pretrained_cfg`
(mean, std, input size, interpolation). `create_model` returns the grader with its
`FundusImageProcessor`, which training saves beside it and names in config.json.
"""

import logging
import re
from pathlib import Path

import safetensors.torch
import timm
import torch
from peft import PeftModel
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import clean_state_dict, get_pretrained_cfg
from transformers import (
    AutoModelForImageClassification,
    PreTrainedModel,
    TimmWrapperConfig,
    TimmWrapperForImageClassification,
)

from dr_hf.config.arguments import ModelArguments
from dr_hf.data.fundus_processor import FundusImageProcessor
from dr_hf.errors import CheckpointError
from dr_hf.grades import ID2LABEL, LABEL2ID, NUM_GRADES
from dr_hf.grading_rule import HEAD_KEY, head_of
from dr_hf.models.base_record import BASE_WEIGHTS, base_fingerprint, read_base_record
from dr_hf.models.lora import apply_lora, load_adapter
from dr_hf.models.ordered_heads import OrderedTimmForImageClassification, head_outputs
from dr_hf.models.parts import data_config, trained_head
from dr_hf.models.retfound import is_retfound, load_retfound_weights, retfound_architecture
from dr_hf.models.weights import (
    adapt_pos_embed,
    load_checked,
    public_name,
    read_checkpoint,
    resolve_weights,
)
from dr_hf.run_folder import folder_damage, read_run_config

logger = logging.getLogger(__name__)


def create_model(
    args: ModelArguments,
    image_size: int | None = None,
    crop_fov: bool = True,
    ben_graham: bool = False,
    mean_grade: float | None = None,
) -> tuple[PreTrainedModel | PeftModel, FundusImageProcessor]:
    """Build the grader (timm baseline or RETFound, its initial weights, then LoRA if asked) and
    the `FundusImageProcessor` that makes its input: input side, mean and std are the
    architecture's (side `image_size` when given), crop and Ben Graham as asked.

    Weights: a local file (timm/torch state dict, safetensors, or for RETFound the official
    checkpoint), a Hub repository id (downloaded, or read from the HF cache), or None for timm's
    own random initialisation, which is kept (transformers' N(0, 0.02) re-initialisation is
    avoided). The config records the file's name and the base's tensor fingerprint, not its path.
    A regression head's bias starts at `mean_grade` (the training grades' mean), when given, so
    that training does not spend its first steps moving the score from 0 to the typical grade.
    """
    config, processor = model_config(args, image_size, crop_fov, ben_graham)
    model = build_model(config)
    weights = args.pretrained_weights
    file = None
    if weights:
        file = resolve_weights(weights)
        load_base_weights(model, file, retfound=is_retfound(args.model_name))
    model.config.dr_hf_base = {  # saved in config.json and beside adapters: no local paths
        "model_name": args.model_name,
        "pretrained_weights": weights and public_name(weights),
        "weights_file": file.name if file else None,
        "fingerprint": base_fingerprint(model),
    }
    if args.head == "regression" and mean_grade is not None:
        with torch.no_grad():
            model.timm_model.get_classifier().bias.fill_(mean_grade)
    if args.lora:
        model = apply_lora(model, args)
    summary = parameter_summary(model)
    logger.info(
        "%s (%s): %s trainable parameters of %s (%.2f%%).",
        args.model_name,
        file.name if file else "random initialisation",
        f"{summary['trainable']:,}",
        f"{summary['total']:,}",
        summary["trainable_pct"],
    )
    return model, processor


def model_config(
    args: ModelArguments,
    image_size: int | None = None,
    crop_fov: bool = True,
    ben_graham: bool = False,
) -> tuple[TimmWrapperConfig, FundusImageProcessor]:
    """The TimmWrapperConfig (timm architecture and kwargs, grades, and timm's data config for
    tools that read only config.json) and the processor of the same input side and
    normalisation."""
    if is_retfound(args.model_name):
        architecture, model_args = retfound_architecture(
            args.model_name, image_size, args.drop_path_rate
        )
        size = model_args["img_size"]
        mean, std, interpolation = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, "bicubic"
    else:
        architecture, model_args = args.model_name, {}
        if not timm.is_model(architecture):
            close = timm.list_models(f"*{architecture.split('.')[0][:8]}*")[:8]
            raise ValueError(
                f"model_name={architecture!r} is neither a timm architecture nor one of the RETFound "
                f"names; close timm names: {close or 'none'} (see timm.list_models())."
            )
        cfg = get_pretrained_cfg(architecture, allow_unregistered=True)
        size = image_size or cfg.input_size[-1]
        mean, std, interpolation = cfg.mean, cfg.std, cfg.interpolation or "bicubic"
        if args.drop_path_rate is not None:
            model_args["drop_path_rate"] = args.drop_path_rate
        if cfg.fixed_input_size and image_size:
            model_args["img_size"] = image_size
    labels = {"id2label": ID2LABEL, "label2id": LABEL2ID} if args.num_labels == NUM_GRADES else {}
    labels["num_labels"] = args.num_labels
    if args.head == "ordinal":
        labels["problem_type"] = "single_label_classification"
    elif args.head == "regression":  # pipeline() applies no function to a regression score
        labels = {
            "num_labels": 1,
            "id2label": {0: "grade"},
            "label2id": {"grade": 0},
            "problem_type": "regression",
        }
    config = TimmWrapperConfig(
        architecture=architecture,
        model_args=model_args,
        **labels,
        pretrained_cfg={
            "input_size": [3, size, size],
            "mean": list(mean),
            "std": list(std),
            "interpolation": interpolation,
            "crop_pct": 1.0,
            "crop_mode": "center",
        },
    )
    setattr(config, HEAD_KEY, args.head)
    processor = FundusImageProcessor(
        size=size, crop_fov=crop_fov, ben_graham=ben_graham, image_mean=mean, image_std=std
    )
    return config, processor


def processor_for(model: torch.nn.Module) -> FundusImageProcessor:
    """A processor for a model that came without one: the input side and normalisation its
    config records (`data_config`), with the training defaults (crop on, Ben Graham off)."""
    mean, std, size = data_config(model)
    return FundusImageProcessor(size=size, image_mean=list(mean), image_std=list(std))


def grader_class(config) -> type[TimmWrapperForImageClassification]:
    """The model class of a config's head (`dr_hf_head`): the plain TimmWrapper for softmax."""
    if head_of(config) == "softmax":
        return TimmWrapperForImageClassification
    return OrderedTimmForImageClassification


def build_model(config: TimmWrapperConfig) -> TimmWrapperForImageClassification:
    """A TimmWrapper (or its ordinal/regression subclass) holding a timm model built by timm
    itself, with timm's initialisation.

    The wrapper's own construction (and its weight re-initialisation) happens on the meta device,
    then the real timm model takes its place: same random draws as timm.create_model.
    """
    timm_model = timm.create_model(
        config.architecture,
        pretrained=False,
        num_classes=head_outputs(config),
        **(config.model_args or {}),
    )
    with torch.device("meta"):
        model = grader_class(config)(config)
    model.timm_model = timm_model
    return model


def load_base_weights(model: TimmWrapperForImageClassification, file: Path, retfound: bool) -> None:
    """Load initial weights into the wrapped timm model; only the classifier (and fc_norm for
    RETFound) may be absent or of another shape. Anything else that does not fit is an error."""
    if retfound:
        load_retfound_weights(model.timm_model, file)
        return
    checkpoint = read_checkpoint(file)
    for key in ("state_dict", "model"):
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
    state = {k.removeprefix("timm_model."): v for k, v in clean_state_dict(checkpoint).items()}
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{file} is not a state dict: some of its entries are not tensors.")
    adapt_pos_embed(state, model.timm_model)
    head = "|".join(re.escape(name) for name in trained_head(model.timm_model))
    missing = load_checked(model.timm_model, state, str(file), re.compile(rf"^({head})\."))
    logger.info("Loaded %s; newly initialised: %s.", file, missing or "none")


def parameter_summary(model: torch.nn.Module) -> dict:
    """Total parameters of the base model (LoRA matrices and trained copies not counted twice),
    trainable ones and their share in percent."""
    total = trainable = 0
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            trainable += parameter.numel()
        if "lora_" not in name and ".modules_to_save." not in name:
            total += parameter.numel()
    return {
        "total": total,
        "trainable": trainable,
        "trainable_pct": 100.0 * trainable / max(total, 1),
    }


def load_trained_model(
    path: str | Path, retfound_weights: str | None = None, force: bool = False
) -> PreTrainedModel | PeftModel:
    """Load what training saved: a model folder (config.json + model.safetensors, a Trainer
    checkpoint-N included) or a LoRA adapter folder, whose base is rebuilt from its record.

    `retfound_weights`: the weights file the adapter's base was built from (a RETFound checkpoint
    or any local file), needed when the recorded path is not found on this machine.
    """
    folder = Path(path)
    if any((folder / name).is_file() for name in ("adapter_config.json", "config.json")):
        if (damage := folder_damage(folder)) is not None:
            raise ValueError(
                f"{folder} cannot be loaded: {damage}. It was probably cut short while being "
                "written: train again, resume the run (`--resume last` writes best/ anew), or "
                "use one of its checkpoint-N folders."
            )
    if (folder / "adapter_config.json").is_file():
        record = read_base_record(folder)
        if record is None:
            raise FileNotFoundError(
                f"{folder} holds a LoRA adapter without its base record (dr_hf_base.json): build the "
                "base yourself and use dr_hf.models.lora.load_adapter(folder, base, force=True)."
            )
        base = build_model(TimmWrapperConfig.from_dict(record))
        info = record.get("dr_hf_base") or {}
        if (folder / BASE_WEIGHTS).is_file():
            base.load_state_dict(safetensors.torch.load_file(folder / BASE_WEIGHTS), strict=True)
        elif info.get("pretrained_weights"):
            file = _base_weights_file(info, retfound_weights, folder)
            retfound = is_retfound(str(info.get("model_name")))
            load_base_weights(base, file, retfound=retfound)
        else:
            raise FileNotFoundError(
                f"The adapter in {folder} was trained on a randomly initialised base whose weights "
                f"({BASE_WEIGHTS}) are not in the folder: that base cannot be rebuilt."
            )
        return load_adapter(folder, base, force=force)
    if (folder / "config.json").is_file():
        config = TimmWrapperConfig.from_pretrained(folder)
        if head_of(config) != "softmax":  # dr_hf's own class: no remote code to trust
            return OrderedTimmForImageClassification.from_pretrained(folder)
        return AutoModelForImageClassification.from_pretrained(folder)
    raise FileNotFoundError(
        f"{folder} holds neither a model (config.json + model.safetensors) nor a LoRA adapter "
        "(adapter_config.json): give a training output folder such as outputs/run/best or a checkpoint-N."
    )


def _base_weights_file(info: dict, given: str | None, folder: Path) -> Path:
    """The base weights: those given, else those the run's config.yaml names (a local path stays
    on this machine), else the recorded Hub id or file name. The fingerprint checks the result."""
    name = info.get("weights_file") or info["pretrained_weights"]
    candidates = [given] if given else [read_run_config(folder).get("pretrained_weights")]
    candidates.append(info["pretrained_weights"])
    problems = []
    for candidate in filter(None, candidates):
        try:
            return resolve_weights(candidate)
        except FileNotFoundError as error:
            if candidate == given:
                raise
            problems.append(str(error))
    raise FileNotFoundError(
        f"The adapter in {folder} was trained on a base built from {name}, which is not found "
        f"here ({'; '.join(problems)}). Pass retfound_weights='/path/to/{name}'."
    )
