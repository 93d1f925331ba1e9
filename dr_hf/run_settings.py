"""What a run derives from its arguments before training (and refuses when they contradict each
other), and the W&B settings around it."""

import logging
import os

from dr_hf.config import DEFAULT_WANDB_PROJECT, DataArguments, DRTrainingArguments, ModelArguments
from dr_hf.prepare import read_prepare_info

logger = logging.getLogger(__name__)


def configure_run(
    data_args: DataArguments, model_args: ModelArguments, training_args: DRTrainingArguments
) -> None:
    """Settings that follow from the model choice (STACK_NOTES traps 8 and 11) and W&B's env."""
    if training_args.label_names is None:
        training_args.label_names = ["labels"]  # PeftModel hides the forward signature
    if training_args.ddp_find_unused_parameters is None:
        # Graders use every parameter; DDP's search for unused ones costs a graph walk per step.
        training_args.ddp_find_unused_parameters = False
    if (
        data_args.augment
        and training_args.dataloader_persistent_workers
        and training_args.dataloader_num_workers > 0
    ):
        raise ValueError(
            "dataloader_persistent_workers would keep each worker's augmentation at epoch 0: set it "
            "to false (workers restart each epoch and see the new epoch's seeds) or augment=false."
        )
    if training_args.gradient_checkpointing and not training_args.gradient_checkpointing_kwargs:
        training_args.gradient_checkpointing_kwargs = {"use_reentrant": False}
    if training_args.push_to_hub and not training_args.hub_model_id:
        raise ValueError("push_to_hub needs --hub_model_id user/name (checked before training).")
    if "wandb" in training_args.report_to:
        # An explicit wandb_project wins over WANDB_PROJECT, which wins over dr_hf's default.
        project = training_args.wandb_project or os.environ.get("WANDB_PROJECT")
        os.environ["WANDB_PROJECT"] = project or DEFAULT_WANDB_PROJECT
        if training_args.wandb_tags:
            os.environ["WANDB_TAGS"] = ",".join(training_args.wandb_tags)


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
    Training and validation must have been prepared alike, for the same reason.
    """
    train = read_prepare_info(data_args.data_dir) if data_args.data_dir else None
    if data_args.validation_dir:
        validation = read_prepare_info(data_args.validation_dir)
    else:
        validation = None if data_args.validation_csv else train
    steps = ("crop", "ben_graham")
    describe = lambda info: "raw images" if info is None else {k: info[k] for k in steps}  # noqa: E731
    if describe(train) != describe(validation):
        raise ValueError(
            f"The training data ({describe(train)}) and the validation data ({describe(validation)}) "
            "were prepared differently: prepare both with the same `dr-hf prepare` settings, or use "
            "the raw images for both."
        )
    if train is None:
        return data_args.crop_fov, data_args.ben_graham
    for step, flag in (("crop", "crop_fov"), ("ben_graham", "ben_graham")):
        if train[step] and not getattr(data_args, flag):
            raise ValueError(
                f"{data_args.data_dir} was prepared with {step}=True but the run has {flag}=False: "
                f"pass --{flag} true (the model must be evaluated as it was trained), or prepare "
                f"the data again without {step}."
            )
    if data_args.image_size and train.get("size", data_args.image_size) < data_args.image_size:
        logger.warning(
            "%s was prepared at %s px, below image_size=%s: images are upsampled.",
            data_args.data_dir, train["size"], data_args.image_size,
        )  # fmt: skip
    return data_args.crop_fov and not train["crop"], data_args.ben_graham and not train[
        "ben_graham"
    ]
