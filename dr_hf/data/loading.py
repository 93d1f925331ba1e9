"""Load fundus photographs and their grades as a `DatasetDict` with `train` and `validation`.

Sources: a label CSV with an image folder (APTOS 2019, EyePACS, IDRiD), a folder of grade
sub-folders `0/`..`4/`, a dataset saved with `save_to_disk`, or a Hub dataset name. Every split has
the columns `image` (file paths, decoded lazily as RGB), `label` (ClassLabel of the grades),
`image_id`, `patient_id` and `eye` (left / right / unknown; `dr_hf.data.patients`). Bad input
stops here with a `DataError`, before any training starts; so does a validation set that shares
photographs or patients with training. Without one, `dr_hf.data.splits` holds out patients.
Several `data_dir` (or `validation_dir`) folders are read one by one and joined
(`dr_hf.data.multisource`): their rows gain a `source` column, their patient ids the source's
name, and the split is stratified by grade and source.
"""

import logging
import re
from pathlib import Path

import datasets
import numpy as np
from datasets import Dataset, DatasetDict

from dr_hf.config.arguments import DataArguments
from dr_hf.data.checks import (
    check_no_shared_images,
    check_no_shared_patients,
    drop_or_raise_unreadable,
)
from dr_hf.data.multisource import load_sources, shared_photographs
from dr_hf.data.sources import FEATURES, find_image_dir, from_csv, from_grade_folders, from_saved
from dr_hf.data.splits import patient_count, stratified_split
from dr_hf.errors import DataError, listing
from dr_hf.grades import NUM_GRADES

__all__ = [
    "FEATURES",
    "DataError",
    "load_dr_dataset",
    "load_dr_images",
    "source_counts",
]

logger = logging.getLogger(__name__)

# Per role: label CSV names and image folder names looked for, in order; the flags that override.
CSV_NAMES = {
    "train": ("train.csv", "trainLabels.csv"),
    "validation": ("validation.csv", "val.csv", "valid.csv", "train.csv", "trainLabels.csv"),
}
TRAIN_IMAGE_DIRS = ("train_images", "train", "images")
IMAGE_DIRS = {
    "train": TRAIN_IMAGE_DIRS,
    "validation": (
        "validation_images",
        "val_images",
        "val",
        "valid",
        "validation",
        *TRAIN_IMAGE_DIRS,
    ),
}
FLAGS = {
    "train": ("train_csv", "image_dir"),
    "validation": ("validation_csv", "validation_image_dir"),
}


def load_dr_dataset(args: DataArguments) -> DatasetDict:
    """Training and validation splits from the source `args` names, checked and capped.

    Labels, ids and files are checked as the source is read; decodability is checked last, on
    the rows kept after the split and the caps, so a quick capped run does not open every file
    and a corrupt file does not move other images across the split.
    """
    train, validation, where = _load_training_source(args)
    if args.validation_dir or args.validation_csv:
        validation, val_where = _load_validation_source(args)
        check_no_shared_images(train, validation, where, val_where)
    else:
        val_where = where
    if validation is not None:
        check_no_shared_patients(train, validation, where, val_where, args.allow_shared_patients)
    else:
        train, validation = stratified_split(train, args.validation_split, args.split_seed, where)
    train = _subset(train, args.max_train_samples, args.split_seed)
    validation = _subset(validation, args.max_eval_samples, args.split_seed)
    train = drop_or_raise_unreadable(train, where, args.skip_bad_images)
    validation = drop_or_raise_unreadable(validation, val_where, args.skip_bad_images)
    for name, split in (("train", train), ("validation", validation)):
        counts = np.bincount(np.asarray(split["label"], dtype=int), minlength=NUM_GRADES)
        logger.info(
            "%s: %d images of %d patients, per grade %s",
            name,
            len(split),
            patient_count(split),
            counts.tolist(),
        )
        for source, per_grade in (
            _per_source(split).items() if "source" in split.column_names else ()
        ):
            logger.info("%s, source %s: per grade %s", name, source, per_grade)
    return DatasetDict(train=train, validation=validation)


