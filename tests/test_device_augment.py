"""Augmentation on the training device (`augment_on="gpu"`), run here on CPU tensors, against the
CPU path (Albumentations) it must reproduce: same draws, same flips and rotations, per-image
parameters, independence from batching, workers and resume, same statistics."""

import cv2
import numpy as np
import pytest
import torch
from datasets import Dataset, Features, Value
from datasets import Image as ImageFeature
from timm.data import IMAGENET_DEFAULT_MEAN as MEAN
from timm.data import IMAGENET_DEFAULT_STD as STD
from torch.utils.data import DataLoader
from transformers import default_data_collator

from dr_hf.data import device_augment as D
from dr_hf.data.device_augment import augment_batch
from dr_hf.data.transforms import FundusTransform, get_transforms

SIZE = 48
STD255 = np.asarray(STD, np.float32)[:, None, None] * 255


def photo(seed: int, height: int = 60, width: int = 72) -> np.ndarray:
    """An asymmetric textured disc on black (flips and rotations all look different)."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), np.uint8)
    cv2.circle(image, (width // 2, height // 2), min(height, width) // 2 - 3, (170, 80, 40), -1)
    cv2.rectangle(image, (width // 2, 8), (width // 2 + 12, 16), (240, 220, 60), -1)
    return cv2.add(image, rng.integers(0, 40, image.shape, dtype=np.uint8))


def transforms(seed: int = 3, **options) -> tuple[FundusTransform, FundusTransform]:
    """(CPU path, device path) training transforms, each with its own pipeline and seed."""
    cpu = FundusTransform(get_transforms(SIZE), seed=seed, size=SIZE, **options)
    device = FundusTransform(get_transforms(SIZE), seed=seed, size=SIZE, augment_on="gpu")
    return cpu, device


def both(ids: list[str], epoch: int = 0, cpu_tf=None, device_tf=None):
    """The CPU path's output and the device path's output for the images `ids` name."""
    if cpu_tf is None:
        cpu_tf, device_tf = transforms()
    batch = {"image": [photo(int(i.split("_")[1]) % 12) for i in ids], "image_id": ids}
    for tf in (cpu_tf, device_tf):
        tf.set_epoch(epoch)
    cpu = torch.stack(cpu_tf(batch)["pixel_values"])
    out = device_tf(batch)
    pixels, params = torch.stack(out["pixel_values"]), torch.stack(out["augment_params"])
    return cpu, augment_batch(pixels, params, MEAN, STD), params


def in_255(normalised: torch.Tensor) -> np.ndarray:
    """Normalised pixels back on the 0-255 scale (the mean cancels in differences)."""
    return normalised.numpy() * STD255


def test_device_input_is_uint8_with_a_parameter_row_per_image():
    _, device_tf = transforms()
    out = device_tf({"image": [photo(0), photo(1)], "image_id": ["a", "b"], "label": [0, 1]})
    assert [p.dtype for p in out["pixel_values"]] == [torch.uint8] * 2
    assert out["pixel_values"][0].shape == (SIZE, SIZE, 3)
    assert [p.shape for p in out["augment_params"]] == [(D.NUM_PARAMS,)] * 2
    collated = default_data_collator([dict(zip(out, v)) for v in zip(*out.values())])
    assert collated["pixel_values"].dtype == torch.uint8
    assert collated["augment_params"].shape == (2, D.NUM_PARAMS)


def test_every_augmentation_off_matches_the_cpu_path_within_one_level():
    """(a) Every random transform at p=0: the device path is the CPU path within 1/255."""
    cpu_tf, device_tf = transforms()
    for tf in (cpu_tf, device_tf):
        for t in tf.compose.transforms:
            if isinstance(t, D.RANDOM_TRANSFORMS):
                t.p = 0.0
    cpu, device, params = both([f"img_{i}" for i in range(6)], cpu_tf=cpu_tf, device_tf=device_tf)
    assert not params.any()
    assert np.abs(in_255(cpu) - in_255(device)).max() <= 1.0


def test_draws_are_the_cpu_pipelines_own():
    """(b) The parameters drawn for an image are the ones Albumentations applies to it."""
    cpu_tf, device_tf = transforms()
    for index in range(40):
        image_id = f"img_{index}"
        cpu_tf({"image": [photo(index % 12)], "image_id": [image_id]})
        applied = {type(t).__name__: t.params for t in cpu_tf.compose.transforms}
        row = device_tf({"image": [photo(index % 12)], "image_id": [image_id]})["augment_params"][0]
        assert bool(applied["HorizontalFlip"]) == bool(row[D.HFLIP])
        assert bool(applied["VerticalFlip"]) == bool(row[D.VFLIP])
        assert applied["RandomRotate90"].get("factor", 0) == row[D.ROT90]
        assert bool(applied["Affine"]) == bool(row[D.AFFINE])
        if applied["Affine"]:
            np.testing.assert_allclose(row[D.MATRIX], applied["Affine"]["matrix"][:2].ravel())
        if applied["RandomBrightnessContrast"]:
            assert applied["RandomBrightnessContrast"]["alpha"] == row[D.ALPHA]


def test_flips_rotations_brightness_and_dropout_are_exactly_the_cpu_paths():
    """(b) Images without an Affine draw come out as on the CPU (float rounding aside); the
    others differ only by the rounding of the bilinear warp, one level at most."""
    ids = [f"img_{i}" for i in range(64)]
    cpu, device, params = both(ids)
    no_affine = ~params[:, D.AFFINE].bool()
    assert no_affine.sum() > 10 and params[no_affine][:, D.ROT90].unique().numel() == 4
    assert params[no_affine][:, D.HFLIP].unique().numel() == 2
    exact = np.abs(in_255(cpu[no_affine]) - in_255(device[no_affine]))
    assert exact.max() < 1e-3
    warped = np.abs(in_255(cpu[~no_affine]) - in_255(device[~no_affine]))
    assert warped.max() <= 1.0 + 1e-3 and warped.mean() < 0.05


def test_each_image_of_a_batch_has_its_own_parameters():
    """(c) One batch, different draws per image (torchvision v2 would share one)."""
    _, _, params = both([f"img_{i}" for i in range(16)])
    assert params[:, D.HFLIP].unique().numel() == 2 and params[:, D.ROT90].unique().numel() > 1
    matrices = params[params[:, D.AFFINE].bool()][:, D.MATRIX]
    assert len(matrices) >= 2 and len(torch.unique(matrices, dim=0)) == len(matrices)


def test_same_seed_epoch_and_id_give_the_same_output_whatever_the_batching():
    """(d) Batch composition, worker count and a fresh transform (a resume) change nothing."""
    rows = {"image": [photo(i) for i in range(10)], "image_id": [f"img_{i}" for i in range(10)]}
    features = Features({"image": ImageFeature(mode="RGB"), "image_id": Value("string")})
    data = Dataset.from_dict(rows, features=features)

    def outputs(batch_size: int, workers: int, shuffle: bool, epoch: int) -> dict:
        tf = transforms()[1]
        tf.set_epoch(epoch)
        loader = DataLoader(
            data.with_transform(tf), batch_size=batch_size, num_workers=workers,
            shuffle=shuffle, collate_fn=default_data_collator,
            generator=torch.Generator().manual_seed(epoch),
        )  # fmt: skip
        seen = {}
        for offset, batch in enumerate(loader):
            out = augment_batch(batch["pixel_values"], batch["augment_params"], MEAN, STD)
            order = range(offset * batch_size, offset * batch_size + len(out))
            ids = [rows["image_id"][i] for i in order] if not shuffle else None
            seen.update(zip(ids or [None] * len(out), out))
        return seen

    reference = outputs(4, 0, False, epoch=2)
    other = outputs(3, 2, False, epoch=2)
    assert reference.keys() == other.keys() and len(reference) == 10
    for image_id in reference:
        torch.testing.assert_close(reference[image_id], other[image_id], rtol=0, atol=0)
    # the same rows in a shuffled order, one at a time, find their own outputs
    tf = transforms()[1]
    tf.set_epoch(2)
    for image_id in ("img_7", "img_2"):
        index = rows["image_id"].index(image_id)
        out = tf({"image": [rows["image"][index]], "image_id": [image_id]})
        single = augment_batch(
            out["pixel_values"][0][None], out["augment_params"][0][None], MEAN, STD
        )
        torch.testing.assert_close(single[0], reference[image_id], rtol=0, atol=0)
    assert any(
        not torch.equal(a, b) for a, b in zip(reference.values(), outputs(4, 0, False, 3).values())
    )


def test_channel_statistics_match_the_cpu_path():
    """(e) Per-channel mean and std over 300 augmented images: within 1e-4 (normalised units) of
    the CPU path's; the draws are the same, only the warp's rounding differs (measured ~2e-7)."""
    ids = [f"img_{i}" for i in range(300)]
    cpu, device, _ = both(ids, epoch=1)
    for stat in (torch.mean, torch.std):
        a = stat(cpu.transpose(0, 1).reshape(3, -1), dim=1)
        b = stat(device.transpose(0, 1).reshape(3, -1), dim=1)
        assert torch.allclose(a, b, rtol=0, atol=1e-4), (stat.__name__, a, b)


def test_draw_refuses_a_transform_without_a_device_version():
    import albumentations as A

    compose = A.Compose([A.Resize(SIZE, SIZE), A.Blur(p=1.0)])
    with pytest.raises(TypeError, match="Blur has no device implementation"):
        FundusTransform(compose, size=SIZE, augment_on="gpu")


def test_augment_batch_refuses_float_input():
    with pytest.raises(ValueError, match="square uint8"):
        augment_batch(torch.zeros(1, 8, 8, 3), torch.zeros(1, D.NUM_PARAMS), MEAN, STD)


@pytest.mark.parametrize("augment_on", ["cpu", "gpu"])
def test_persistent_workers_see_the_new_epoch(augment_on):
    """The epoch reaches workers that stay alive between epochs (shared memory)."""
    rows = {"image": [photo(i) for i in range(4)], "image_id": [f"img_{i}" for i in range(4)]}
    features = Features({"image": ImageFeature(mode="RGB"), "image_id": Value("string")})
    tf = FundusTransform(get_transforms(SIZE), seed=1, size=SIZE, augment_on=augment_on)
    loader = DataLoader(
        Dataset.from_dict(rows, features=features).with_transform(tf), batch_size=4,
        num_workers=1, persistent_workers=True, collate_fn=default_data_collator,
    )  # fmt: skip
    key = "augment_params" if augment_on == "gpu" else "pixel_values"
    per_epoch = []
    for epoch in range(3):
        tf.set_epoch(epoch)
        (batch,) = list(loader)
        fresh = FundusTransform(get_transforms(SIZE), seed=1, size=SIZE, augment_on=augment_on)
        fresh.set_epoch(epoch)
        expected = torch.stack(fresh({"image": rows["image"], "image_id": rows["image_id"]})[key])
        torch.testing.assert_close(batch[key], expected, rtol=0, atol=0)
        per_epoch.append(batch[key])
    assert not torch.equal(per_epoch[0], per_epoch[1]) and not torch.equal(
        per_epoch[1], per_epoch[2]
    )
