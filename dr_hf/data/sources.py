"""Readers of the local layouts: label CSV + image folder, grade sub-folders, saved datasets.

Each returns datasets with the columns of `FEATURES`, in that order; images stay file paths (or
the bytes a saved dataset holds) and are decoded only when a row is read.
"""

import csv
import logging
from pathlib import Path

import pyarrow as pa
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value

from dr_hf.config.arguments import DataArguments
from dr_hf.data.checks import check_unique_ids, parse_grades
from dr_hf.data.files import (
    IMAGE_EXTENSIONS,
    holds_images,
    resolve_images,
    strip_image_extension,
)
from dr_hf.data.prepare import RAW_COLUMN
from dr_hf.errors import DataError
from dr_hf.grades import GRADE_NAMES, NUM_GRADES

logger = logging.getLogger(__name__)

FEATURES = Features(
    {
        "image": Image(mode="RGB"),
        "label": ClassLabel(names=GRADE_NAMES),
        "image_id": Value("string"),
    }
)
ID_COLUMNS = ("id_code", "image", "image name", "image_id", "id", "filename", "file_name", "file")
LABEL_COLUMNS = ("diagnosis", "level", "retinopathy grade", "label", "grade", "dr_grade", "class")


def find_image_dir(
    given: str | None, base: Path | None, csv_path: Path, candidates: tuple, flag: str = "image_dir"
) -> Path:
    """The given image folder, else the candidate beside the CSV that holds images."""
    if given:
        for folder in (Path(given), base / given if base else None):
            if folder is not None and folder.is_dir():
                return folder
        raise DataError(f"Image folder {given} does not exist: pass {flag}=<the image folder>.")
    parents = [base] if base else []
    parents += [csv_path.parent] if csv_path.parent not in parents else []
    folders = [p / name for p in parents for name in candidates if (p / name).is_dir()]
    for folder in [*folders, *parents]:
        if holds_images(folder):
            return folder
    raise DataError(
        f"No image folder found for {csv_path}: looked in "
        f"{', '.join(str(f) for f in [*folders, *parents])}; pass {flag}=<the image folder>."
    )


