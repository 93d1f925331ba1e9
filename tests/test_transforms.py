"""Albumentations pipelines, the per-sample-seeded FundusTransform, collate and normalisation."""

import ast
import collections
import os
import subprocess
import sys
import warnings

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from datasets import Image as ImageFeature
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN
from timm.data import IMAGENET_DEFAULT_STD as IMAGENET_STD
from torch.utils.data import DataLoader
from transformers import default_data_collator

from dr_hf.data.transforms import (
    FundusTransform,
    get_transforms,
    reseed,
    sample_seed,
    with_transforms,
)
from dr_hf.grades import GRADE_NAMES

SIZE = 64


def fundus_image(height: int, width: int, seed: int) -> Image.Image:
    """A bright textured disc on black, like a fundus photograph, with random lesions."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), np.uint8)
    radius = min(height, width) // 2 - 4
    cv2.circle(image, (width // 2, height // 2), radius, (170, 80, 40), -1)
    for _ in range(6):
        centre = (
            int(rng.integers(width // 3, 2 * width // 3)),
            int(rng.integers(height // 3, 2 * height // 3)),
        )
        cv2.circle(image, centre, int(rng.integers(2, 6)), (230, 200, 90), -1)
    image = cv2.add(image, rng.integers(0, 25, image.shape, dtype=np.uint8))
    return Image.fromarray(image)


def make_dataset(n_train: int = 6, n_val: int = 3) -> DatasetDict:
    features = Features(
        {
            "image": ImageFeature(mode="RGB"),
            "label": ClassLabel(names=GRADE_NAMES),
            "image_id": Value("string"),
        }
    )

    def split(n: int, offset: int) -> Dataset:
        shapes = [(90, 120), (100, 100), (80, 130)]
        rows = {
            "image": [fundus_image(*shapes[i % 3], seed=offset + i) for i in range(n)],
            "label": [(offset + i) % len(GRADE_NAMES) for i in range(n)],
            "image_id": [f"img_{offset + i:03d}" for i in range(n)],
        }
        return Dataset.from_dict(rows, features=features)

    return DatasetDict({"train": split(n_train, 0), "validation": split(n_val, 100)})


@pytest.fixture(scope="module")
def dataset() -> DatasetDict:
    return make_dataset()


def rows(dataset: Dataset, indices: list[int]) -> dict[str, list]:
    """A raw batch as `with_transform` hands it over (decoded PIL images)."""
    return dataset[indices]


def test_pipelines_build_and_run_without_warnings():
    image = np.asarray(fundus_image(90, 120, seed=0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for size in (64, 224, 384):
            train = get_transforms(size)
            fired = set()
            for seed in range(20):
                reseed(train, seed)
                out = train(image=image)["image"]
                assert out.shape == (3, size, size) and out.dtype == torch.float32
                fired |= {type(t).__name__ for t in train.transforms if t.params}
            assert len(fired) == len(train.transforms)  # every random transform ran at least once


@pytest.mark.parametrize("size, hole", [(224, 32), (448, 64), (112, 16), (384, 55)])
def test_coarse_dropout_holes_scale_with_image_size(size, hole):
    train = get_transforms(size)
    dropout = next(t for t in train.transforms if isinstance(t, A.CoarseDropout))
    assert tuple(dropout.num_holes_range) == (8, 8)
    assert tuple(dropout.hole_height_range) == (hole, hole)
    assert tuple(dropout.hole_width_range) == (hole, hole)
    assert dropout.p == pytest.approx(0.3)


def test_pipeline_contents():
    train = get_transforms(SIZE, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    names = [type(t).__name__ for t in train.transforms]
    assert names[0] == "Resize" and names[-2:] == ["Normalize", "ToTensorV2"]
    for name in ("HorizontalFlip", "VerticalFlip", "RandomRotate90", "Affine", "CoarseDropout"):
        assert name in names
    affine = next(t for t in train.transforms if isinstance(t, A.Affine))
    assert affine.border_mode == cv2.BORDER_CONSTANT and affine.fill == 0
    assert tuple(train.transforms[-2].mean) == (0.5, 0.5, 0.5)


def test_reseed_gives_each_transform_its_own_draws():
    # Compose.set_random_seed gives all children one seed: the three flips would fire together.
    train = get_transforms(32)
    image = np.zeros((32, 32, 3), np.uint8)
    fired = collections.Counter()
    for i in range(200):
        reseed(train, sample_seed(0, 0, f"id{i}"))
        train(image=image)
        fired[tuple(bool(t.params) for t in train.transforms[1:4])] += 1
    assert len(fired) == 8  # every combination of HorizontalFlip, VerticalFlip, RandomRotate90
    assert all(count > 5 for count in fired.values())


def test_reseed_reaches_nested_composes():
    nested = A.Compose([A.OneOf([A.HorizontalFlip(p=1), A.VerticalFlip(p=1)], p=1)])
    image = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)

    def flipped(seed: int) -> bytes:
        reseed(nested, seed)
        return nested(image=image)["image"].tobytes()

    outcomes = [flipped(seed) for seed in range(20)]
    # OneOf picks either flip depending on the seed: each outcome is one of the two mirrors
    assert set(outcomes) == {np.flip(image, 1).tobytes(), np.flip(image, 0).tobytes()}
    assert [flipped(seed) for seed in range(20)] == outcomes  # and the seed decides which


@pytest.mark.parametrize("flip, axis", [("HorizontalFlip", 2), ("VerticalFlip", 1)])
def test_a_flip_alone_mirrors_the_validation_pixels(flip, axis):
    """Where the drawn parameters say only one flip fired, the training pipeline's output is the
    unaugmented output (its own resize and normalisation alone) mirrored along that axis, to the
    bit."""
    train = get_transforms(SIZE)
    val = A.Compose([train.transforms[0], *train.transforms[-2:]])
    image = np.asarray(fundus_image(90, 120, seed=0))
    plain = val(image=image)["image"]
    for i in range(400):
        reseed(train, sample_seed(0, 0, f"id{i}"))
        out = train(image=image)["image"]
        if {type(t).__name__ for t in train.transforms[1:-2] if t.params} == {flip}:
            break
    else:
        pytest.fail(f"no seed of 400 applied {flip} alone")
    assert torch.equal(out, torch.flip(plain, dims=[axis]))
    assert not torch.equal(out, plain)


@pytest.mark.slow
def test_sample_seed_is_the_same_in_another_interpreter():
    """Python's hash() is salted per process: a seed built on it would change between the
    workers and ranks of one run. An interpreter with another PYTHONHASHSEED gives the same
    seeds; the run's seed, the epoch and the image id each change it."""
    keys = [(42, 3, "abc"), (42, 4, "abc"), (43, 3, "abc"), (42, 3, "abd")]
    here = [sample_seed(*key) for key in keys]
    assert len(set(here)) == len(keys) and all(0 <= s < 2**64 for s in here)
    hash_seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
    code = (
        f"from dr_hf.data.transforms import sample_seed; print([sample_seed(*k) for k in {keys}])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=os.environ | {"PYTHONHASHSEED": hash_seed},
        capture_output=True,
        text=True,
        check=True,
    )
    assert ast.literal_eval(done.stdout.strip()) == here


