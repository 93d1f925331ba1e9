"""Graders as plain `transformers.TimmWrapperForImageClassification` models.

A saved model is a standard transformers folder: `AutoModelForImageClassification`,
`AutoImageProcessor` and `pipeline("image-classification")` load it without dr_hf, since
config.json holds the timm architecture, its model_args, the grade names and a `pretrained_cfg`
(mean, std, input size, interpolation) from which the image processor rebuilds the preprocessing.
"""

import logging
import re
from pathlib import Path

import safetensors.torch
import timm
import torch
import yaml
from peft import PeftModel
from timm.models import clean_state_dict, get_pretrained_cfg
from transformers import (
    AutoModelForImageClassification,
    PreTrainedModel,
    TimmWrapperConfig,
    TimmWrapperForImageClassification,
)

from dr_hf.config import RETFOUND_NAMES, ModelArguments
from dr_hf.grades import ID2LABEL, IMAGENET_MEAN, IMAGENET_STD, LABEL2ID, NUM_GRADES
from dr_hf.lora import (
    BASE_WEIGHTS,
    apply_lora,
    base_fingerprint,
    load_adapter,
    read_base_record,
    trained_head,
)
from dr_hf.retfound import (
    CheckpointError,
    adapt_pos_embed,
    load_checked,
    load_retfound_weights,
    read_checkpoint,
    retfound_architecture,
)

logger = logging.getLogger(__name__)

_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
RUN_CONFIG = "config.yaml"


def create_model(
    args: ModelArguments, image_size: int | None = None
) -> PreTrainedModel | PeftModel:
    """Build the grader: timm baseline or RETFound, its initial weights, then LoRA if asked.

    Weights: a local file (timm/torch state dict, safetensors, or for RETFound the official
    checkpoint), a Hub repository id (downloaded, or read from the HF cache), or None for timm's
    own random initialisation, which is kept (transformers' N(0, 0.02) re-initialisation is
    avoided). The config records the file's name and the base's tensor fingerprint, not its path.
    """
    config = model_config(args, image_size)
    model = build_model(config)
    weights = args.pretrained_weights
    file = None
    if weights:
        file = resolve_weights(weights)
        load_base_weights(model, file, retfound=args.is_retfound)
    model.config.dr_hf_base = {  # saved in config.json and beside adapters: no local paths
        "model_name": args.model_name,
        "pretrained_weights": weights and _public_name(weights),
        "weights_file": file.name if file else None,
        "fingerprint": base_fingerprint(model),
    }
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
    return model