def _read_csv(
    path: Path, id_column: str | None, label_column: str | None
) -> tuple[list[str], list[str], list[str], str, str]:
    """Line numbers, ids and raw grades of a label CSV; names of the columns used."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file)
            header = [name.strip() for name in next(reader, [])]
            if not any(header):
                raise DataError(f"{path} is empty: it needs a header and one row per image.")
            id_at = _column(header, id_column, ID_COLUMNS, path, "image-id", "id_column")
            label_at = _column(header, label_column, LABEL_COLUMNS, path, "grade", "label_column")
            rows = [
                (f"line {reader.line_num}", _cell(row, id_at), _cell(row, label_at))
                for row in reader
                if any(cell.strip() for cell in row)
            ]
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not UTF-8 text ({err}): save it as a UTF-8 CSV.") from err
    except csv.Error as err:
        raise DataError(f"{path}: not a readable CSV ({err}).") from err
    if not rows:
        raise DataError(f"{path} has a header but no rows: add one row per image.")
    lines, ids, labels = map(list, zip(*rows))
    return lines, ids, labels, header[id_at], header[label_at]


def _cell(row: list[str], at: int) -> str:
    return row[at].strip() if at < len(row) else ""


def _column(
    header: list[str], wanted: str | None, known: tuple, path: Path, what: str, flag: str
) -> int:
    lowered = [name.lower() for name in header]
    looked_for = (wanted,) if wanted else known
    for name in looked_for:
        if name.lower() in lowered:
            return lowered.index(name.lower())
    raise DataError(
        f"{path}: no {what} column. Looked for {', '.join(map(repr, looked_for))}; columns found: "
        f"{', '.join(repr(name) for name in header if name)}. Pass {flag}=<one of the columns found>."
    )


def from_csv(csv_path: Path, image_dir: Path, args: DataArguments) -> Dataset:
    lines, raw_ids, raw_labels, id_name, label_name = _read_csv(
        csv_path, args.id_column, args.label_column
    )
    where = str(csv_path)
    empty = [line for line, image_id in zip(lines, raw_ids) if not image_id]
    if empty:
        raise DataError(f"{where}: empty image id in column {id_name!r} on {', '.join(empty)}.")
    labels = parse_grades(raw_labels, lines, where, label_name)
    ids = [strip_image_extension(image_id) for image_id in raw_ids]
    check_unique_ids(ids, lines, where)
    paths = resolve_images(raw_ids, lines, image_dir, where)
    return build_dataset(paths, labels, ids)


def from_grade_folders(root: Path, subdirs: list[str]) -> Dataset:
    """One sub-folder per grade, named 0 to 4; every image below it has that grade."""
    grades = [str(grade) for grade in range(NUM_GRADES)]
    strays = sorted(name for name in subdirs if name not in grades)
    if strays:
        raise DataError(
            f"{root}: sub-folders must be the grades {', '.join(grades)}; found "
            f"{', '.join(strays)}. Move these folders out of {root}."
        )
    paths, labels, others = [], [], []
    for grade in sorted(subdirs):
        for path in sorted((root / grade).rglob("*")):
            if path.name.startswith(".") or not path.is_file():
                continue
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                paths.append(str(path.resolve()))
                labels.append(int(grade))
            else:
                others.append(str(path))
    if others:
        logger.warning(
            "%s: ignored %d file(s) that are not images: %s", root, len(others), others[:20]
        )
    if not paths:
        raise DataError(
            f"{root}: the grade folders hold no images ({', '.join(IMAGE_EXTENSIONS)})."
        )
    ids = [Path(path).stem for path in paths]
    check_unique_ids(
        ids, [str(Path(path).relative_to(root.resolve())) for path in paths], str(root)
    )
    return build_dataset(paths, labels, ids)


def build_dataset(images: list, labels: list[int], ids: list[str]) -> Dataset:
    """A dataset of `FEATURES` from image paths (or arrays), grades and ids."""
    return Dataset.from_dict({"image": images, "label": labels, "image_id": ids}, features=FEATURES)


def from_saved(
    saved: Dataset | DatasetDict, where: str, args: DataArguments
) -> tuple[Dataset, Dataset | None]:
    """Train (and validation, when the DatasetDict has one) of a saved or Hub dataset."""
    if isinstance(saved, Dataset):
        return normalise(saved, where, args), None
    if "train" not in saved:
        raise DataError(
            f"{where} has the splits {', '.join(saved)} but no 'train': save the training data "
            "as the 'train' split (and, optionally, 'validation')."
        )
    unused = [name for name in saved if name not in ("train", "validation")]
    if unused:
        logger.info("%s: splits %s are not used (only train and validation)", where, unused)
    train = normalise(saved["train"], f"{where} [train]", args)
    if "validation" not in saved:
        return train, None
    return train, normalise(saved["validation"], f"{where} [validation]", args)


def normalise(ds: Dataset, where: str, args: DataArguments) -> Dataset:
    """Rename, check and cast a dataset's columns to `FEATURES` (image_id derived if absent).

    A `dr-hf prepare --format raw` cache keeps its `pixels` column (raw uint8 bytes) in place
    of `image`."""
    columns = ds.column_names
    image = "image" if "image" in columns else None
    image = image or next((c for c, f in ds.features.items() if isinstance(f, Image)), None)
    pixels = RAW_COLUMN if image is None and RAW_COLUMN in columns else None
    label_names = (args.label_column,) if args.label_column else ("label", *LABEL_COLUMNS)
    label = next((name for name in label_names if name in columns), None)
    id_column = args.id_column or "image_id"
    missing = [] if image or pixels else ["image (an Image column)"]
    missing += [f"{id_column} (id_column)"] if args.id_column and id_column not in columns else []
    missing += [] if label else [f"label (looked for {', '.join(label_names)})"]
    missing += [] if image or id_column in columns else ["image_id (a raw cache has no file names)"]
    if missing:
        raise DataError(
            f"{where} lacks the column(s) {'; '.join(missing)}; columns found: "
            f"{', '.join(columns)}. It needs image and label (image_id is optional): rename the "
            "columns or pass label_column=<the grade column>."
        )
    if image and not isinstance(ds.features[image], Image):
        ds = ds.cast_column(image, Image(decode=False))
    ids = [str(v) for v in ds[id_column]] if id_column in columns else _derived_ids(ds, image)
    rows = [f"row {index} (image_id {image_id!r})" for index, image_id in enumerate(ids)]
    check_unique_ids(ids, rows, where)
    grades = parse_grades(_label_values(ds, label, where), rows, where, label)
    ds = ds.select_columns([image or pixels])
    ds = ds.rename_column(image, "image") if image and image != "image" else ds
    ds = ds.add_column("label", grades, feature=FEATURES["label"])
    ds = ds.add_column("image_id", ids, feature=FEATURES["image_id"])
    if pixels:
        return ds
    return ds.cast_column("image", FEATURES["image"])  # changes the decoding only, writes nothing


def _label_values(ds: Dataset, label: str, where: str) -> list:
    """Raw label values; a ClassLabel's indices are mapped to grades through its names."""
    values = list(ds[label])
    feature = ds.features[label]
    if not isinstance(feature, ClassLabel):
        return values
    names = [name.lower() for name in feature.names]
    if names == [name.lower() for name in GRADE_NAMES]:
        return values
    try:
        grade_of = [int(name) for name in feature.names]
    except ValueError:
        raise DataError(
            f"{where}: the class names of {label!r} ({', '.join(feature.names)}) are not grades; "
            f"they must be 0 to {NUM_GRADES - 1} or {', '.join(GRADE_NAMES)} in this order."
        ) from None
    return [grade_of[value] if 0 <= value < len(grade_of) else value for value in values]


def _derived_ids(ds: Dataset, image: str) -> list[str]:
    """File stems of the stored image paths when they are unique, else the row numbers."""
    storage = ds.select_columns([image]).with_format("arrow")
    paths: list[str | None] = []
    for batch in storage.iter(batch_size=1000):
        column: pa.ChunkedArray | pa.Array = batch[image]
        paths.extend(column.combine_chunks().field("path").to_pylist())
    stems = [Path(path).stem if path else None for path in paths]
    if None in stems or len(set(stems)) < len(stems):
        return [str(index) for index in range(len(paths))]
    return stems
