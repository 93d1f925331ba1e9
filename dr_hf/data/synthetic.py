"""The synthetic data sets: the built-in default in the APTOS 2019 layout, and patients with two
eyes each in the EyePACS 2015 layout.

Owns the data-set writer (`make_synthetic`): how many photographs of each grade (`grade_counts`,
skewed like APTOS 2019 by `APTOS_GRADE_SHARES`) or the grades of both eyes of each patient
(`pair_grades`, EyePACS-like by `EYEPACS_GRADE_SHARES` and `FELLOW_EYE_DIFFERENCE`), their file
names and seeds, and the label CSV. Each photograph is drawn by `dr_hf.data.fundus_render`, whose
`render_fundus`, `FundusGeometry`, `FundusLook` and `draw_look` are re-exported here.
"""

import csv
import json
import re
from pathlib import Path

import cv2
import numpy as np

from dr_hf.data.fundus_render import FundusGeometry, FundusLook, draw_look, render_fundus
from dr_hf.data.patients import LEFT, RIGHT
from dr_hf.grades import NUM_GRADES

__all__ = [
    "APTOS_GRADE_SHARES",
    "EYEPACS_GRADE_SHARES",
    "FELLOW_EYE_DIFFERENCE",
    "FundusGeometry",
    "FundusLook",
    "draw_look",
    "grade_counts",
    "make_synthetic",
    "pair_grades",
    "render_fundus",
]

# Share of each grade in APTOS 2019 train.csv (1805, 370, 999, 193, 295 of 3662 images).
APTOS_GRADE_SHARES = (0.493, 0.101, 0.273, 0.053, 0.080)
# Share of each grade in EyePACS 2015 trainLabels.csv (25810, 2443, 5292, 873, 708 of 35126).
EYEPACS_GRADE_SHARES = (0.7348, 0.0696, 0.1507, 0.0249, 0.0202)
# Share of patients whose two eyes' grades are 0, 1 and 2 apart: an approximation of EyePACS,
# where most pairs agree and most of the rest are one grade apart.
FELLOW_EYE_DIFFERENCE = (0.85, 0.12, 0.03)

DEFAULT_IMAGES = 200
JPEG_QUALITY = 95  # as EyePACS's photographs
MASK_DIR = "lesion_masks"
MARKER = "dr_hf_synthetic.json"
"""Written beside every synthetic set (its layout, size and seed): what `overwrite` may remove."""
# What each layout writes: the label CSV, its header, the image folder, the photographs' suffix,
# and the names (stems) of its photographs and their masks.
_APTOS = ("train.csv", ("id_code", "diagnosis"), "train_images", ".png", r"synth_.*")
_EYEPACS = ("trainLabels.csv", ("image", "level"), "train", ".jpeg", r"\d+_(left|right)")


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


def pair_grades(num_patients: int, rng: np.random.Generator) -> np.ndarray:
    """The grades of both eyes of `num_patients` patients: ints, one row per patient, the left
    eye's grade then the right eye's.

    The patients' grades are `grade_counts(num_patients, EYEPACS_GRADE_SHARES)` in a random
    order. One eye, left or right at random, has the patient's grade; the fellow eye's grade
    differs from it by 0, 1 or 2 with the probabilities `FELLOW_EYE_DIFFERENCE` (85 %, 12 %,
    3 %), up or down at random, and the other way where that would leave grades 0 to 4. This
    approximates EyePACS (most pairs agree, most of the rest by one grade); since fellow eyes
    move some grade-0 patients' photographs to grades 1 and 2, the photographs' shares come out
    near EyePACS's, not exactly at them.
    """
    grades = np.repeat(np.arange(NUM_GRADES), grade_counts(num_patients, EYEPACS_GRADE_SHARES))
    rng.shuffle(grades)
    apart = rng.choice(len(FELLOW_EYE_DIFFERENCE), size=num_patients, p=FELLOW_EYE_DIFFERENCE)
    step = apart * rng.choice([-1, 1], size=num_patients)
    fellow = grades + step
    fellow = np.where((fellow < 0) | (fellow >= NUM_GRADES), grades - step, fellow)
    fellow_is_left = rng.random(num_patients) < 0.5
    left = np.where(fellow_is_left, fellow, grades)
    right = np.where(fellow_is_left, grades, fellow)
    return np.stack([left, right], axis=1)


