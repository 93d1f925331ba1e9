"""The arguments of `dr-hf prepare` beside the data ones: where the cache goes, its size, its
format."""

from dataclasses import dataclass, field


@dataclass
class PrepareArguments:
    """Where `dr-hf prepare` writes its preprocessed copy, and at which size."""

    output: str = field(
        metadata={"help": "Folder for the prepared data set (save_to_disk layout)."}
    )
    size: int = field(
        default=280,
        metadata={"help": "Shorter side of the stored images (about 1.25x the training size)."},
    )
    num_proc: int | None = field(
        default=None, metadata={"help": "Worker processes for datasets.map."}
    )
    format: str = field(
        default="png",
        metadata={
            "help": "png: PNG, shorter side `size`; jpeg: the same as JPEG (quality 95, lossy). "
            "raw: uint8 bytes of image_size squares (default 224), read without decoding; train "
            "at that image_size.",
            "choices": ["png", "jpeg", "raw"],
        },
    )
