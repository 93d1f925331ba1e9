"""Where the heatmaps point: the pointing game on synthetic photographs whose lesions are known.

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
from dr_hf.data.fundus_processor import normalize
from dr_hf.data.preprocessing import _locate_fov, as_rgb_array
from dr_hf.data.synthetic import make_synthetic
from dr_hf.evaluation.heatmaps import gradcam, pointing_game, random_point_baseline
from dr_hf.evaluation.predict import load_grader
from dr_hf.models.graders import create_model


def _mask_as_model_sees_it(photo: Image.Image, mask: np.ndarray, processor) -> np.ndarray:
    """The lesion mask through the processor's reduction, field-of-view crop and square resize."""
    side = processor.input_side
    array = as_rgb_array(photo, side)
    mask = cv2.resize(mask, (array.shape[1], array.shape[0]), interpolation=cv2.INTER_NEAREST)
    box = _locate_fov(array, None) if processor.crop_fov else None
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
    if model is None:
        torch.manual_seed(0)
        model = create_model(ModelArguments(model_name="test_resnet"), image_size=32)
    grader = load_grader(model, device="cpu")
    folder = make_synthetic(
        Path(cache_dir) / f"pointing_{image_size}_{seed}", num_images=num_images,
        image_size=image_size, seed=seed, overwrite=True, lesion_masks=True,
    )  # fmt: skip
    rows = [line.split(",") for line in (folder / "train.csv").read_text().splitlines()[1:]]
    referable = [(image_id, int(grade)) for image_id, grade in rows if int(grade) >= 2]
    processor, pixels, masks = grader.processor, [], []
    for image_id, _ in referable:
        photo = Image.open(folder / "train_images" / f"{image_id}.png").convert("RGB")
        mask = np.asarray(Image.open(folder / "lesion_masks" / f"{image_id}.png"))
        pixels.append(normalize(processor.pixels(photo), processor.image_mean, processor.image_std))
        masks.append(_mask_as_model_sees_it(photo, mask, processor))
    maps = gradcam(grader, torch.from_numpy(np.stack(pixels)))
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