def model_config(args: ModelArguments, image_size: int | None = None) -> TimmWrapperConfig:
    """The TimmWrapperConfig: timm architecture and kwargs, grades, preprocessing."""
    if args.is_retfound:
        architecture, model_args = retfound_architecture(
            args.model_name, image_size, args.drop_path_rate
        )
        size = model_args["img_size"]
        mean, std, interpolation = IMAGENET_MEAN, IMAGENET_STD, "bicubic"
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
    return TimmWrapperConfig(
        architecture=architecture,
        model_args=model_args,
        num_labels=args.num_labels,
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


def build_model(config: TimmWrapperConfig) -> TimmWrapperForImageClassification:
    """A TimmWrapper holding a timm model built by timm itself, with timm's initialisation.

    The wrapper's own construction (and its weight re-initialisation) happens on the meta device,
    then the real timm model takes its place: same random draws as timm.create_model.
    """
    timm_model = timm.create_model(
        config.architecture,
        pretrained=False,
        num_classes=config.num_labels,
        **(config.model_args or {}),
    )
    with torch.device("meta"):
        model = TimmWrapperForImageClassification(config)
    model.timm_model = timm_model
    return model


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
    if (folder / "adapter_config.json").is_file():
        record = read_base_record(folder)
        if record is None:
            raise FileNotFoundError(
                f"{folder} holds a LoRA adapter without its base record (dr_hf_base.json): build the "
                "base yourself and use dr_hf.lora.load_adapter(folder, base, force=True)."
            )
        base = build_model(TimmWrapperConfig.from_dict(record))
        info = record.get("dr_hf_base") or {}
        if (folder / BASE_WEIGHTS).is_file():
            base.load_state_dict(safetensors.torch.load_file(folder / BASE_WEIGHTS), strict=True)
        elif info.get("pretrained_weights"):
            file = _base_weights_file(info, retfound_weights, folder)
            retfound = str(info.get("model_name")).lower() in RETFOUND_NAMES
            load_base_weights(base, file, retfound=retfound)
        else:
            raise FileNotFoundError(
                f"The adapter in {folder} was trained on a randomly initialised base whose weights "
                f"({BASE_WEIGHTS}) are not in the folder: that base cannot be rebuilt."
            )
        return load_adapter(folder, base, force=force)
    if (folder / "config.json").is_file():
        return AutoModelForImageClassification.from_pretrained(folder)
    raise FileNotFoundError(
        f"{folder} holds neither a model (config.json + model.safetensors) nor a LoRA adapter "
        "(adapter_config.json): give a training output folder such as outputs/run/best or a checkpoint-N."
    )


def _base_weights_file(info: dict, given: str | None, folder: Path) -> Path:
    """The base weights: those given, else those the run's config.yaml names (a local path stays
    on this machine), else the recorded Hub id or file name. The fingerprint checks the result."""
    name = info.get("weights_file") or info["pretrained_weights"]
    candidates = [given] if given else [run_config(folder).get("pretrained_weights")]
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


def run_config(model_path: str | Path) -> dict:
    """The config.yaml training wrote in its output folder, beside best/ and checkpoint-N (or in
    the model folder itself); {} without one."""
    model_path = Path(model_path)
    for path in (model_path / RUN_CONFIG, model_path.parent / RUN_CONFIG):
        if path.is_file():
            try:
                values = yaml.safe_load(path.read_text())
            except yaml.YAMLError as error:
                raise ValueError(f"{path} is not a readable run config: {error}") from error
            return values if isinstance(values, dict) else {}
    return {}


def _public_name(weights: str) -> str:
    """A Hub id as it is; a local file or folder by its name only."""
    path = Path(weights).expanduser()
    return path.name if path.exists() else weights


def _download(repo_id: str) -> Path:
    """The weights file of a Hub repository: model.safetensors, pytorch_model.bin, or its only
    weights file. hf_hub_download answers from the HF cache offline, so a cached repository needs
    no network; only a repository without the usual names is listed (or its cached snapshot)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        for name in ("model.safetensors", "pytorch_model.bin"):
            try:
                return Path(hf_hub_download(repo_id, name))
            except RepositoryNotFoundError:  # gated or missing: no other file will do
                raise
            except Exception:  # not in the repository, or offline and not cached
                continue
        files = _repo_weights_files(repo_id)
        if len(files) != 1:
            raise FileNotFoundError(
                f"{repo_id} holds {len(files)} weights files ({files}): pass a local path."
            )
        return Path(hf_hub_download(repo_id, files[0]))
    except Exception as error:  # offline, gated, missing: huggingface_hub raises several kinds
        raise FileNotFoundError(
            f"Could not fetch weights for Hub id {repo_id!r} ({error}). Offline or gated (RETFound is "
            "gated): download the file yourself and pass its local path."
        ) from error


def _repo_weights_files(repo_id: str) -> list[str]:
    """The repository's weights files: the Hub's listing, or offline its cached snapshot's."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        files = HfApi().list_repo_files(repo_id)
    except RepositoryNotFoundError:
        raise
    except Exception:  # no network: what the cache holds
        folder = Path(snapshot_download(repo_id, local_files_only=True))
        files = [
            path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()
        ]
    return [name for name in files if name.endswith(_WEIGHT_SUFFIXES)]
