"""What a run derives from its arguments before training (and refuses when they contradict each
other), and the W&B settings around it. Nothing here changes the caller's arguments or the
process environment behind its back: derived settings come back as new objects, and the W&B
variables are set only for the duration of a `with wandb_environment(...)` block."""

import contextlib
import copy
import logging
import os
from collections.abc import Iterator

from dr_hf.config.arguments import DEFAULT_WANDB_PROJECT, DataArguments, DRTrainingArguments
from dr_hf.data.multisource import common_prepare_info, describe_prepared, source_label
from dr_hf.data.prepare import steps_to_apply

logger = logging.getLogger(__name__)


def trainer_arguments(data_args: DataArguments, training_args: DRTrainingArguments):
    """A copy of `training_args` for the Trainer, with the settings the graders need.

    PeftModel hides the forward signature (`label_names`); graders use every parameter, so DDP's
    search for unused ones is a wasted graph walk; non-reentrant gradient checkpointing works with
    frozen bases. The Trainer never sees `push_to_hub` (it would upload every checkpoint; dr_hf
    uploads `best/`) nor `hub_token` (it pickles its arguments into each checkpoint).
    """
    if training_args.push_to_hub and not training_args.hub_model_id:
        raise ValueError("push_to_hub needs --hub_model_id user/name (checked before training).")
    args = copy.copy(training_args)
    args.label_names = args.label_names or ["labels"]
    if args.ddp_find_unused_parameters is None:
        args.ddp_find_unused_parameters = False
    if args.gradient_checkpointing and not args.gradient_checkpointing_kwargs:
        args.gradient_checkpointing_kwargs = {"use_reentrant": False}
    args.push_to_hub, args.hub_token = False, None
    return args


def wandb_settings(training_args: DRTrainingArguments) -> dict[str, str]:
    """The W&B environment variables of a run reporting to W&B ({} otherwise): an explicit
    wandb_project wins over WANDB_PROJECT, which wins over dr_hf's default."""
    if "wandb" not in training_args.report_to:
        return {}
    project = training_args.wandb_project or os.environ.get("WANDB_PROJECT")
    settings = {"WANDB_PROJECT": project or DEFAULT_WANDB_PROJECT}
    if training_args.wandb_tags:
        settings["WANDB_TAGS"] = ",".join(training_args.wandb_tags)
    return settings


@contextlib.contextmanager
def wandb_environment(training_args: DRTrainingArguments) -> Iterator[None]:
    """Set the run's W&B variables (read by the Trainer's WandbCallback) inside the block only."""
    settings = wandb_settings(training_args)
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def finish_wandb(training_args: DRTrainingArguments, metrics: dict) -> None:
    """Record the exported model's metrics in the W&B summary and close the run, so that an
    offline run's files are complete when training returns."""
    if "wandb" not in training_args.report_to:
        return
    import wandb

    if wandb.run is not None:
        wandb.run.summary.update(
            {f"best/{k}": v for k, v in metrics.items() if isinstance(v, float)}
        )
        wandb.finish()


def steps_left_to_apply(data_args: DataArguments) -> tuple[bool, bool]:
    """(crop, ben_graham): what the on-the-fly transform must still do, given the `dr-hf prepare`
    records of the training and validation sources.

    A step a source was prepared with must be one the run asks for: the run's preprocessing
    record (what evaluate and predict repeat) would otherwise differ from what the model saw.
    Training and validation must have been prepared alike, for the same reason, and so must
    each of several training (or validation) sources.
    """
    train = common_prepare_info(data_args.data_dir, "training")
    if data_args.validation_dir:
        validation = common_prepare_info(data_args.validation_dir, "validation")
    else:
        validation = None if data_args.validation_csv else train
    describe = describe_prepared
    data = source_label(data_args.data_dir)
    if describe(train) != describe(validation):
        raise ValueError(
            f"The training data ({describe(train)}) and the validation data ({describe(validation)}) "
            "were prepared differently: prepare both with the same `dr-hf prepare` settings, or use "
            "the raw images for both."
        )
    check_raw_cache(train, data_args.image_size, data)
    if train is not None:
        for step, flag in (("crop", "crop_fov"), ("ben_graham", "ben_graham")):
            if train[step] and not getattr(data_args, flag):
                raise ValueError(
                    f"{data} was prepared with {step}=True but the run has {flag}=False: "
                    f"pass --{flag} true (the model must be evaluated as it was trained), or prepare "
                    f"the data again without {step}."
                )
        if data_args.image_size and train.get("size", data_args.image_size) < data_args.image_size:
            logger.warning(
                "%s was prepared at %s px, below image_size=%s: images are upsampled.",
                data, train["size"], data_args.image_size,
            )  # fmt: skip
    return steps_to_apply(data_args.crop_fov, data_args.ben_graham, train)


def check_raw_cache(info: dict | None, image_size: int | None, data: str) -> None:
    """A raw uint8 cache (`dr-hf prepare --format raw`) holds images of one side only: refuse a
    run at another (or an unstated) `image_size` before any image is read."""
    if info is None or info.get("format") != "raw" or image_size == info["image_size"]:
        return
    raise ValueError(
        f"{data} holds raw uint8 images of {info['image_size']} px, but the run trains at "
        f"image_size={image_size}: pass --image_size {info['image_size']}, or prepare the data "
        f"again with --image_size {image_size}."
    )
