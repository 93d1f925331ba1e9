"""Every split dr_hf makes of a data set: the held-out validation split and the cross-validation
folds. Both are splits of patients, not of photographs.

All of a patient's photographs (`patient_id`; both eyes of an EyePACS patient) go to one side, so
no validation figure is scored on the fellow eye of a training photograph. Patients are
stratified by their worse eye's grade (`dr_hf.data.patients.worse_eye_grades`) and, when several
sources are joined, by source. Both splits depend on the seed and the ids alone, never on the
row order.

When every patient has one photograph (APTOS, IDRiD: each photograph its own patient) both are
exactly the per-photograph splits: the held-out images and the folds are those of a split of
the photographs themselves, so figures measured on such data do not move.
"""

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
from datasets import Dataset
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from dr_hf.errors import DataError
from dr_hf.grades import NUM_GRADES

logger = logging.getLogger(__name__)

__all__ = ["cv_folds", "fold_indices", "patient_count", "stratified_split"]


@dataclass(frozen=True)
class _Patients:
    """The patients of a data set, in the order of their first image id."""

    rows: list[list[int]]  # the rows of each patient
    grades: np.ndarray  # the worse eye's grade of each
    sources: np.ndarray  # the source of each ("" for a single source)


def _patients(ds: Dataset) -> _Patients:
    labels = np.asarray(ds["label"], dtype=int)
    ids = np.asarray(ds["image_id"], dtype=str)
    columns = ds.column_names
    patients = np.asarray(ds["patient_id"], dtype=str) if "patient_id" in columns else ids
    sources = np.asarray(ds["source"] if "source" in columns else [""] * len(ds), dtype=str)
    index: dict[str, int] = {}
    rows: list[list[int]] = []
    grades: list[int] = []
    patient_sources: list[str] = []
    for row in np.argsort(ids, kind="stable").tolist():
        at = index.setdefault(patients[row], len(rows))
        if at == len(rows):
            rows.append([])
            grades.append(int(labels[row]))
            patient_sources.append(str(sources[row]))
        rows[at].append(row)
        grades[at] = max(grades[at], int(labels[row]))
    return _Patients(rows, np.asarray(grades, dtype=int), np.asarray(patient_sources, dtype=str))


def patient_count(ds: Dataset) -> int:
    """How many patients `ds` holds (its rows, when it has no `patient_id` column)."""
    if "patient_id" not in ds.column_names:
        return len(ds)
    return len(set(ds["patient_id"]))


def stratified_split(
    ds: Dataset, share: float, seed: int, where: str = "dataset"
) -> tuple[Dataset, Dataset]:
    """Hold out `share` of the patients of each worse-eye grade (of each grade and source, when
    `ds` has a `source` column), at least one of every such group of two patients or more; a
    patient's photographs all go where the patient goes.

    `train_test_split(stratify_by_column=...)` rounds small grades to zero held-out images and
    rejects grades of one image; this split keeps them. Each group's patients, in the order of
    their first image id, are shuffled with the group's own generator, so a seed always holds out
    the same patients whatever the row order (and, for a source, whatever the other sources).
    Without a `patient_id` column each photograph is its own patient.
    """
    patients = _patients(ds)
    held_out: list[int] = []
    for source in sorted(set(patients.sources.tolist())):
        for grade in range(NUM_GRADES):
            members = np.flatnonzero((patients.grades == grade) & (patients.sources == source))
            if len(members) < 2:
                continue
            n_held_out = min(max(round(len(members) * share), 1), len(members) - 1)
            key = [seed, grade, *([_source_key(source)] if source else [])]
            drawn = np.random.default_rng(key).permutation(members)[:n_held_out]
            held_out.extend(row for patient in drawn.tolist() for row in patients.rows[patient])
    if not held_out:
        raise DataError(
            f"{where}: no grade has two patients (for photographs without patient information: "
            "two images), so no validation set can be held out; add images or pass "
            "validation_dir / validation_csv."
        )
    held = set(held_out)
    train_rows = [row for row in range(len(ds)) if row not in held]
    return ds.select(train_rows), ds.select(sorted(held))


def _source_key(source: str) -> int:
    return int.from_bytes(hashlib.sha256(source.encode()).digest()[:4], "big")


def fold_indices(labels, ids, folds: int, seed: int, groups=None) -> list[np.ndarray]:
    """Validation row indices of each fold: disjoint, covering every row, stratified by `labels`
    (a grade, or a grade-and-source stratum, per row).

    With `groups` (the patient of each row) a group's rows share one fold, and each group is
    stratified by its highest label, its worse eye's (scikit-learn's `StratifiedGroupKFold`,
    shuffled with `seed`). When every group has one row, or without `groups`, the folds are
    `StratifiedKFold`'s (shuffled with `seed`) over the rows sorted by id.
    """
    order = np.argsort(np.asarray(ids), kind="stable")
    labels = np.asarray(labels)[order]
    groups = None if groups is None else np.asarray(groups, dtype=str)[order]
    if groups is not None and len(set(groups.tolist())) == len(groups):
        groups = None  # one photograph per patient: the per-photograph folds, exactly
    if groups is None:
        counts = np.bincount(labels)
        if counts[counts > 0].min() < folds:
            logger.warning("A grade has fewer images (%s) than folds: some folds lack it.", counts)
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        return [np.sort(order[val]) for _, val in splitter.split(np.zeros(len(labels)), labels)]
    worse: dict[str, int] = {}
    for group, label in zip(groups.tolist(), labels.tolist()):
        worse[group] = max(label, worse.get(group, label))
    strata = np.asarray([worse[group] for group in groups.tolist()])
    if len(worse) < folds:
        raise DataError(
            f"{len(worse)} patients cannot fill {folds} folds: pass fewer folds or add patients."
        )
    counts = np.bincount(list(worse.values()))
    if counts[counts > 0].min() < folds:
        logger.warning(
            "A grade has fewer patients (%s, by the worse eye) than folds: some folds lack it.",
            counts,
        )
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    split = splitter.split(np.zeros(len(labels)), strata, groups)
    return [np.sort(order[val]) for _, val in split]


def cv_folds(ds: Dataset, folds: int, seed: int) -> list[np.ndarray]:
    """`fold_indices` of a data set: stratified by grade, and by source when several sources are
    joined; grouped by `patient_id` (each photograph its own patient without that column)."""
    strata = np.asarray(ds["label"], dtype=int)
    if "source" in ds.column_names:
        _, source_index = np.unique(np.asarray(ds["source"]), return_inverse=True)
        strata = strata + 10 * source_index
    groups = ds["patient_id"] if "patient_id" in ds.column_names else None
    return fold_indices(strata, ds["image_id"], folds, seed, groups=groups)
