"""Checks on training data that must fail before training starts: grades, files, decodability,
and validation sets that share photographs or patients with training.

Every failure is a `DataError` that names the file and the row and says what to do.
"""

import io
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from datasets import Dataset, Image
from PIL import Image as PILImage

from dr_hf.data.files import DECODE_ERRORS
from dr_hf.data.patients import own_patients
from dr_hf.errors import DataError, listing
from dr_hf.grades import NUM_GRADES

logger = logging.getLogger(__name__)

CHECK_BATCH = 64  # rows of a saved dataset hold their encoded bytes


def parse_grade(value: object) -> int | None:
    """The grade 0-4 that `value` spells ("2", 2, "2.0"), or None when it is no grade."""
    if isinstance(value, bool):
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    if not number.is_integer() or not 0 <= number < NUM_GRADES:
        return None
    return int(number)


def parse_grades(values: list, rows: list[str], where: str, column: str) -> list[int]:
    """Grades of every row, or a DataError listing each row whose value is not 0-4."""
    grades = [parse_grade(value) for value in values]
    bad = [f"{row}: {value!r}" for row, value, grade in zip(rows, values, grades) if grade is None]
    if bad:
        raise DataError(
            f"{where}: {len(bad)} row(s) of column {column!r} hold no grade 0-{NUM_GRADES - 1} "
            f"(integers; 2.0 reads as 2):\n{listing(bad)}\nFix or remove these rows, or pass "
            "label_column=<the grade column>."
        )
    return grades


def check_unique_ids(ids: list[str], rows: list[str], where: str) -> None:
    """Raise on ids that appear twice: two rows would claim the same photograph."""
    seen: dict[str, list[str]] = {}
    for image_id, row in zip(ids, rows):
        seen.setdefault(image_id, []).append(row)
    duplicates = [f"{image_id!r}: {', '.join(r)}" for image_id, r in seen.items() if len(r) > 1]
    if duplicates:
        raise DataError(
            f"{where}: {len(duplicates)} image id(s) appear more than once:\n{listing(duplicates)}\n"
            "Keep one row per image."
        )


def check_no_shared_images(train: Dataset, validation: Dataset, where: str, val_where: str) -> None:
    """Raise when a validation image is also a training image: it would be scored on what the
    model was trained on.

    Only rows whose ids match are compared, by file or by content: IDRiD names its training and
    test photographs alike (IDRiD_001 in both), and those are different images.
    """
    val_rows = {image_id: row for row, image_id in enumerate(validation["image_id"])}
    pairs = [(row, val_rows[i]) for row, i in enumerate(train["image_id"]) if i in val_rows]
    if not pairs:
        return
    if "image" not in train.column_names or "image" not in validation.column_names:
        shared = _same_pixels(train, validation, pairs)
    else:
        shared = _same_files(train, validation, pairs)
    if shared:
        raise DataError(
            f"{val_where}: {len(shared)} of its {len(validation)} image(s) are also in the "
            f"training set {where} (same id, same file or content):\n{listing(sorted(shared))}\n"
            "Remove these images from one of the two sets, or pass no validation_dir / "
            "validation_csv to hold out validation_split of the training data."
        )


def check_no_shared_patients(
    train: Dataset, validation: Dataset, where: str, val_where: str, allow: bool = False
) -> None:
    """Raise (or, with `allow`, warn) when a validation patient also has photographs in
    training: the fellow eye of a training photograph is no independent test of the model.

    Patients are compared by `patient_id` (`<source>/<patient>` among several sources). Rows
    without patient information (the patient is the photograph's own id) are not compared: the
    same id may name different photographs (IDRiD_001 of IDRiD's training and test sets), and the
    same photograph is `check_no_shared_images`'s concern.
    """
    if "patient_id" not in train.column_names or "patient_id" not in validation.column_names:
        return

    def known(ds: Dataset) -> set[str]:
        patients, ids = ds["patient_id"], ds["image_id"]
        return {p for p, own in zip(patients, own_patients(patients, ids)) if not own}

    shared = sorted(known(train) & known(validation))
    if not shared:
        return
    if allow:
        logger.warning(
            "%s: %d patient(s) of the validation set also have photographs in the training set "
            "%s; going on because allow_shared_patients=True: validation figures will be "
            "optimistic.",
            val_where,
            len(shared),
            where,
        )
        return
    raise DataError(
        f"{val_where}: {len(shared)} patient(s) of the validation set also have photographs in "
        f"the training set {where}:\n{listing(shared)}\nA patient's eyes share camera, "
        "pigmentation and usually grade, so validating on one eye of a patient trained on the "
        "other is optimistic. Move these patients' photographs to one of the two sets, or pass no "
        "validation_dir / validation_csv to hold out validation_split of the training patients, "
        "or pass allow_shared_patients=True to go on anyway."
    )