@pytest.mark.parametrize("train", [True, False])
def test_transform_output(dataset, train):
    compose = get_transforms(SIZE) if train else None
    transform = FundusTransform(compose, crop=True, seed=1, train=train, size=SIZE)
    batch = rows(dataset["train"], [0, 1, 2, 3])
    out = transform(batch)
    assert out["labels"] == batch["label"]
    assert len(out["pixel_values"]) == 4
    for pixels in out["pixel_values"]:
        assert pixels.shape == (3, SIZE, SIZE) and pixels.dtype == torch.float32
        low = min((0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
        high = max((1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
        assert low - 1e-4 <= pixels.min() and pixels.max() <= high + 1e-4
        assert -2.2 <= low and high <= 2.7


def test_crop_removes_black_border(dataset):
    batch = rows(dataset["train"], [2])  # 80x130 with a 72-pixel disc in the middle
    cropped = FundusTransform(None, crop=True, train=False, size=SIZE)(batch)["pixel_values"][0]
    full = FundusTransform(None, crop=False, train=False, size=SIZE)(batch)["pixel_values"][0]
    black = (0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    # Without the crop the left and right columns are background; with it the disc fills them.
    assert full[0, SIZE // 2, :3].max() < black + 0.45  # noise reaches 25 grey levels
    assert cropped[0, SIZE // 2, :3].min() > black + 1.0


def test_ben_graham_runs(dataset):
    out = FundusTransform(None, crop=True, ben_graham=True, train=False, size=SIZE)(
        rows(dataset["train"], [0, 1])
    )
    plain = FundusTransform(None, crop=True, train=False, size=SIZE)(rows(dataset["train"], [0, 1]))
    for bg, raw in zip(out["pixel_values"], plain["pixel_values"]):
        assert bg.shape == (3, SIZE, SIZE)
        assert not torch.allclose(bg, raw)


def test_only_ben_graham_resizes_before_the_pipeline(dataset):
    """Ben Graham runs at the output size on the uncropped aspect ratio; without it the crop goes
    to the pipeline's Resize as it is, so the image is resampled once."""
    image = dataset["train"][2]["image"]  # 130x80 with a 72-pixel disc: crop about 73x73
    crop = np.asarray(FundusTransform(None, train=False, size=SIZE).preprocess(image))
    bg = FundusTransform(None, ben_graham=True, train=False, size=SIZE).preprocess(image)
    assert min(crop.shape[:2]) > SIZE + 5 and min(bg.shape[:2]) == SIZE


def test_same_seed_epoch_and_id_give_same_augmentation(dataset):
    first = FundusTransform(get_transforms(SIZE), seed=7, size=SIZE)
    second = FundusTransform(get_transforms(SIZE), seed=7, size=SIZE)
    a = first(rows(dataset["train"], [0, 1, 2, 3]))["pixel_values"]
    b = second(rows(dataset["train"], [3, 1]))["pixel_values"]  # other batch, other order
    c = first(rows(dataset["train"], [1]))["pixel_values"]  # same instance, later call
    assert torch.equal(a[3], b[0]) and torch.equal(a[1], b[1]) and torch.equal(a[1], c[0])
    assert not torch.equal(a[0], a[1])


def test_epoch_and_seed_change_augmentation(dataset):
    transform = FundusTransform(get_transforms(SIZE), seed=7, size=SIZE)
    batch = rows(dataset["train"], [0, 1, 2, 3])
    epoch0 = transform(batch)["pixel_values"]
    transform.set_epoch(1)
    epoch1 = transform(batch)["pixel_values"]
    transform.set_epoch(0)
    again = transform(batch)["pixel_values"]
    other_seed = FundusTransform(get_transforms(SIZE), seed=8, size=SIZE)(batch)["pixel_values"]
    assert all(torch.equal(x, y) for x, y in zip(epoch0, again))
    assert any(not torch.equal(x, y) for x, y in zip(epoch0, epoch1))
    assert any(not torch.equal(x, y) for x, y in zip(epoch0, other_seed))


def test_validation_transform_is_deterministic(dataset):
    transform = FundusTransform(None, seed=1, train=False, size=SIZE)
    batch = rows(dataset["validation"], [0, 1, 2])
    first = transform(batch)["pixel_values"]
    transform.set_epoch(5)
    second = FundusTransform(None, seed=2, train=False, size=SIZE)(batch)
    assert all(torch.equal(x, y) for x, y in zip(first, transform(batch)["pixel_values"]))
    assert all(torch.equal(x, y) for x, y in zip(first, second["pixel_values"]))


def test_transform_errors_name_the_problem(dataset):
    transform = FundusTransform(get_transforms(SIZE), size=SIZE)
    batch = rows(dataset["train"], [0])
    with pytest.raises(KeyError, match="image_id"):
        transform({"image": batch["image"], "label": batch["label"]})
    with pytest.raises(TypeError, match="PIL image"):
        transform({"image": ["/some/path.png"], "label": [0], "image_id": ["a"]})


@pytest.mark.parametrize("mode", ["P", "1", "L", "RGBA"])
def test_large_images_of_any_mode_are_reduced(mode):
    """A 1200-pixel palette or 1-bit photograph is shrunk 6x before the crop (size 64 -> 128)."""
    rgb = fundus_image(1200, 1300, seed=3)
    image = rgb.quantize(colors=64) if mode == "P" else rgb.convert(mode)
    transform = FundusTransform(None, train=False, size=SIZE)
    array = transform.preprocess(image)
    assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3
    assert max(array.shape[:2]) <= 1200 // 6
    assert transform({"image": [image]})["pixel_values"][0].shape == (3, SIZE, SIZE)


def test_unlabelled_batches_give_pixels_only(dataset):
    batch = rows(dataset["validation"], [0])
    out = FundusTransform(None, train=False, size=SIZE)({"image": batch["image"]})
    assert set(out) == {"pixel_values"}


def test_transform_output_collates_with_the_trainers_default_collator(dataset):
    """Training and evaluation batch with transformers' default_data_collator: the transform's
    output must stack into float32 Bx3xSxS pixels and int64 labels."""
    ready, _ = with_transforms(dataset, SIZE, seed=0)
    batch = default_data_collator([ready["train"][i] for i in range(3)])
    assert batch["pixel_values"].shape == (3, 3, SIZE, SIZE)
    assert batch["pixel_values"].dtype == torch.float32
    assert batch["labels"].dtype == torch.long
    assert batch["labels"].tolist() == [dataset["train"][i]["label"] for i in range(3)]


def test_with_transforms_splits_and_epoch(dataset):
    ready, train_tf = with_transforms(dataset, SIZE, crop=True, augment=True, seed=3)
    assert set(ready) == {"train", "validation"}
    sample = ready["train"][0]
    assert set(sample) == {"pixel_values", "labels"}
    assert sample["pixel_values"].shape == (3, SIZE, SIZE)
    assert sample["labels"] == dataset["train"][0]["label"]
    train_tf.set_epoch(1)
    assert not torch.equal(ready["train"][0]["pixel_values"], sample["pixel_values"])
    val_first = ready["validation"][1]["pixel_values"]
    assert torch.equal(ready["validation"][1]["pixel_values"], val_first)
    assert "image" in dataset["train"][0]  # the input DatasetDict is left untouched


def test_without_augmentation_train_matches_validation_pipeline(dataset):
    ready, train_tf = with_transforms(dataset, SIZE, augment=False, seed=3)
    val_tf = FundusTransform(None, train=False, size=SIZE)
    expected = val_tf(rows(dataset["train"], [0]))["pixel_values"][0]
    train_tf.set_epoch(4)
    assert torch.equal(ready["train"][0]["pixel_values"], expected)


def loader_batches(split: Dataset, workers: int) -> list[dict[str, torch.Tensor]]:
    loader = DataLoader(split, batch_size=4, num_workers=workers, collate_fn=default_data_collator)
    return list(loader)


def test_dataloader_workers_give_the_same_batches(dataset):
    ready, train_tf = with_transforms(dataset, SIZE, seed=11)
    train_tf.set_epoch(2)  # workers start from a copy of the transform: the epoch must travel
    single = loader_batches(ready["train"], 0)
    multi = loader_batches(ready["train"], 2)
    assert len(single) == len(multi) == 2
    for a, b in zip(single, multi):
        assert torch.equal(a["pixel_values"], b["pixel_values"])
        assert torch.equal(a["labels"], b["labels"])
    assert single[0]["pixel_values"].shape == (4, 3, SIZE, SIZE)
    train_tf.set_epoch(3)
    assert not torch.equal(
        loader_batches(ready["train"], 0)[0]["pixel_values"], single[0]["pixel_values"]
    )