def source_counts(dataset: DatasetDict) -> dict:
    """Images per grade per source of each split ({split: {source: [count of grade 0, ...]}}; a
    single source is "all"), patients per source of each split under "patients" ({split:
    {source: count}}), and under "shared_photographs" the photographs found in several sources
    (see `dr_hf.data.multisource.shared_photographs`)."""
    counts: dict = {name: _per_source(split) for name, split in dataset.items()}
    counts["patients"] = {name: _patients_per_source(split) for name, split in dataset.items()}
    splits = [split for split in dataset.values() if "source" in split.column_names]
    joined = datasets.concatenate_datasets(splits) if splits else None
    counts["shared_photographs"] = shared_photographs(joined) if joined is not None else []
    return counts


def _per_source(split: Dataset) -> dict[str, list[int]]:
    labels = np.asarray(split["label"], dtype=int)
    sources = np.asarray(
        split["source"] if "source" in split.column_names else ["all"] * len(split)
    )
    return {
        str(source): np.bincount(labels[sources == source], minlength=NUM_GRADES).tolist()
        for source in sorted(set(sources.tolist()))
    }


def _patients_per_source(split: Dataset) -> dict[str, int]:
    columns = split.column_names
    patients = split["patient_id"] if "patient_id" in columns else split["image_id"]
    sources = split["source"] if "source" in columns else ["all"] * len(split)
    per_source: dict[str, set] = {}
    for source, patient in zip(sources, patients):
        per_source.setdefault(str(source), set()).add(patient)
    return {source: len(per_source[source]) for source in sorted(per_source)}


def load_dr_images(args: DataArguments) -> Dataset:
    """Every image of the source `args` names, checked, without a train/validation split: a
    held-out evaluation set. A saved DatasetDict's splits are joined; rows sorted by image id."""
    train, validation, where = _load_training_source(args)
    images = train if validation is None else datasets.concatenate_datasets([train, validation])
    images = images.select(np.argsort(np.asarray(images["image_id"]), kind="stable"))
    return drop_or_raise_unreadable(images, where, args.skip_bad_images)


def _subset(ds: Dataset, size: int | None, seed: int) -> Dataset:
    """`size` rows drawn at random with `seed`: the first rows of a grade-folder source would all
    be grade 0 (`run_image_classification`'s `shuffle(seed).select(range(n))`)."""
    if size is None or size >= len(ds):
        return ds
    return ds.shuffle(seed=seed).select(range(size))


def _load_training_source(args: DataArguments) -> tuple[Dataset, Dataset | None, str]:
    if args.dataset_name and (args.data_dir or args.train_csv):
        logger.warning("dataset_name=%r is not used: local data was given", args.dataset_name)
    if args.data_dir and len(args.data_dir) > 1:
        _refuse_file_flags(args, "train_csv", "image_dir")
        load_one = lambda folder: _from_local(args, "train", None, folder)  # noqa: E731
        return load_sources(args.data_dir, "training", load_one)
    if args.train_csv or args.data_dir:
        return _from_local(args, "train", args.train_csv, (args.data_dir or [None])[0])
    if args.dataset_name:
        return _from_hub(args.dataset_name, args)
    raise DataError("No training data given: pass data_dir, train_csv or dataset_name.")


def _refuse_file_flags(args: DataArguments, *flags: str) -> None:
    given = [flag for flag in flags if getattr(args, flag)]
    if given:
        raise DataError(
            f"{' and '.join(given)} name(s) the files of one source, but several folders were given "
            f"({', '.join(args.data_dir if 'train_csv' in flags else args.validation_dir)}): drop "
            f"{', '.join(given)} and let each folder's layout be detected."
        )


