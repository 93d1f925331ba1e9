"""Albumentations pipelines and the on-the-fly transform that feeds them to the Trainer.

Augmentation is reproducible per sample: each image's random draws come from a seed derived
from (run seed, epoch, image_id), never from a generator's position. A resumed run, any number
of DataLoader workers and any DDP rank therefore augment a given image identically in a given
epoch, whatever batch it lands in.
"""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import hashlib  # noqa: E402
import random  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from albumentations.core.composition import BaseCompose  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402
from datasets import DatasetDict  # noqa: E402
from timm.data import IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN  # noqa: E402
from timm.data import IMAGENET_DEFAULT_STD as IMAGENET_STD  # noqa: E402

from dr_hf.data.device_augment import (  # noqa: E402
    DeviceAugmentation,
    draw_parameters,
    random_children,
)
from dr_hf.data.fundus_processor import model_input, normalize  # noqa: E402
from dr_hf.data.preprocessing import as_rgb_array, preprocess_fundus  # noqa: E402

_MASK64 = (1 << 64) - 1
AUGMENT_ON = ("cpu", "gpu")


def get_transforms(
    img_size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> A.Compose:
    """The training augmentation pipeline; CoarseDropout's 32-pixel holes at 224 scale with
    `img_size`. Validation and inference use no pipeline: they run the processor's functions."""
    hole = max(1, round(32 * img_size / 224))
    mean, std = tuple(mean), tuple(std)
    train = A.Compose(
        [
            A.Resize(img_size, img_size, interpolation=cv2.INTER_AREA),
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.RandomRotate90(p=0.5),
            A.Affine(
                translate_percent=(-0.1, 0.1),
                scale=(0.9, 1.1),
                rotate=(-45, 45),
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                p=0.5,
            ),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
            A.CoarseDropout(
                num_holes_range=(8, 8),
                hole_height_range=(hole, hole),
                hole_width_range=(hole, hole),
                fill=0,
                p=0.3,
            ),
            A.Normalize(mean=mean, std=std),
            ToTensorV2(),
        ]
    )
    return train


def sample_seed(seed: int, epoch: int, image_id: str) -> int:
    """A stable 64-bit seed for one image in one epoch (Python's `hash` is salted per process)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{image_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _splitmix64(seed: int, index: int) -> int:
    z = (seed + (index + 1) * 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def reseed(transform: Any, seed: int) -> None:
    """Seed `transform` and every transform inside it, each with its own derived seed.

    `Compose.set_random_seed` hands every child the same seed: HorizontalFlip, VerticalFlip and
    RandomRotate90 would then draw the same numbers and always fire together.
    """
    if isinstance(transform, BaseCompose):
        # What BaseCompose.set_random_seed does, minus seeding the children twice (~2x slower).
        transform.seed = seed
        transform.random_generator = np.random.default_rng(seed)
        transform.py_random = random.Random(seed)
        for index, child in enumerate(transform.transforms):
            reseed(child, _splitmix64(seed, index))
    else:
        transform.set_random_seed(seed)


class FundusTransform:
    """Batch transform for `Dataset.with_transform`: PIL image -> preprocessed, augmented tensor.

    Training mode reseeds the Albumentations pipeline before every image from (seed, epoch,
    image_id), between the crop and the normalisation; call `set_epoch` at each epoch start.
    Validation mode (deterministic) calls `preprocessing.model_input` and `normalize`, the
    functions `FundusImageProcessor` calls at inference, with `mean` and `std`; it takes no
    `compose` (None). `size` is the output side: images shrink toward twice
    that before the field-of-view crop and Ben Graham runs at that size, as in `dr-hf prepare`, so
    neither runs on full-size pixels.

    With `augment_on="gpu"` a training transform only crops and resizes: it returns the uint8
    image (size, size, 3) and, as `augment_params`, the parameters `compose` would draw for it
    (`device_augment.draw_parameters`); `DRTrainer` applies them on the device. A source of raw
    uint8 arrays (`dr-hf prepare --format raw`, a `pixels` column) is read without decoding.

    The epoch lives in shared memory, so DataLoader workers that persist across epochs
    (`dataloader_persistent_workers`) see each `set_epoch`.
    """

    def __init__(
        self,
        compose: A.Compose | None,
        crop: bool = True,
        ben_graham: bool = False,
        seed: int = 0,
        train: bool = True,
        size: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        augment_on: str = "cpu",
    ):
        if not train and size is None:
            raise ValueError("a validation FundusTransform needs the model's input side: size=N.")
        if train and compose is None:
            raise ValueError(
                "a training FundusTransform needs its augmentation: get_transforms(N)."
            )
        if augment_on not in AUGMENT_ON:
            raise ValueError(f"augment_on={augment_on!r}: choose one of {', '.join(AUGMENT_ON)}.")
        if augment_on == "gpu" and size is None:
            raise ValueError("augment_on='gpu' needs the model's input side: size=N.")
        self.compose = compose
        self.mean, self.std = tuple(mean), tuple(std)
        self.crop = crop
        self.ben_graham = ben_graham
        self.seed = seed
        self.train = train
        self.size = size
        self.augment_on = augment_on
        device = train and augment_on == "gpu"
        self._random_children = random_children(compose) if device else []
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def device_half(self) -> DeviceAugmentation | None:
        """What the trainer applies on the device to this transform's batches (None: nothing,
        the batches arrive augmented and normalised)."""
        if not self.train or self.augment_on != "gpu":
            return None
        return DeviceAugmentation(self.mean, self.std)

    def _images(self, batch: dict[str, list]) -> list:
        """Decoded PIL images, or the raw cache's uint8 arrays viewed at (size, size, 3)."""
        if "image" in batch or "pixels" not in batch:
            return batch["image"]
        side = self.size
        images = []
        for row, data in enumerate(batch["pixels"]):
            if side is None or len(data) != side * side * 3:
                raise ValueError(
                    f"row {row} of a raw uint8 cache holds {len(data)} bytes, not the "
                    f"{side}x{side}x3 of image_size={side}: train at the size the cache was "
                    "prepared for, or prepare it again with --image_size."
                )
            images.append(np.frombuffer(bytearray(data), np.uint8).reshape(side, side, 3))
        return images

    def _device_input(self, image: Any, seed: int) -> tuple[torch.Tensor, np.ndarray]:
        """The uint8 image at (size, size, 3), channels last as read, and the parameters the
        pipeline would draw for it; the device transposes the batch."""
        array = self.preprocess(image)
        if array.shape[:2] != (self.size, self.size):
            array = cv2.resize(array, (self.size, self.size), interpolation=cv2.INTER_AREA)
        child_seed = lambda index: _splitmix64(seed, index)  # noqa: E731  (reseed's seeds)
        params = draw_parameters(self._random_children, child_seed, array)
        return torch.from_numpy(np.require(array, requirements=("C", "W"))), params

    def preprocess(self, image: Any) -> np.ndarray:
        """Field-of-view crop and optional Ben Graham (at `size`, as `dr-hf prepare` runs it);
        without Ben Graham the pipeline's Resize is the only, sharpest, resampling."""
        array = as_rgb_array(image, self.size)
        size = self.size if self.ben_graham else None
        return preprocess_fundus(array, self.crop, self.ben_graham, size)

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        images = self._images(batch)
        ids = batch.get("image_id")
        if self.train and ids is None:
            raise KeyError(
                "the training transform needs an `image_id` column to seed each image's "
                f"augmentation; the batch has only {sorted(batch)}."
            )
        pixel_values, params = [], []
        for index, image in enumerate(images):
            if self.train and self.augment_on == "gpu":
                seed = sample_seed(self.seed, self.epoch, ids[index])
                pixels, row = self._device_input(image, seed)
                pixel_values.append(pixels)
                params.append(torch.from_numpy(row))
            elif self.train:
                reseed(self.compose, sample_seed(self.seed, self.epoch, ids[index]))
                pixel_values.append(self.compose(image=self.preprocess(image))["image"])
            else:
                pixels = model_input(image, self.size, self.crop, self.ben_graham)
                pixel_values.append(torch.from_numpy(normalize(pixels, self.mean, self.std)))
        out = {"pixel_values": pixel_values}
        if params:
            out["augment_params"] = params
        if "label" in batch:
            out["labels"] = list(batch["label"])
        return out


def with_transforms(
    dataset: DatasetDict,
    image_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    crop: bool = True,
    ben_graham: bool = False,
    augment: bool = True,
    seed: int = 0,
    augment_on: str = "cpu",
) -> tuple[DatasetDict, FundusTransform]:
    """Attach the training transform to "train" and the validation one to every other split.

    Returns the new DatasetDict and the training transform, whose epoch the trainer sets. With
    `augment_on="gpu"` the training split yields uint8 images and `augment_params`.
    """
    options = {"crop": crop, "ben_graham": ben_graham, "seed": seed, "size": image_size}
    options |= {"mean": mean, "std": std}
    compose = get_transforms(image_size, mean, std) if augment else None
    train_tf = FundusTransform(
        compose, train=augment, augment_on=augment_on if augment else "cpu", **options
    )
    val_tf = FundusTransform(None, train=False, **options)
    splits = {
        name: split.with_transform(train_tf if name == "train" else val_tf)
        for name, split in dataset.items()
    }
    return DatasetDict(splits), train_tf