def make_synthetic(
    output_dir: str | Path,
    num_images: int | None = None,
    image_size: int = 256,
    seed: int = 0,
    height: int | None = None,
    overwrite: bool = False,
    lesion_masks: bool = False,
    patients: int | None = None,
) -> Path:
    """Write a synthetic set and return the folder: `num_images` independent photographs in the
    APTOS layout (200 when neither count is given), or both eyes of `patients` patients in the
    EyePACS layout.

    APTOS: `output_dir/train.csv` (id_code, diagnosis) lists `train_images/<id_code>.png`, with
    grades skewed like APTOS 2019; each image has its own generator seeded from (seed, index).

    EyePACS: `output_dir/trainLabels.csv` (image, level) lists `train/<image>.jpeg` (JPEG
    quality 95, as EyePACS), the left then the right eye of patients 1, 2, ... (`1_left`,
    `1_right`, ...), graded by `pair_grades`. Each patient draws one `FundusLook` that both its
    eyes share (fundus colour, vessels, the optic disc mirrored, camera) and each eye its own
    lesions for its grade, so the fellow eye carries evidence of the patient's grade, not the
    same lesions.

    `image_size` is the width, `height` defaults to it (APTOS frames are about 3:2). A seed
    always gives the same files. `lesion_masks` also writes `lesion_masks/<name>.png` (uint8,
    the photo's size, 255 where a lesion was drawn), for checking where a grader looks; the
    photographs are the same with or without it. A folder that already holds a set of either
    layout is refused unless `overwrite`; then that set's files are removed first, so stale
    files of an earlier, larger set do not stay.
    """
    if patients is not None and num_images is not None:
        raise ValueError(
            f"num_images={num_images} and patients={patients} were both given: pass num_images "
            "for independent photographs (APTOS layout) or patients for both eyes of each "
            "patient (EyePACS layout), not both."
        )
    if patients is None:
        layout, name = _APTOS, "num_images"
        count = DEFAULT_IMAGES if num_images is None else num_images
    else:
        layout, name, count = _EYEPACS, "patients", patients
    if count < 1:
        raise ValueError(f"{name}={count}: ask for at least one.")
    output_dir = Path(output_dir)
    _clear_earlier_sets(output_dir, overwrite)
    csv_name, header, image_folder, suffix, _ = layout
    image_dir, mask_dir = output_dir / image_folder, output_dir / MASK_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    if lesion_masks:
        mask_dir.mkdir(exist_ok=True)
    if patients is None:
        photographs, options = _aptos_photographs(count, seed), []
    else:
        photographs = _patient_photographs(count, seed)
        options = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    rows = []
    for image_name, grade, rng, look, eye in photographs:
        rgb, _, mask = render_fundus(
            grade, image_size, height or image_size, rng, return_mask=True, look=look, eye=eye
        )
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        _write_image(image_dir / f"{image_name}{suffix}", bgr, options)
        if lesion_masks:
            _write_image(mask_dir / f"{image_name}.png", mask)
        rows.append((image_name, grade))
    with open(output_dir / csv_name, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    record = {"layout": csv_name, name: count, "image_size": image_size, "seed": seed}
    (output_dir / MARKER).write_text(json.dumps(record) + "\n")
    return output_dir


def _aptos_photographs(num_images: int, seed: int):
    """(id_code, grade, generator, look, eye) of each independent photograph: no look, no eye."""
    grades = np.repeat(np.arange(NUM_GRADES), grade_counts(num_images))
    np.random.default_rng([seed, num_images]).shuffle(grades)
    for index, grade in enumerate(grades.tolist()):
        yield f"synth_{index:05d}", grade, np.random.default_rng([seed, index]), None, None


def _patient_photographs(num_patients: int, seed: int):
    """(image, grade, generator, look, eye) of both eyes of patients 1 to `num_patients`.

    The grades come from a generator of (seed, num_patients, 0); patient p's look and its eyes'
    generators from (seed, p, 1).
    """
    grades = pair_grades(num_patients, np.random.default_rng([seed, num_patients, 0]))
    for patient, eye_grades in enumerate(grades.tolist(), start=1):
        rng = np.random.default_rng([seed, patient, 1])
        look = draw_look(rng)
        for eye, grade, eye_rng in zip((LEFT, RIGHT), eye_grades, rng.spawn(2)):
            yield f"{patient}_{eye}", grade, eye_rng, look, eye


def _clear_earlier_sets(output_dir: Path, overwrite: bool) -> None:
    """Remove the files of earlier synthetic sets, of either layout, from `output_dir`; refuse,
    removing nothing, where a label CSV or photographs named like EyePACS's are there and not
    `overwrite`.

    With `overwrite`, files named as EyePACS names its photographs (`10_left.jpeg`) and its
    `trainLabels.csv` are removed only from a folder that `MARKER` says this function wrote: a
    real EyePACS folder has the same names, and its photographs must never be deleted."""
    label_csvs = [output_dir / layout[0] for layout in (_APTOS, _EYEPACS)]
    label_csvs = [path for path in label_csvs if path.is_file()]
    aptos, eyepacs = (_synthetic_files(output_dir, layout) for layout in (_APTOS, _EYEPACS))
    if not overwrite and (label_csvs or eyepacs):
        found = label_csvs[0] if label_csvs else eyepacs[0]
        raise FileExistsError(
            f"{found} already exists: choose an empty folder or pass overwrite=True "
            "(--overwrite) to replace it."
        )
    eyepacs_csv = output_dir / _EYEPACS[0]
    if (eyepacs or eyepacs_csv in label_csvs) and not (output_dir / MARKER).is_file():
        found = eyepacs[0] if eyepacs else eyepacs_csv
        raise FileExistsError(
            f"{found} is named like an EyePACS photograph or label file, and {output_dir} has no "
            f"{MARKER}, so it was not written by make-synthetic and is not removed: choose "
            "another folder for the synthetic set."
        )
    for path in [*label_csvs, *aptos, *eyepacs]:
        path.unlink()
    (output_dir / MARKER).unlink(missing_ok=True)


def _synthetic_files(output_dir: Path, layout) -> list[Path]:
    """The photographs and lesion masks in `output_dir` named as `layout` names them."""
    _, _, image_folder, suffix, stem = layout
    found = []
    for folder, extension in ((output_dir / image_folder, suffix), (output_dir / MASK_DIR, ".png")):
        if folder.is_dir():
            found += sorted(
                path
                for path in folder.iterdir()
                if path.suffix == extension and re.fullmatch(stem, path.stem) and path.is_file()
            )
    return found


def _write_image(path: Path, array: np.ndarray, options=()) -> None:
    if not cv2.imwrite(str(path), array, list(options)):
        raise OSError(f"Could not write {path}: check the folder is writable.")
