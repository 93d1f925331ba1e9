"""Readers of the local layouts: label CSV + image folder, grade sub-folders, saved datasets.

Each returns datasets with the columns of `FEATURES`, in that order; images stay file paths (or
the bytes a saved dataset holds) and are decoded only when a row is read. Every row says whose
photograph it is (`patient_id`, `eye`: `dr_hf.data.patients.find_patients`, from a CSV's or a
saved dataset's patient and eye columns, else from EyePACS-style names, else each photograph its
own patient); each source says once in the log how its patients were found.
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
from dr_hf.data.patients import (
    COLUMNS,
    EYE_COLUMNS,
    PATIENT_COLUMNS,
    Patients,
    find_patients,
    parse_eyes,
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
        "patient_id": Value("string"),
        "eye": Value("string"),
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


def _read_csv(path: Path, args: DataArguments) -> tuple[list[str], dict[str, list[str]], dict]:
    """Line numbers of a label CSV's rows, and the cells and header names of the columns used:
    "id" and "label", and "patient" and "eye" where the CSV has them."""
    wanted = {
        "id": (args.id_column, ID_COLUMNS, "image-id", "id_column", True),
        "label": (args.label_column, LABEL_COLUMNS, "grade", "label_column", True),
        "patient": (args.patient_column, PATIENT_COLUMNS, "patient", "patient_column", False),
        "eye": (args.eye_column, EYE_COLUMNS, "eye", "eye_column", False),
    }
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file)
            header = [name.strip() for name in next(reader, [])]
            if not any(header):
                raise DataError(f"{path} is empty: it needs a header and one row per image.")
            found = {
                role: _column(header, *spec[:2], path, *spec[2:]) for role, spec in wanted.items()
            }
            found = {role: at for role, at in found.items() if at is not None}
            lines, cells = [], {role: [] for role in found}
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                lines.append(f"line {reader.line_num}")
                for role, at in found.items():
                    cells[role].append(_cell(row, at))
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not UTF-8 text ({err}): save it as a UTF-8 CSV.") from err
    except csv.Error as err:
        raise DataError(f"{path}: not a readable CSV ({err}).") from err
    if not lines:
        raise DataError(f"{path} has a header but no rows: add one row per image.")
    return lines, cells, {role: header[at] for role, at in found.items()}


def _cell(row: list[str], at: int) -> str:
    return row[at].strip() if at < len(row) else ""


def _column(
    header: list[str],
    wanted: str | None,
    known: tuple,
    path: Path | str,
    what: str,
    flag: str,
    required: bool = True,
) -> int | None:
    """Where the column `wanted` (else the first of `known`) is in `header`; None for an
    optional column that was not asked for by name and is absent."""
    lowered = [name.lower() for name in header]
    looked_for = (wanted,) if wanted else known
    for name in looked_for:
        if name.lower() in lowered:
            return lowered.index(name.lower())
    if not (wanted or required):
        return None
    raise DataError(
        f"{path}: no {what} column. Looked for {', '.join(map(repr, looked_for))}; columns found: "
        f"{', '.join(repr(name) for name in header if name)}. Pass {flag}=<one of the columns found>."
    )


def from_csv(csv_path: Path, image_dir: Path, args: DataArguments) -> Dataset:
    lines, cells, names = _read_csv(csv_path, args)
    where, raw_ids = str(csv_path), cells["id"]
    empty = [line for line, image_id in zip(lines, raw_ids) if not image_id]
    if empty:
        raise DataError(f"{where}: empty image id in column {names['id']!r} on {', '.join(empty)}.")
    labels = parse_grades(cells["label"], lines, where, names["label"])
    ids = [strip_image_extension(image_id) for image_id in raw_ids]
    check_unique_ids(ids, lines, where)
    eyes = parse_eyes(cells["eye"], lines, where, names["eye"]) if "eye" in cells else None
    patients = find_patients(ids, lines, where, cells.get("patient"), eyes)
    log_patients(where, patients, names.get("patient"))
    paths = resolve_images(raw_ids, lines, image_dir, where)
    return build_dataset(paths, labels, ids, patients)


def log_patients(where: str, patients: Patients, column: str | None = None) -> None:
    """Say once per source how its patients were found, and how many there are."""
    how = patients.described + (f" ({column!r})" if column and patients.how == COLUMNS else "")
    logger.info(
        "%s: %s: %d photographs of %d patients",
        where,
        how,
        len(patients.ids),
        len(set(patients.ids)),
    )


def from_grade_folders(root: Path, subdirs: list[str], args: DataArguments) -> Dataset:
    """One sub-folder per grade, named 0 to 4; every image below it has that grade. Patients come
    from the file names (EyePACS-style), else each photograph is its own patient."""
    flags = ("patient_column", "eye_column")
    given = [f"{flag}={getattr(args, flag)!r}" for flag in flags if getattr(args, flag)]
    if given:
        raise DataError(
            f"{root}: {' and '.join(given)} given, but grade folders have no columns. Name the "
            "files <patient>_left / <patient>_right, or use a label CSV with those columns."
        )
    grades = [str(grade) for grade in range(NUM_GRADES)]
    strays = sorted(name for name in subdirs if name not in grades)
    if strays:
        raise DataError(
            f"{root}: sub-folders must be the grades {', '.join(grades)}; found "
            f"{', '.join(strays)}. Move these folders out of {root}."
        )
    paths, labels, rows, others = [], [], [], []
    for grade in sorted(subdirs):
        for path in sorted((root / grade).rglob("*")):
            if path.name.startswith(".") or not path.is_file():
                continue
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                paths.append(str(path.resolve()))
                rows.append(str(path.relative_to(root)))  # a linked file resolves elsewhere
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
    ids = [Path(row).stem for row in rows]
    check_unique_ids(ids, rows, str(root))
    patients = find_patients(ids, rows, str(root))
    log_patients(str(root), patients)
    return build_dataset(paths, labels, ids, patients)


def build_dataset(
    images: list, labels: list[int], ids: list[str], patients: Patients | None = None
) -> Dataset:
    """A dataset of `FEATURES` from image paths (or arrays), grades, ids and their patients
    (found from the ids when not given)."""
    patients = patients or find_patients(ids, ids, "dataset")
    return Dataset.from_dict(
        {
            "image": images,
            "label": labels,
            "image_id": ids,
            "patient_id": patients.ids,
            "eye": patients.eyes,
        },
        features=FEATURES,
    )


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
    """Rename, check and cast a dataset's columns to `FEATURES` (image_id derived if absent;
    patient_id and eye kept, or found as for a CSV: patient and eye columns, else the names).

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
    patients = _saved_patients(ds, ids, rows, where, args)
    ds = ds.select_columns([image or pixels])
    ds = ds.rename_column(image, "image") if image and image != "image" else ds
    ds = ds.add_column("label", grades, feature=FEATURES["label"])
    ds = ds.add_column("image_id", ids, feature=FEATURES["image_id"])
    ds = ds.add_column("patient_id", patients.ids, feature=FEATURES["patient_id"])
    ds = ds.add_column("eye", patients.eyes, feature=FEATURES["eye"])
    if pixels:
        return ds
    return ds.cast_column("image", FEATURES["image"])  # changes the decoding only, writes nothing


def _saved_patients(
    ds: Dataset, ids: list[str], rows: list[str], where: str, args: DataArguments
) -> Patients:
    """The patients of a saved or Hub dataset's rows: its patient and eye columns (`patient_id`
    and `eye` as dr_hf saves them, or as named or auto-detected), else found from the ids."""
    columns = ds.column_names
    found = {}
    for role, wanted, known, flag in (
        ("patient", args.patient_column, PATIENT_COLUMNS, "patient_column"),
        ("eye", args.eye_column, EYE_COLUMNS, "eye_column"),
    ):
        at = _column(columns, wanted, known, where, role, flag, required=False)
        if at is not None:
            found[role] = columns[at]
    values = {
        role: ["" if value is None else str(value) for value in ds[column]]
        for role, column in found.items()
    }
    eyes = parse_eyes(values["eye"], rows, where, found["eye"]) if "eye" in values else None
    patients = find_patients(ids, rows, where, values.get("patient"), eyes)
    log_patients(where, patients, found.get("patient"))
    return patients


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
