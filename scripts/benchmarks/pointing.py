"""Where the heatmaps point: the pointing game (`pointing_game`, `random_point_baseline`) on
synthetic photographs whose lesions are known.

The synthetic generator writes each photograph's lesion mask. For the referable ones (grade >= 2)
the Grad-CAM map of the predicted grade is computed on the photograph as the model sees it, the
mask is taken through the same crop and resize, and a hit is a map peak inside a lesion. The
score is compared with a random point's (the mean share of the view the lesions cover). As in
the pointing game's original definition (Zhang et al., 2016), a peak within a tolerance of a
lesion (15 pixels at 224, scaled with the input side) also counts; both scores are reported.
"""

from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from dr_hf.config.arguments import ModelArguments
from dr_hf.data.preprocessing import locate_fov
from dr_hf.data.synthetic import make_synthetic
from dr_hf.evaluation.heatmaps import gradcam
from dr_hf.inference import load_grader, open_image
from dr_hf.models.graders import create_model


def _masks_at(masks: np.ndarray, shape: tuple[int, int] | None) -> np.ndarray:
    """Masks as bool [N, H, W], resized to `shape` with nearest neighbour when it differs."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks of shape {masks.shape}: expected [N, H, W].")
    if shape is not None and masks.shape[1:] != tuple(shape):
        size = (shape[1], shape[0])
        resized = [
            cv2.resize(m.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) for m in masks
        ]
        masks = np.stack(resized) if resized else np.zeros((0, *shape), np.uint8)
    return masks.astype(bool)


def pointing_game(heatmaps: np.ndarray, masks: np.ndarray) -> float:
    """Share of images whose heatmap peak (the first argmax) lies inside their lesion mask.

    `masks` (bool or 0/1, [N, H, W]) are brought to the heatmaps' resolution with nearest
    neighbour. Images whose mask is empty (at that resolution) are skipped: there is no lesion to
    point at. Raises ValueError when every mask is empty.
    """
    heatmaps = np.asarray(heatmaps)
    if heatmaps.ndim != 3 or len(heatmaps) != len(masks):
        raise ValueError(f"heatmaps {heatmaps.shape} and {len(masks)} masks: expected [N, H, W].")
    masks = _masks_at(masks, heatmaps.shape[1:])
    keep = masks.any(axis=(1, 2))
    if not keep.any():
        raise ValueError("every mask is empty: the pointing game needs lesions to point at.")
    peaks = heatmaps[keep].reshape(int(keep.sum()), -1).argmax(axis=1)
    hits = masks[keep].reshape(int(keep.sum()), -1)[np.arange(len(peaks)), peaks]
    return float(hits.mean())


def random_point_baseline(masks: np.ndarray, shape: tuple[int, int] | None = None) -> float:
    """The pointing game's expected score for a uniformly random point: the mean share of each
    image covered by its mask. Empty masks are skipped, as `pointing_game` skips them; `shape`
    (the heatmaps' H, W) resizes the masks the same way first."""
    masks = _masks_at(masks, shape)
    keep = masks.any(axis=(1, 2))
    if not keep.any():
        raise ValueError("every mask is empty: the pointing game needs lesions to point at.")
    return float(masks[keep].mean(axis=(1, 2)).mean())


def _mask_as_model_sees_it(photo: Image.Image, mask: np.ndarray, processor) -> np.ndarray:
    """The lesion mask through the processor's reduction, field-of-view crop and square resize."""
    side = processor.input_side
    array = processor.reduce(photo)
    mask = cv2.resize(mask, (array.shape[1], array.shape[0]), interpolation=cv2.INTER_NEAREST)
    box = locate_fov(array, None) if processor.crop_fov else None
    if box is not None:
        x0, y0, x1, y1 = box
        mask = mask[y0:y1, x0:x1]
    return cv2.resize(mask, (side, side), interpolation=cv2.INTER_NEAREST) > 0


TOLERANCE_AT_224 = 15


def _dilated(masks: np.ndarray, radius: int) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return np.stack([cv2.dilate(mask.astype(np.uint8), kernel) > 0 for mask in masks])


def bench_pointing(
    cache_dir: str | Path,
    model: str | Path | None = "outputs/quickstart/best",
    num_images: int = 300,
    image_size: int = 160,
    seed: int = 7,
) -> dict:
    """Pointing-game score of `model` (a trained folder; None: a random test_resnet, for smoke
    runs) on the referable images of a fresh synthetic set, and a random point's score."""
    if model is not None and not Path(model).is_dir():
        raise FileNotFoundError(
            f"{model} is not a trained model folder: run the quick start first "
            "(dr-hf train --config configs/quickstart.yaml) or pass --pointing-model."
        )
    processor = None
    if model is None:
        torch.manual_seed(0)
        model, processor = create_model(ModelArguments(model_name="test_resnet"), image_size=32)
    grader = load_grader(model, device="cpu", processor=processor)
    folder = make_synthetic(
        Path(cache_dir) / f"pointing_{image_size}_{seed}",
        num_images=num_images,
        image_size=image_size,
        seed=seed,
        overwrite=True,
        lesion_masks=True,
    )
    rows = [line.split(",") for line in (folder / "train.csv").read_text().splitlines()[1:]]
    referable = [(image_id, int(grade)) for image_id, grade in rows if int(grade) >= 2]
    processor, pixels, masks = grader.processor, [], []
    for image_id, _ in referable:
        photo = open_image(folder / "train_images" / f"{image_id}.png")
        mask = np.asarray(Image.open(folder / "lesion_masks" / f"{image_id}.png"))
        pixels.append(grader.view(photo)[1])
        masks.append(_mask_as_model_sees_it(photo, mask, processor))
    maps = gradcam(grader, torch.stack(pixels))
    masks = np.stack(masks)
    radius = max(1, round(TOLERANCE_AT_224 * processor.input_side / 224))
    near = _dilated(masks, radius)
    return {
        "model": str(model) if isinstance(model, str | Path) else "test_resnet (random weights)",
        "num_images": num_images,
        "image_size": image_size,
        "referable_images": len(referable),
        "with_lesions_in_view": int(masks.reshape(len(masks), -1).any(axis=1).sum()),
        "pointing_game": pointing_game(maps, masks),
        "random_point": random_point_baseline(masks),
        "tolerance_px": radius,
        "pointing_game_tolerant": pointing_game(maps, near),
        "random_point_tolerant": random_point_baseline(near),
    }