def _load_validation_source(args: DataArguments) -> tuple[Dataset, str]:
    if args.validation_dir and len(args.validation_dir) > 1:
        _refuse_file_flags(args, "validation_csv", "validation_image_dir")
        load_one = lambda folder: _from_local(args, "validation", None, folder)  # noqa: E731
        train, validation, where = load_sources(args.validation_dir, "validation", load_one)
        return (train if validation is None else validation), where
    folder = (args.validation_dir or [None])[0]
    train, validation, where = _from_local(args, "validation", args.validation_csv, folder)
    return (train if validation is None else validation), where


def _from_local(
    args: DataArguments, role: str, csv_name: str | None, folder: str | None
) -> tuple[Dataset, Dataset | None, str]:
    """A CSV (relative to `folder`, data_dir or the working directory), else the layout of
    `folder`."""
    csv_flag, image_flag = FLAGS[role]
    root = Path(folder) if folder else None
    if csv_name:
        bases = [Path(base) for base in dict.fromkeys([folder, *(args.data_dir or [])]) if base]
        layout = _existing_file(csv_name, [*bases, Path.cwd()], csv_flag)
    else:
        layout = _folder_layout(root, args, role)
    if not isinstance(layout, Path):
        return layout  # a saved dataset or grade sub-folders
    csv_path = layout
    image_dir = find_image_dir(
        getattr(args, image_flag), root, csv_path, IMAGE_DIRS[role], image_flag
    )
    return from_csv(csv_path, image_dir, args), None, str(csv_path)


def _existing_file(name: str, bases: list[Path], flag: str) -> Path:
    """`name` in the first of `bases` that holds it (an absolute `name` is itself)."""
    tried = list(dict.fromkeys(base / name for base in bases))
    for path in tried:
        if path.is_file():
            return path
    raise DataError(
        f"CSV file {name} not found; looked for:\n{listing([str(p) for p in tried])}\n"
        f"Pass {flag}=<the path of the label CSV>."
    )


def _folder_layout(
    root: Path, args: DataArguments, role: str
) -> Path | tuple[Dataset, Dataset | None, str]:
    """The label CSV of `root`, or the data of a saved dataset or of grade sub-folders."""
    if not root.is_dir():
        raise DataError(f"{root} is not a folder: pass the folder that holds the data.")
    if (root / "dataset_dict.json").is_file() or (root / "state.json").is_file():
        return (*from_saved(datasets.load_from_disk(str(root)), str(root), args), str(root))
    csvs = sorted(root.glob("*.csv"))
    named = [root / name for name in CSV_NAMES[role] if (root / name).is_file()]
    if named or len(csvs) == 1:
        return (named or csvs)[0]
    if csvs:
        raise DataError(
            f"{root} holds several CSV files ({', '.join(p.name for p in csvs)}) and none is named "
            f"{' or '.join(CSV_NAMES[role])}: pass {FLAGS[role][0]}=<the label CSV>."
        )
    subdirs = [p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if any(re.fullmatch(r"\d+", name) for name in subdirs):
        return from_grade_folders(root, subdirs, args), None, str(root)
    raise DataError(
        f"{root}: no data layout recognised (found {', '.join(sorted(subdirs)) or 'no sub-folders'}). "
        "Expected a label CSV with an image folder, grade sub-folders 0/ to 4/, or a dataset "
        "saved with save_to_disk."
    )


def _from_hub(name: str, args: DataArguments) -> tuple[Dataset, Dataset | None, str]:
    where = f"Hub dataset {name!r}"
    try:
        loaded = datasets.load_dataset(name)
    except (OSError, ValueError) as err:
        raise DataError(
            f"Could not load the {where}: the Hugging Face Hub could not be reached or has no such "
            f"dataset ({type(err).__name__}: {err}). Download the data and pass data_dir=<its folder>."
        ) from err
    return (*from_saved(loaded, where, args), where)
