"""Several sources in one run: each is read and checked alone, then they are joined.

The joined splits gain a `source` column (the source's folder name). Image ids that two sources
share are prefixed with `<source>/`, so every row keeps its own id; patient ids are always
prefixed (`<source>/<patient>`: patient 10 of one clinic is not patient 10 of another); a
photograph found in two sources (same file content) is reported. Sources must have been prepared
alike (`dr-hf prepare` with the same steps, or all raw) for one transform to suit them all.
"""

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import datasets
from datasets import Dataset, Image, Value

from dr_hf.data.patients import namespaced
from dr_hf.data.prepare import read_prepare_info
from dr_hf.errors import DataError, listing

logger = logging.getLogger(__name__)

SOURCE_FEATURE = Value("string")
PREPARED_STEPS = ("crop", "ben_graham")
Loaded = tuple[Dataset, Dataset | None, str]


def source_names(folders: list[str]) -> list[str]:
    """Each folder's name; the shortest distinct path tail when two folders share a name."""
    parts = [Path(folder).resolve().parts for folder in folders]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(folder) for folder in folders]


def source_label(folders: list[str] | str | None) -> str | None:
    """The folders as one string: the folder itself, or several joined with ` + `."""
    if folders is None or isinstance(folders, str):
        return folders
    return " + ".join(str(folder) for folder in folders)


def load_sources(folders: list[str], role: str, load_one: Callable[[str], Loaded]) -> Loaded:
    """Read each folder with `load_one` (errors name the source), then join them."""
    names = source_names(folders)
    parts = []
    for number, (folder, name) in enumerate(zip(folders, names), start=1):
        try:
            train, validation, _ = load_one(folder)
        except DataError as err:
            raise DataError(
                f"{role} source {number} of {len(folders)} ({name}, {folder}): {err}"
            ) from err
        parts.append((name, train, validation))
    with_validation = [name for name, _, validation in parts if validation is not None]
    if with_validation and len(with_validation) < len(parts):
        without = [name for name, _, validation in parts if validation is None]
        raise DataError(
            f"The {role} sources {', '.join(with_validation)} hold a validation split and "
            f"{', '.join(without)} do not: give every source a validation split or none, or pass "
            "validation_dir."
        )
    parts = _distinct_ids(parts)
    train = datasets.concatenate_datasets([t for _, t, _ in parts])
    validation = (
        datasets.concatenate_datasets([v for _, _, v in parts]) if with_validation else None
    )
    where = " + ".join(folders)
    everything = train if validation is None else datasets.concatenate_datasets([train, validation])
    shared = shared_photographs(everything)
    if shared:
        logger.warning(
            "%s: %d photograph(s) appear in several sources (same file content):\n%s",
            where,
            len(shared),
            listing([", ".join(item["images"]) for item in shared]),
        )
    return train, validation, where


def _distinct_ids(parts: list) -> list:
    """Add the `source` column; prefix `<source>/` to the image ids found in two sources or
    more, and to every patient id."""
    owners: dict[str, set[str]] = {}
    for name, train, validation in parts:
        for split in (train, validation):
            for image_id in split["image_id"] if split is not None else []:
                owners.setdefault(image_id, set()).add(name)
    shared = {image_id for image_id, names in owners.items() if len(names) > 1}
    if shared:
        logger.info(
            "%d image id(s) appear in several sources; they are prefixed with the source name",
            len(shared),
        )

    def tag(split: Dataset | None, name: str) -> Dataset | None:
        if split is None:
            return None
        columns = split.column_names
        ids = [f"{name}/{i}" if i in shared else i for i in split["image_id"]]
        patients = namespaced(split["patient_id"], name)
        features = split.features
        split = split.remove_columns(["image_id", "patient_id"])
        split = split.add_column("image_id", ids, feature=features["image_id"])
        split = split.add_column("patient_id", patients, feature=features["patient_id"])
        split = split.select_columns(columns)  # the columns' order, as one source has them
        return split.add_column("source", [name] * len(split), feature=SOURCE_FEATURE)

    return [(name, tag(train, name), tag(validation, name)) for name, train, validation in parts]


def shared_photographs(ds: Dataset) -> list[dict]:
    """Photographs (same SHA-256 of the file bytes) held by two sources or more, each as
    {"sha256", "images": ["<source>: <image_id>", ...]}. Only files of equal size are hashed."""
    if "source" not in ds.column_names or not len(ds):
        return []
    if "image" not in ds.column_names:
        return _shared_pixels(ds)
    raw = ds.cast_column("image", Image(decode=False))
    by_size: dict[int, list[int]] = {}
    row = 0
    for batch in raw.select_columns(["image"]).iter(batch_size=256):
        for value in batch["image"]:
            size = _size(value)
            if size is not None:
                by_size.setdefault(size, []).append(row)
            row += 1
    sources, ids = ds["source"], ds["image_id"]
    by_hash: dict[str, list[int]] = {}
    for rows in by_size.values():
        if len({sources[r] for r in rows}) < 2:
            continue
        for r in rows:
            by_hash.setdefault(_sha256(raw[r]["image"]), []).append(r)
    return [
        {"sha256": digest, "images": [f"{sources[r]}: {ids[r]}" for r in rows]}
        for digest, rows in sorted(by_hash.items())
        if len({sources[r] for r in rows}) > 1
    ]


def _shared_pixels(ds: Dataset) -> list[dict]:
    """`shared_photographs` for raw uint8 caches: the SHA-256 of each image's bytes."""
    by_hash: dict[str, list[int]] = {}
    for row, data in enumerate(ds.select_columns(["pixels"])["pixels"]):
        by_hash.setdefault(hashlib.sha256(data).hexdigest(), []).append(row)
    sources, ids = ds["source"], ds["image_id"]
    return [
        {"sha256": digest, "images": [f"{sources[r]}: {ids[r]}" for r in rows]}
        for digest, rows in sorted(by_hash.items())
        if len({sources[r] for r in rows}) > 1
    ]


def _size(value: dict) -> int | None:
    if value.get("bytes"):
        return len(value["bytes"])
    path = value.get("path")
    return os.stat(path).st_size if path and os.path.isfile(path) else None


def _sha256(value: dict) -> str:
    content = value["bytes"] if value.get("bytes") else Path(value["path"]).read_bytes()
    return hashlib.sha256(content).hexdigest()


def common_prepare_info(folders: list[str] | str | None, what: str = "data") -> dict | None:
    """The `dr-hf prepare` record shared by `folders` (None: raw images, or no folders), with the
    smallest prepared size; a ValueError naming the sources when they were prepared differently."""
    if not folders:
        return None
    folders = [folders] if isinstance(folders, str) else list(folders)
    infos = [read_prepare_info(folder) for folder in folders]
    described = [describe_prepared(info) for info in infos]
    if any(d != described[0] for d in described):
        states = [f"{folder}: {d}" for folder, d in zip(folders, described)]
        raise ValueError(
            f"The {what} sources were prepared differently:\n{listing(states)}\nPrepare every "
            "source with the same `dr-hf prepare` settings, or use the raw images of all of them."
        )
    if infos[0] is None:
        return None
    sizes = [info["size"] for info in infos if "size" in info]
    return {**infos[0], **({"size": min(sizes)} if sizes else {})}


def describe_prepared(info: dict | None) -> str | dict:
    """What matters of a `dr-hf prepare` record for the transform: its steps, or "raw images"."""
    if info is None:
        return "raw images"
    raw = {"format": "uint8 arrays"} if info.get("format") == "raw" else {}
    return {step: info[step] for step in PREPARED_STEPS} | raw
