"""Patients, not photographs: who each photograph belongs to, for every layout, and splits that
never put one patient on both sides (the holdout split and the cv folds), a validation set that
shares patients refused, and APTOS-shaped data split exactly as it was per photograph."""

import hashlib
import logging

import datasets
import numpy as np
import pytest
from datasets import Dataset
from PIL import Image
from sklearn.model_selection import StratifiedKFold

from dr_hf.cli import main as cli_main
from dr_hf.config.arguments import DataArguments
from dr_hf.data.loading import load_dr_dataset, load_dr_images, source_counts
from dr_hf.data.splits import cv_folds, fold_indices, stratified_split
from dr_hf.errors import DataError
from dr_hf.grades import NUM_GRADES

SEEDS = range(20)
# Worse-eye grades of the 40 patients of `eyepacs` (EyePACS is skewed toward 0 as well).
PATIENT_GRADES = [0] * 16 + [1] * 6 + [2] * 8 + [3] * 4 + [4] * 6


def write_photo(path, seed: int, size: int = 32):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)


def eyepacs(root, grades=PATIENT_GRADES, first: int = 0, skip=(), name="{p}_{eye}"):
    """EyePACS layout: `trainLabels.csv` (image, level) and `train/{patient}_left.jpeg` and
    `_right.jpeg`; the left eye has the patient's grade, the right one the same or one below.
    `skip` names photographs not written (a patient with one eye)."""
    rng = np.random.default_rng(len(grades) + first)
    rows = []
    for number, grade in enumerate(grades, start=first):
        right = max(grade - int(rng.random() < 0.3), 0)
        for eye, eye_grade in (("left", grade), ("right", right)):
            image = name.format(p=number, eye=eye)
            if image in skip:
                continue
            seed = int(hashlib.sha256(f"{root.name}/{image}".encode()).hexdigest()[:8], 16)
            write_photo(root / "train" / f"{image}.jpeg", seed)
            rows.append(f"{image},{eye_grade}")
    (root / "trainLabels.csv").write_text("image,level\n" + "\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def eyepacs_dir(tmp_path_factory):
    return eyepacs(tmp_path_factory.mktemp("eyepacs") / "eyepacs")


def patients_of(split) -> set[str]:
    return set(split["patient_id"])


def worse_eye(ds) -> dict[str, int]:
    worst: dict[str, int] = {}
    for patient, grade in zip(ds["patient_id"], ds["label"]):
        worst[patient] = max(grade, worst.get(patient, -1))
    return worst


# ---- Who each photograph belongs to ----------------------------------------------------------


def test_eyepacs_names_give_patients_and_eyes_on_every_split(eyepacs_dir, caplog):
    with caplog.at_level(logging.INFO, logger="dr_hf.data"):
        dd = load_dr_dataset(DataArguments(data_dir=str(eyepacs_dir)))
    for split in dd.values():
        assert split.column_names == ["image", "label", "image_id", "patient_id", "eye"]
        for image_id, patient, eye in zip(split["image_id"], split["patient_id"], split["eye"]):
            assert image_id == f"{patient}_{eye}"
    assert "read from the image names" in caplog.text
    assert "80 photographs of 40 patients" in caplog.text
    assert f"of {len(patients_of(dd['validation']))} patients" in caplog.text  # per split


def test_a_source_without_patient_information_says_so_once(tmp_path, caplog):
    root = tmp_path / "aptos"
    rows = []
    for index in range(20):
        write_photo(root / "train_images" / f"id{index:02d}.png", index)
        rows.append(f"id{index:02d},{index % 5}")
    (root / "train.csv").write_text("id_code,diagnosis\n" + "\n".join(rows) + "\n")
    with caplog.at_level(logging.INFO, logger="dr_hf.data"):
        dd = load_dr_dataset(DataArguments(data_dir=str(root)))
    assert caplog.text.count("each photograph is its own patient") == 1
    for split in dd.values():
        assert split["patient_id"] == split["image_id"] and set(split["eye"]) == {"unknown"}


def test_upper_case_and_dash_names_are_parsed_and_a_doubled_eye_is_refused(tmp_path):
    root = eyepacs(tmp_path / "upper", grades=[0, 1, 2, 3, 4] * 2, name="{p}-{eye}")
    csv = root / "trainLabels.csv"
    csv.write_text(csv.read_text().replace("left", "LEFT").replace("right", "Right"))
    images = load_dr_images(DataArguments(data_dir=str(root)))
    assert images["patient_id"][:2] == ["0", "0"] and images["eye"][:2] == ["left", "right"]
    # 3_LEFT beside 3-LEFT: two photographs of one eye of patient 3.
    write_photo(root / "train" / "3_left.jpeg", 99)
    csv.write_text(csv.read_text() + "3_left,2\n")
    with pytest.raises(
        DataError, match=r"(?s)patient '3', 2 photographs of the left eye: line \d+, line 22"
    ):
        load_dr_images(DataArguments(data_dir=str(root)))


def clinic_csv(root, header, rows):
    """A clinic's export: photographs named freely, patient and eye in columns."""
    for row in rows:
        write_photo(root / "images" / f"{row[0]}.png", int(row[0][3:]))
    lines = [",".join(header)] + [",".join(str(cell) for cell in row) for row in rows]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


CLINIC_ROWS = [
    (f"img{2 * p + side:02d}", f"P{p}", ("OD", "l")[side], (p + side) % 5)
    for p in range(10)
    for side in (0, 1)
]


def test_csv_patient_and_eye_columns_are_auto_detected_or_flagged(tmp_path):
    root = clinic_csv(
        tmp_path / "auto", ["image_id", "Patient_ID", "Laterality", "grade"], CLINIC_ROWS
    )
    images = load_dr_images(DataArguments(data_dir=str(root)))
    assert images["patient_id"] == [p for _, p, _, _ in CLINIC_ROWS]
    assert images["eye"] == ["right", "left"] * 10
    named = clinic_csv(tmp_path / "named", ["image_id", "MRN", "Which eye", "grade"], CLINIC_ROWS)
    args = DataArguments(data_dir=str(named), patient_column="mrn", eye_column="Which eye")
    flagged = load_dr_images(args)
    assert flagged["patient_id"] == images["patient_id"] and flagged["eye"] == images["eye"]
    # Not given, not found: each photograph its own patient.
    unnamed = load_dr_images(DataArguments(data_dir=str(named)))
    assert unnamed["patient_id"] == unnamed["image_id"]
    # A given column that is absent names the columns found.
    args = DataArguments(data_dir=str(named), patient_column="subject")
    with pytest.raises(
        DataError, match=r"no patient column.*'subject'.*'MRN', 'Which eye'.*patient_column="
    ):
        load_dr_images(args)


def test_csv_contradictions_name_the_rows(tmp_path):
    rows = list(CLINIC_ROWS)
    rows[3] = ("img03", "P1", "OD", 1)  # P1's second photograph is a right eye again
    root = clinic_csv(tmp_path / "twice", ["image_id", "patient", "eye", "grade"], rows)
    with pytest.raises(
        DataError, match=r"(?s)patient 'P1', 2 photographs of the right eye: line 4, line 5"
    ):
        load_dr_images(DataArguments(data_dir=str(root)))
    rows = list(CLINIC_ROWS)
    rows[6] = ("img06", "P3", "middle", 1)
    root = clinic_csv(tmp_path / "neither", ["image_id", "patient", "eye", "grade"], rows)
    with pytest.raises(
        DataError, match=r"(?s)1 row\(s\) of column 'eye' name no eye:\n  line 8: 'middle'"
    ):
        load_dr_images(DataArguments(data_dir=str(root)))
    rows = list(CLINIC_ROWS)
    rows[0] = ("img00", "", "OD", 0)
    root = clinic_csv(tmp_path / "empty", ["image_id", "patient", "eye", "grade"], rows)
    with pytest.raises(DataError, match=r"empty patient id on line 2"):
        load_dr_images(DataArguments(data_dir=str(root)))


def test_grade_folders_and_saved_datasets_carry_patients(eyepacs_dir, tmp_path):
    images = load_dr_images(DataArguments(data_dir=str(eyepacs_dir)))
    folders = tmp_path / "folders"
    for path, grade in zip(
        images.cast_column("image", datasets.Image(decode=False))["image"], images["label"]
    ):
        (folders / str(grade)).mkdir(parents=True, exist_ok=True)
        (folders / str(grade) / path["path"].rsplit("/", 1)[1]).symlink_to(path["path"])
    from_folders = load_dr_images(DataArguments(data_dir=str(folders)))
    assert (
        from_folders["patient_id"] == images["patient_id"] and from_folders["eye"] == images["eye"]
    )
    with pytest.raises(DataError, match="grade folders have no columns"):
        load_dr_images(DataArguments(data_dir=str(folders), patient_column="patient"))
    # A saved dataset keeps its columns; without them they are found from the ids.
    images.save_to_disk(str(tmp_path / "saved"))
    saved = load_dr_images(DataArguments(data_dir=str(tmp_path / "saved")))
    assert saved["patient_id"] == images["patient_id"] and saved["eye"] == images["eye"]
    images.remove_columns(["patient_id", "eye"]).save_to_disk(str(tmp_path / "bare"))
    bare = load_dr_images(DataArguments(data_dir=str(tmp_path / "bare")))
    assert bare["patient_id"] == images["patient_id"] and bare["eye"] == images["eye"]
    other = images.rename_column("patient_id", "subject").remove_columns(["eye"])
    other = other.add_column("side", ["R" if e == "left" else "L" for e in images["eye"]])
    other.save_to_disk(str(tmp_path / "other"))
    flagged = load_dr_images(
        DataArguments(data_dir=str(tmp_path / "other"), patient_column="subject")
    )
    assert flagged["patient_id"] == images["patient_id"]
    assert flagged["eye"] == ["right" if e == "left" else "left" for e in images["eye"]]


@pytest.mark.parametrize("format", ["png", "raw"])
def test_prepare_carries_the_patient_columns(eyepacs_dir, tmp_path, format):
    out = tmp_path / f"prepared_{format}"
    argv = ["prepare", "--data_dir", str(eyepacs_dir), "--output", str(out), "--size", "32"]
    assert cli_main(argv + ["--format", format, "--image_size", "32"]) == 0
    original = load_dr_dataset(DataArguments(data_dir=str(eyepacs_dir)))
    stored = datasets.load_from_disk(str(out))
    again = load_dr_dataset(DataArguments(data_dir=str(out), image_size=32))
    for name in ("train", "validation"):
        for split in (stored[name], again[name]):
            assert split["patient_id"] == original[name]["patient_id"]
            assert split["eye"] == original[name]["eye"]


# ---- Splits by patient ---------------------------------------------------------------------


def test_no_patient_on_both_sides_of_the_validation_split_for_any_seed(eyepacs_dir):
    images = load_dr_images(DataArguments(data_dir=str(eyepacs_dir)))
    worst = worse_eye(images)
    per_grade = np.bincount(list(worst.values()), minlength=NUM_GRADES)
    for seed in SEEDS:
        train, validation = stratified_split(images, 0.2, seed)
        assert not patients_of(train) & patients_of(validation), seed
        assert len(train) + len(validation) == 80 and len(validation) % 2 == 0
        held = [worst[p] for p in patients_of(validation)]
        for grade in range(NUM_GRADES):  # stratified by the worse eye, still
            if per_grade[grade] >= 2:
                assert 0 < held.count(grade) < per_grade[grade], (seed, grade)
        assert len(patients_of(validation)) == sum(
            min(max(round(n * 0.2), 1), n - 1) for n in per_grade if n >= 2
        )
    # The seed decides, not the row order.
    shuffled = images.select(np.random.default_rng(0).permutation(len(images)))
    assert sorted(stratified_split(shuffled, 0.2, 3)[1]["image_id"]) == sorted(
        stratified_split(images, 0.2, 3)[1]["image_id"]
    )
    dd = load_dr_dataset(DataArguments(data_dir=str(eyepacs_dir), split_seed=3))
    assert sorted(dd["validation"]["image_id"]) == sorted(
        stratified_split(images, 0.2, 3)[1]["image_id"]
    )


@pytest.mark.parametrize("folds", [3, 5])
def test_no_patient_in_two_folds_for_any_seed(eyepacs_dir, folds):
    images = load_dr_images(DataArguments(data_dir=str(eyepacs_dir)))
    patients = np.asarray(images["patient_id"])
    worst = worse_eye(images)
    for seed in SEEDS:
        fold_rows = cv_folds(images, folds, seed)
        joined = np.concatenate(fold_rows)
        assert sorted(joined.tolist()) == list(range(len(images)))
        fold_of = {}
        for fold, rows in enumerate(fold_rows):
            for patient in patients[rows].tolist():
                assert fold_of.setdefault(patient, fold) == fold, (seed, patient)
        for grade in range(NUM_GRADES):  # stratified by the worse eye
            per_fold = [
                sum(worst[p] == grade for p in set(patients[r].tolist())) for r in fold_rows
            ]
            assert max(per_fold) - min(per_fold) <= 1, (seed, grade, per_fold)
            assert min(per_fold) >= 1 or sum(per_fold) < folds, (seed, grade, per_fold)
    shuffled_rows = np.random.default_rng(1).permutation(len(images))
    shuffled = images.select(shuffled_rows)
    as_ids = lambda ds, fs: sorted(sorted(ds["image_id"][i] for i in f) for f in fs)  # noqa: E731
    assert as_ids(shuffled, cv_folds(shuffled, folds, 7)) == as_ids(
        images, cv_folds(images, folds, 7)
    )


def test_several_sources_namespace_patients_and_split_them_whole(tmp_path):
    first = eyepacs(tmp_path / "clinic_a", grades=PATIENT_GRADES[::2])
    second = eyepacs(tmp_path / "clinic_b", grades=PATIENT_GRADES[1::2])
    dd = load_dr_dataset(DataArguments(data_dir=[str(first), str(second)]))
    for split in dd.values():
        rows = zip(split["patient_id"], split["eye"], split["image_id"], split["source"])
        for patient, eye, image_id, source in rows:  # the ids collide: both are prefixed
            assert patient.startswith(f"{source}/") and image_id == f"{patient}_{eye}"
    assert not patients_of(dd["train"]) & patients_of(dd["validation"])
    counts = source_counts(dd)["patients"]
    assert sum(counts["train"].values()) + sum(counts["validation"].values()) == 40
    assert counts["validation"] == {
        source: len({p for p in dd["validation"]["patient_id"] if p.startswith(source)})
        for source in ("clinic_a", "clinic_b")
    }
    images = load_dr_images(DataArguments(data_dir=[str(first), str(second)]))
    for rows in cv_folds(images, 3, 0):  # patient 0 of one clinic is not patient 0 of the other
        for patient in set(np.asarray(images["patient_id"])[rows].tolist()):
            assert (np.asarray(images["patient_id"])[rows] == patient).sum() == 2


# ---- A given validation set that shares patients ----------------------------------------------


def test_a_validation_set_sharing_patients_is_refused_by_name_or_allowed(tmp_path, caplog):
    train = eyepacs(tmp_path / "train", grades=PATIENT_GRADES[:20], skip={"18_right", "19_right"})
    val = eyepacs(
        tmp_path / "val", grades=PATIENT_GRADES[18:26], first=18, skip={"18_left", "19_left"}
    )
    args = DataArguments(data_dir=str(train), validation_dir=str(val))
    with pytest.raises(DataError) as err:
        load_dr_dataset(args)
    message = str(err.value)
    assert "2 patient(s) of the validation set also have photographs in the training set" in message
    assert "\n  18\n  19\n" in message and "allow_shared_patients=True" in message
    args = DataArguments(data_dir=str(train), validation_dir=str(val), allow_shared_patients=True)
    with caplog.at_level(logging.WARNING, logger="dr_hf.data"):
        dd = load_dr_dataset(args)
    assert "2 patient(s) of the validation set" in caplog.text
    assert patients_of(dd["train"]) & patients_of(dd["validation"]) == {"18", "19"}
    # Through a validation CSV as well.
    args = DataArguments(
        data_dir=str(train),
        validation_csv=str(val / "trainLabels.csv"),
        validation_image_dir=str(val / "train"),
    )
    with pytest.raises(DataError, match="2 patient"):
        load_dr_dataset(args)


def test_ids_without_patient_information_do_not_make_shared_patients(tmp_path):
    """IDRiD names its training and test photographs alike (IDRiD_001 in both sets): these are
    different photographs, and nothing says of one patient, also once saved with their columns."""

    def idrid(root, offset):
        rows = []
        for index in range(10):
            write_photo(root / "images" / f"IDRiD_{index + 1:03d}.jpg", offset + index)
            rows.append(f"IDRiD_{index + 1:03d},{index % 5}")
        (root / "labels.csv").write_text("Image name,Retinopathy grade\n" + "\n".join(rows) + "\n")
        return root

    train, test = idrid(tmp_path / "train", 0), idrid(tmp_path / "test", 100)
    dd = load_dr_dataset(DataArguments(data_dir=str(train), validation_dir=str(test)))
    assert sorted(dd["validation"]["patient_id"]) == sorted(dd["train"]["patient_id"])
    load_dr_images(DataArguments(data_dir=str(test))).save_to_disk(str(tmp_path / "saved"))
    dd = load_dr_dataset(DataArguments(data_dir=str(train), validation_dir=str(tmp_path / "saved")))
    assert len(dd["validation"]) == 10


# ---- One photograph per patient: the per-photograph splits, exactly --------------------------


def old_holdout(labels, ids, sources, share, seed):
    """The held-out ids of the per-photograph split as it was (grade and source strata)."""
    held = []
    for source in sorted(set(sources.tolist())):
        for grade in range(NUM_GRADES):
            rows = np.flatnonzero((labels == grade) & (sources == source))
            if len(rows) < 2:
                continue
            rows = rows[np.argsort(ids[rows], kind="stable")]
            n = min(max(round(len(rows) * share), 1), len(rows) - 1)
            digest = hashlib.sha256(source.encode()).digest()[:4]
            key = [seed, grade, *([int.from_bytes(digest, "big")] if source else [])]
            held.extend(np.random.default_rng(key).permutation(rows)[:n].tolist())
    return sorted(ids[held].tolist())


def old_folds(labels, ids, sources, folds, seed):
    """The per-photograph cv folds as they were, as sorted id lists."""
    strata = np.asarray(labels)
    if len(set(sources.tolist())) > 1:
        strata = strata + 10 * np.unique(sources, return_inverse=True)[1]
    order = np.argsort(ids, kind="stable")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    split = splitter.split(np.zeros(len(ids)), strata[order])
    return [sorted(ids[order[val]].tolist()) for _, val in split]


def aptos_shaped(n: int = 366, sources: tuple = ("",)) -> Dataset:
    """Rows shaped as APTOS 2019 (its grade shares, shuffled ids), each photograph its own
    patient; with several sources, some ids prefixed by their source as collisions are."""
    rng = np.random.default_rng(n)
    labels = rng.choice(NUM_GRADES, size=n, p=[0.493, 0.101, 0.273, 0.053, 0.080])
    names = [f"{h:012x}" for h in rng.integers(0, 2**48, size=n)]
    source = [sources[i % len(sources)] for i in range(n)]
    ids = [f"{s}/{i}" if s and k % 3 == 0 else i for k, (s, i) in enumerate(zip(source, names))]
    rows = {"label": labels.tolist(), "image_id": ids}
    if len(sources) > 1:
        rows["patient_id"] = [
            i if i.startswith(f"{s}/") else f"{s}/{i}" for s, i in zip(source, ids)
        ]
        rows["source"] = source
    else:
        rows["patient_id"] = ids
    return Dataset.from_dict(rows)


@pytest.mark.parametrize("sources", [("",), ("aptos", "idrid")], ids=["one source", "two"])
def test_one_photograph_per_patient_splits_exactly_as_before(sources):
    ds = aptos_shaped(sources=sources)
    labels, ids = np.asarray(ds["label"]), np.asarray(ds["image_id"])
    source = np.asarray(ds["source"] if "source" in ds.column_names else [""] * len(ds))
    for seed in SEEDS:
        _, validation = stratified_split(ds, 0.2, seed)
        assert sorted(validation["image_id"]) == old_holdout(labels, ids, source, 0.2, seed)
    for seed in SEEDS[:5]:
        folds = cv_folds(ds, 5, seed)
        assert sorted(sorted(ids[f].tolist()) for f in folds) == sorted(
            old_folds(labels, ids, source, 5, seed)
        )
    # The comparison can fail: a patient of two photographs moves the split.
    paired = ds.map(
        lambda row, i: {"patient_id": "pair" if i < 2 else row["patient_id"]}, with_indices=True
    )
    moved = [
        old_holdout(labels, ids, source, 0.2, s)
        != sorted(stratified_split(paired, 0.2, s)[1]["image_id"])
        for s in SEEDS
    ]
    assert any(moved)


def test_fold_indices_without_groups_are_the_stratified_k_fold():
    rng = np.random.default_rng(0)
    labels = rng.choice(5, size=103, p=[0.5, 0.1, 0.2, 0.1, 0.1])
    ids = np.asarray([f"img{i:03d}" for i in rng.permutation(103)])
    grouped = fold_indices(labels, ids, 5, 3, groups=ids)
    assert [f.tolist() for f in grouped] == [f.tolist() for f in fold_indices(labels, ids, 5, 3)]
    with pytest.raises(DataError, match="2 patients cannot fill 3 folds"):
        fold_indices([0, 0, 1, 1], ["a", "b", "c", "d"], 3, 0, groups=["p", "p", "q", "q"])