def _same_pixels(train: Dataset, validation: Dataset, pairs: list) -> list[str]:
    """Ids of pairs whose raw uint8 caches (`pixels`) hold the same bytes."""
    if "pixels" not in train.column_names or "pixels" not in validation.column_names:
        return []  # a raw cache against photographs: not the same preparation, refused later
    first = train.select([p[0] for p in pairs])
    second = validation.select([p[1] for p in pairs])
    return [
        image_id
        for image_id, a, b in zip(first["image_id"], first["pixels"], second["pixels"])
        if a == b
    ]


def _same_files(train: Dataset, validation: Dataset, pairs: list) -> list[str]:
    train_images = train.cast_column("image", Image(decode=False)).select([p[0] for p in pairs])
    val_images = validation.cast_column("image", Image(decode=False)).select([p[1] for p in pairs])
    shared = [
        image_id
        for image_id, a, b in zip(
            train_images["image_id"], train_images["image"], val_images["image"]
        )
        if _same_image(a, b)
    ]
    return shared


def _same_image(a: dict, b: dict) -> bool:
    if a.get("path") and b.get("path") and not (a.get("bytes") or b.get("bytes")):
        first, second = Path(a["path"]), Path(b["path"])
        if first.resolve() == second.resolve():
            return True
        if (
            not (first.is_file() and second.is_file())
            or first.stat().st_size != second.stat().st_size
        ):
            return False
    content = _content(a)
    return content is not None and content == _content(b)


def _content(value: dict) -> bytes | None:
    if value.get("bytes"):
        return value["bytes"]
    path = Path(value["path"]) if value.get("path") else None
    return path.read_bytes() if path and path.is_file() else None


def image_problem(source: str | bytes) -> str | None:
    """Why the image cannot be decoded, or None when it can, without decoding the pixels.

    PNG: `verify()` walks every chunk and checks its CRC, which catches truncated and corrupted
    files without inflating the pixels (1.3 ms for a 3000x2000 PNG, a full decode takes 56 ms).
    JPEG has no checksum: a file that ends with its end-of-image marker is accepted after the
    header parse; one that does not (truncated, or trailing bytes) is decoded at 1/8 scale to decide.
    Other formats are decoded in full.
    """
    try:
        with PILImage.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            if image.format == "PNG":
                image.verify()
            elif image.format != "JPEG" or not _ends_with_jpeg_eoi(source):
                image.draft("RGB", (max(image.width // 8, 1), max(image.height // 8, 1)))
                image.load()
    except DECODE_ERRORS as err:
        return f"{type(err).__name__}: {err}"
    return None


def _ends_with_jpeg_eoi(source: str | bytes) -> bool:
    if isinstance(source, bytes):
        tail = source[-2:]
    else:
        with open(source, "rb") as file:
            file.seek(-2, os.SEEK_END)
            tail = file.read(2)
    return tail == b"\xff\xd9"


def _source(value: dict) -> str | bytes | None:
    return value["bytes"] if value.get("bytes") else value.get("path")


def drop_or_raise_unreadable(ds: Dataset, where: str, skip: bool) -> Dataset:
    """Check every image of `ds`; drop the undecodable ones when `skip`, else raise listing them.
    A raw uint8 cache (no `image` column) decodes nothing; its rows' sizes are checked as read."""
    if "image" not in ds.column_names:
        return ds
    raw = ds.cast_column("image", Image(decode=False)) if len(ds) else ds
    problems: list[str] = []
    keep: list[int] = []
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for start in range(0, len(raw), CHECK_BATCH):
            batch = raw[start : start + CHECK_BATCH]
            sources = [_source(value) for value in batch["image"]]
            reasons = pool.map(
                lambda s: "no path or bytes" if s is None else image_problem(s), sources
            )
            for offset, (value, image_id, reason) in enumerate(
                zip(batch["image"], batch["image_id"], reasons)
            ):
                if reason is None:
                    keep.append(start + offset)
                    continue
                name = value.get("path") or f"image_id {image_id!r}"
                problems.append(f"{name} ({reason})")
                if skip:
                    logger.warning("%s: dropped undecodable image %s", where, problems[-1])
    if not problems:
        return ds
    if not skip:
        raise DataError(
            f"{where}: {len(problems)} image(s) cannot be decoded:\n{listing(problems)}\n"
            "Replace these files, or pass skip_bad_images=True to train without them."
        )
    logger.warning(
        "%s: kept %d of %d images, dropped %d undecodable", where, len(keep), len(ds), len(problems)
    )
    if not keep:
        raise DataError(f"{where}: no decodable image is left; check the image files.")
    return ds.select(keep)
