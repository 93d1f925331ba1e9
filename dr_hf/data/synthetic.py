"""The synthetic data set: the built-in default, written in the APTOS 2019 layout.

Owns the data-set writer: how many photographs of each grade (`grade_counts`, skewed like
APTOS 2019 by `APTOS_GRADE_SHARES`), their file names and seeds, and `train.csv`
(`make_synthetic`). Each photograph is drawn by `dr_hf.data.fundus_render`, whose
`render_fundus` and `FundusGeometry` are re-exported here.
"""

import csv
from pathlib import Path

import cv2
import numpy as np

from dr_hf.data.fundus_render import FundusGeometry, render_fundus
from dr_hf.grades import NUM_GRADES

__all__ = [
    "APTOS_GRADE_SHARES",
    "FundusGeometry",
    "grade_counts",
    "make_synthetic",
    "render_fundus",
]

# Share of each grade in APTOS 2019 train.csv (1805, 370, 999, 193, 295 of 3662 images).
APTOS_GRADE_SHARES = (0.493, 0.101, 0.273, 0.053, 0.080)


def grade_counts(num_images: int, shares=APTOS_GRADE_SHARES) -> list[int]:
    """Images per grade in proportion to `shares` (largest remainder), each grade at least twice
    once there are 10 images or more."""
    shares = np.asarray(shares) / np.sum(shares)
    counts = np.floor(num_images * shares).astype(int)
    order = np.argsort(-(num_images * shares - counts), kind="stable")
    counts[order[: num_images - counts.sum()]] += 1
    if num_images >= 2 * len(shares):
        for grade in range(len(shares)):
            while counts[grade] < 2:
                counts[int(np.argmax(counts))] -= 1
                counts[grade] += 1
    return counts.tolist()


def make_synthetic(
    output_dir: str | Path,
    num_images: int = 200,
    image_size: int = 256,
    seed: int = 0,
    height: int | None = None,
    overwrite: bool = False,
    lesion_masks: bool = False,
) -> Path:
    """Write `num_images` synthetic photographs in the APTOS layout and return the folder.

    `output_dir/train.csv` (id_code, diagnosis) lists `train_images/<id_code>.png`; grades are
    skewed like APTOS 2019. `image_size` is the width, `height` defaults to it (APTOS frames are
    about 3:2). Each image has its own generator seeded from (seed, index), so a seed always
    gives the same files. `lesion_masks` also writes `lesion_masks/<id_code>.png` (uint8, the
    photo's size, 255 where a lesion was drawn), for checking where a grader looks; the
    photographs are the same with or without it.
    """
    if num_images < 1:
        raise ValueError(f"num_images={num_images}: ask for at least one image.")
    height = height or image_size
    output_dir = Path(output_dir)
    csv_path = output_dir / "train.csv"
    if csv_path.exists() and not overwrite:
        raise FileExistsError(
            f"{csv_path} already exists: choose an empty folder or pass overwrite=True "
            "(--overwrite) to replace it."
        )
    image_dir, mask_dir = output_dir / "train_images", output_dir / "lesion_masks"
    image_dir.mkdir(parents=True, exist_ok=True)
    if lesion_masks:
        mask_dir.mkdir(exist_ok=True)
    for folder in (image_dir, mask_dir):  # left by an earlier, possibly larger, set
        for stale in folder.glob("synth_*.png"):
            stale.unlink()
    grades = np.repeat(np.arange(NUM_GRADES), grade_counts(num_images))
    np.random.default_rng([seed, num_images]).shuffle(grades)
    rows = []
    for index, grade in enumerate(grades.tolist()):
        id_code = f"synth_{index:05d}"
        rng = np.random.default_rng([seed, index])
        rgb, _, mask = render_fundus(grade, image_size, height, rng, return_mask=True)
        _write_png(image_dir / f"{id_code}.png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if lesion_masks:
            _write_png(mask_dir / f"{id_code}.png", mask)
        rows.append((id_code, grade))
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["id_code", "diagnosis"])
        writer.writerows(rows)
    return output_dir


def _write_png(path: Path, array: np.ndarray) -> None:
    if not cv2.imwrite(str(path), array):
        raise OSError(f"Could not write {path}: check the folder is writable.")
