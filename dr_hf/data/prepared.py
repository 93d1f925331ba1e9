"""What a run still does to data that `dr-hf prepare` already processed, and the mixtures it
refuses: a step a source was prepared with must be one the run asks for, and training and
validation (and several sources) must have been prepared alike."""

import logging

from dr_hf.config.arguments import DataArguments
from dr_hf.data.multisource import common_prepare_info, describe_prepared, source_label
from dr_hf.data.prepare import steps_to_apply

logger = logging.getLogger(__name__)


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
                data,
                train["size"],
                data_args.image_size,
            )
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


__all__ = ["check_raw_cache", "steps_left_to_apply"]
