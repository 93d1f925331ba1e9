"""Loading every supported layout, the train/validation split, and each bad input's message."""

import logging
import os
from pathlib import Path

import datasets
import huggingface_hub.constants
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Image, Value
from PIL import Image as PILImage

from dr_hf.config.arguments import DataArguments
from dr_hf.data.checks import image_problem, parse_grade
from dr_hf.data.loading import DataError, load_dr_dataset
from dr_hf.data.splits import stratified_split
from dr_hf.grades import GRADE_NAMES

COLOURS = [(200, 40, 30), (40, 200, 30), (30, 40, 200), (200, 200, 30), (30, 200, 200)]


def write_image(path, grade=0, mode="RGB", size=32):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = PILImage.new("RGB", (size, size), COLOURS[grade % len(COLOURS)])
    if mode == "P":
        image = image.quantize(colors=4)
    elif mode != "RGB":
        image = image.convert(mode)
    image.save(path)
    return path


def write_csv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(header)] + [",".join(str(cell) for cell in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def aptos(root, grades, ext=".png", with_extension=False, prefix="img"):
    """APTOS 2019 layout: train.csv (id_code, diagnosis) and train_images/<id_code>.png."""
    rows = []
    for index, grade in enumerate(grades):
        image_id = f"{prefix}{index:03d}"
        write_image(root / "train_images" / f"{image_id}{ext}", grade)
        rows.append((f"{image_id}{ext}" if with_extension else image_id, grade))
    write_csv(root / "train.csv", ["id_code", "diagnosis"], rows)
    return root


def balanced(per_grade=4):
    return [grade for grade in range(5) for _ in range(per_grade)]


def ids(split):
    return sorted(split["image_id"])


def labels_by_id(dd):
    return {i: g for split in dd.values() for i, g in zip(split["image_id"], split["label"])}


def check_contract(dd):
    assert set(dd) == {"train", "validation"}
    for split in dd.values():
        assert split.column_names == ["image", "label", "image_id", "patient_id", "eye"]
        assert split.features["image"] == Image(mode="RGB")
        assert split.features["label"] == ClassLabel(names=GRADE_NAMES)
        assert split.features["image_id"] == Value("string")
        assert split.features["patient_id"] == split.features["eye"] == Value("string")


def test_aptos_layout_stores_paths_and_decodes_rgb(tmp_path):
    dd = load_dr_dataset(DataArguments(data_dir=str(aptos(tmp_path, balanced()))))
    check_contract(dd)
    assert len(dd["train"]) + len(dd["validation"]) == 20
    stored = dd["train"].with_format("arrow")[:1]["image"][0].as_py()
    assert stored["bytes"] is None and stored["path"].endswith(".png")
    row = dd["train"][0]
    assert row["image"].mode == "RGB" and row["image"].size == (32, 32)
    expected = int(row["image_id"][3:])  # img000..img019 hold the grades of balanced()
    assert row["label"] == balanced()[expected]
    assert row["image"].getpixel((0, 0)) == COLOURS[row["label"]]


def test_eyepacs_layout(tmp_path):
    rows = []
    for index, grade in enumerate(balanced(2)):
        write_image(tmp_path / "train" / f"{index}_left.jpeg", grade)
        rows.append((f"{index}_left", grade))
    write_csv(tmp_path / "trainLabels.csv", ["image", "level"], rows)
    dd = load_dr_dataset(DataArguments(data_dir=str(tmp_path)))
    check_contract(dd)
    assert labels_by_id(dd) == {f"{i}_left": g for i, g in enumerate(balanced(2))}
    for split in dd.values():  # the names say whose eye each photograph is
        assert split["patient_id"] == [image_id.split("_")[0] for image_id in split["image_id"]]
        assert set(split["eye"]) == {"left"}


def test_idrid_csv_with_trailing_empty_columns_and_explicit_paths(tmp_path):
    csv_path = tmp_path / "labels" / "a. IDRiD_Disease Grading_Training Labels.csv"
    csv_path.parent.mkdir()
    lines = ["Image name,Retinopathy grade,Risk of macular edema ,,,"]
    for index, grade in enumerate(balanced(2)):
        write_image(tmp_path / "Training Set" / f"IDRiD_{index + 1:03d}.jpg", grade)
        lines.append(f"IDRiD_{index + 1:03d},{grade},0,,,")
    csv_path.write_text("\n".join(lines + [",,,,,", ""]))
    args = DataArguments(train_csv=str(csv_path), image_dir=str(tmp_path / "Training Set"))
    dd = load_dr_dataset(args)
    check_contract(dd)
    assert sorted(ids(dd["train"]) + ids(dd["validation"])) == [
        f"IDRiD_{i:03d}" for i in range(1, 11)
    ]


def test_ids_with_extension_and_extension_case_found_on_disk(tmp_path):
    names = [
        "a.PNG",
        "b.JPG",
        "c.tif",
        "d.bmp",
        "e.jpeg",
        "f.png",
        "g.png",
        "h.png",
        "i.png",
        "j.png",
    ]
    for index, name in enumerate(names):
        write_image(tmp_path / "images" / name, index % 5)
    rows = [("a.png", 0), ("b", 1), ("c.TIF", 2), ("d", 3), ("e.jpeg", 4)]
    rows += [(name.split(".")[0], index % 5) for index, name in enumerate(names) if index >= 5]
    write_csv(tmp_path / "labels.csv", ["image_id", "grade"], rows)
    dd = load_dr_dataset(DataArguments(data_dir=str(tmp_path)))
    assert sorted(ids(dd["train"]) + ids(dd["validation"])) == list("abcdefghij")
    every = datasets.concatenate_datasets([dd["train"], dd["validation"]])
    assert all(image.mode == "RGB" for image in every["image"])


def test_image_folder_is_listed_once(tmp_path, monkeypatch):
    """EyePACS holds 88k files: finding the folder must not list it in full a second time."""
    root = aptos(tmp_path, balanced(4))
    folder = root / "train_images"
    seen = []
    real_scandir = os.scandir

    class CountingScandir:
        def __init__(self, path):
            self.entries, self.path = real_scandir(path), Path(path)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.entries.close()

        def __iter__(self):
            return self

        def __next__(self):
            entry = next(self.entries)
            if self.path == folder:
                seen.append(entry.name)
            return entry

    monkeypatch.setattr(os, "scandir", CountingScandir)
    dd = load_dr_dataset(DataArguments(data_dir=str(root)))
    assert len(dd["train"]) + len(dd["validation"]) == 20
    assert 20 <= len(seen) <= 21  # one full listing, plus the first entry when looking for it


def test_column_overrides(tmp_path):
    rows = []
    for index, grade in enumerate(balanced(2)):
        write_image(tmp_path / "train_images" / f"x{index}.png", grade)
        rows.append((grade, f"x{index}", "ignored"))
    write_csv(tmp_path / "train.csv", ["severity", "photo", "level"], rows)
    (tmp_path / "train_images").rename(tmp_path / "photos")
    args = DataArguments(
        data_dir=str(tmp_path), image_dir="photos", id_column="photo", label_column="Severity"
    )
    assert labels_by_id(load_dr_dataset(args)) == {f"x{i}": g for i, g in enumerate(balanced(2))}


def test_grade_folders(tmp_path, caplog):
    for grade in range(5):
        for index in range(3):
            write_image(tmp_path / str(grade) / f"g{grade}_{index}.png", grade)
    (tmp_path / "0" / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING, logger="dr_hf.data"):
        dd = load_dr_dataset(DataArguments(data_dir=str(tmp_path)))
    check_contract(dd)
    assert "notes.txt" in caplog.text
    for split in dd.values():
        assert all(
            image_id.startswith(f"g{label}_")
            for image_id, label in zip(split["image_id"], split["label"])
        )
    assert sorted(dd["validation"]["label"]) == [0, 1, 2, 3, 4]


def test_sample_caps_draw_every_grade_from_sorted_grade_folders(tmp_path):
    """Grade-folder rows come sorted by grade: the first 10 of 40 would be grades 0 and 1."""
    for grade in range(5):
        for index in range(10):
            write_image(tmp_path / str(grade) / f"g{grade}_{index}.png", grade, size=8)
    args = DataArguments(data_dir=str(tmp_path), max_train_samples=10, max_eval_samples=5)
    dd = load_dr_dataset(args)
    assert len(dd["train"]) == 10 and len(dd["validation"]) == 5
    assert len(set(dd["train"]["label"])) >= 4
    assert len(set(dd["validation"]["label"])) >= 3
    again = load_dr_dataset(args)
    assert again["train"]["image_id"] == dd["train"]["image_id"]
    other = load_dr_dataset(DataArguments(**{**vars(args), "split_seed": 1}))
    assert other["train"]["image_id"] != dd["train"]["image_id"]


def test_grade_folders_reject_other_sub_folders(tmp_path):
    write_image(tmp_path / "0" / "a.png")
    write_image(tmp_path / "7" / "b.png")
    with pytest.raises(DataError, match=r"7.*Move"):
        load_dr_dataset(DataArguments(data_dir=str(tmp_path)))


def test_save_to_disk_round_trip(tmp_path):
    dd = load_dr_dataset(DataArguments(data_dir=str(aptos(tmp_path / "aptos", balanced()))))
    dd.save_to_disk(str(tmp_path / "saved"))
    files = sorted(tmp_path.joinpath("saved").rglob("*"))
    again = load_dr_dataset(DataArguments(data_dir=str(tmp_path / "saved")))
    check_contract(again)
    assert sorted(tmp_path.joinpath("saved").rglob("*")) == files  # no cache files written there
    for name in ("train", "validation"):
        assert again[name]["image_id"] == dd[name]["image_id"]
        assert again[name]["label"] == dd[name]["label"]
    assert again["train"][0]["image"].getpixel((0, 0)) == COLOURS[again["train"][0]["label"]]


def test_saved_train_only_is_split_and_ids_are_derived(tmp_path):
    paths = [str(write_image(tmp_path / "img" / f"p{i}.png", g)) for i, g in enumerate(balanced(2))]
    ds = Dataset.from_dict(
        {"image": paths, "label": balanced(2)},
        features=datasets.Features({"image": Image(), "label": Value("int64")}),
    )
    DatasetDict(train=ds, test=ds).save_to_disk(str(tmp_path / "dict"))
    ds.save_to_disk(str(tmp_path / "single"))
    for folder in ("dict", "single"):
        dd = load_dr_dataset(DataArguments(data_dir=str(tmp_path / folder)))
        check_contract(dd)
        assert sorted(ids(dd["train"]) + ids(dd["validation"])) == sorted(
            f"p{i}" for i in range(10)
        )


def test_saved_class_names_map_to_grades(tmp_path):
    paths = [str(write_image(tmp_path / "img" / f"p{i}.png", g)) for i, g in enumerate(balanced(2))]
    features = datasets.Features(
        {"image": Image(), "label": ClassLabel(names=["4", "3", "2", "1", "0"])}
    )
    Dataset.from_dict(
        {"image": paths, "label": [4 - g for g in balanced(2)]}, features=features
    ).save_to_disk(str(tmp_path / "saved"))
    dd = load_dr_dataset(DataArguments(data_dir=str(tmp_path / "saved")))
    every = datasets.concatenate_datasets([dd["train"], dd["validation"]])
    assert all(
        label == int(image_id[1:]) // 2
        for label, image_id in zip(every["label"], every["image_id"])
    )


def test_saved_dataset_without_label_says_what_is_missing(tmp_path):
    paths = [str(write_image(tmp_path / "img" / f"p{i}.png")) for i in range(4)]
    Dataset.from_dict(
        {"image": paths, "severity_text": ["x"] * 4},
        features=datasets.Features({"image": Image(), "severity_text": Value("string")}),
    ).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(
        DataError, match=r"lacks the column\(s\) label.*columns found: image, severity_text"
    ):
        load_dr_dataset(DataArguments(data_dir=str(tmp_path / "saved")))


def test_hub_name_offline_raises_data_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    # Both libraries read the variables at import time.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf" / "datasets")
    with pytest.raises(DataError, match=r"(?s)Hub could not be reached.*pass data_dir"):
        load_dr_dataset(DataArguments(dataset_name="nobody/aptos-2019"))


def test_explicit_validation_sets(tmp_path):
    train = aptos(tmp_path / "train", balanced(2))
    val = aptos(tmp_path / "val", [0, 1, 2, 3, 4], prefix="val")
    dd = load_dr_dataset(DataArguments(data_dir=str(train), validation_dir=str(val)))
    assert len(dd["train"]) == 10 and len(dd["validation"]) == 5
    args = DataArguments(
        data_dir=str(train),
        validation_csv=str(val / "train.csv"),
        validation_image_dir=str(val / "train_images"),
        max_eval_samples=3,
    )
    assert len(load_dr_dataset(args)["validation"]) == 3
    saved = tmp_path / "saved"
    load_dr_dataset(DataArguments(data_dir=str(train))).save_to_disk(str(saved))
    dd = load_dr_dataset(DataArguments(data_dir=str(val), validation_dir=str(saved)))
    assert len(dd["train"]) == 5
    assert (
        dd["validation"]["image_id"]
        == datasets.load_from_disk(str(saved))["validation"]["image_id"]
    )


def test_validation_images_also_in_training_are_listed(tmp_path):
    train = aptos(tmp_path / "train", balanced(6))
    same_csv = DataArguments(data_dir=str(train), validation_csv=str(train / "train.csv"))
    with pytest.raises(DataError) as err:
        load_dr_dataset(same_csv)
    message = str(err.value)
    assert "30 of its 30 image(s) are also in the training set" in message
    assert "'img000'" not in message and "  img000" in message and "... and 10 more" in message
    assert "pass no validation_dir / validation_csv" in message
    # A copy of three training images in another folder is the same photographs.
    copy = tmp_path / "copy"
    write_csv(copy / "val.csv", ["id_code", "diagnosis"], [(f"img{i:03d}", 0) for i in range(3)])
    for i in range(3):
        write_image(copy / "val_images" / f"img{i:03d}.png", 0)
    with pytest.raises(DataError, match=r"3 of its 3 image\(s\)(?s:.*)img002"):
        load_dr_dataset(DataArguments(data_dir=str(train), validation_dir=str(copy)))


def test_same_ids_of_different_photographs_are_no_overlap(tmp_path):
    """IDRiD names its training and test photographs alike (IDRiD_001 in both sets)."""
    train = aptos(tmp_path / "train", balanced(2))
    other = tmp_path / "test"
    write_csv(other / "test.csv", ["id_code", "diagnosis"], [(f"img{i:03d}", i) for i in range(5)])
    for i in range(5):
        write_image(other / "test_images" / f"img{i:03d}.png", (i + 1) % 5)  # other colours
    args = DataArguments(
        data_dir=str(train),
        validation_csv=str(other / "test.csv"),
        validation_image_dir=str(other / "test_images"),
    )
    dd = load_dr_dataset(args)
    assert ids(dd["validation"]) == [f"img{i:03d}" for i in range(5)]


def test_validation_csv_is_found_in_validation_dir_then_data_dir(tmp_path, monkeypatch):
    train = aptos(tmp_path / "train", balanced(2))
    write_csv(train / "held_out.csv", ["id_code", "diagnosis"], [("extra0", 2)])
    write_image(train / "train_images" / "extra0.png", 2)
    args = DataArguments(data_dir=str(train), validation_csv="held_out.csv")
    assert load_dr_dataset(args)["validation"]["image_id"] == ["extra0"]
    val = aptos(tmp_path / "val", [1, 2, 3], prefix="val")
    write_csv(val / "held_out.csv", ["id_code", "diagnosis"], [("val001", 2)])
    args = DataArguments(
        data_dir=str(train), validation_dir=str(val), validation_csv="held_out.csv"
    )
    assert load_dr_dataset(args)["validation"]["image_id"] == ["val001"]
    monkeypatch.chdir(tmp_path)
    args = DataArguments(data_dir=str(train), validation_dir=str(val), validation_csv="nowhere.csv")
    with pytest.raises(DataError) as err:
        load_dr_dataset(args)
    message = str(err.value)
    for folder in (val, train, tmp_path):
        assert f"  {folder / 'nowhere.csv'}" in message
    assert "validation_csv=" in message


def test_split_is_deterministic_and_stratified(tmp_path):
    grades = [0] * 30 + [1] * 8 + [2] * 12 + [3] * 2 + [4] * 5 + [3]
    root = aptos(tmp_path, grades)
    first = load_dr_dataset(DataArguments(data_dir=str(root), split_seed=7))
    second = load_dr_dataset(DataArguments(data_dir=str(root), split_seed=7))
    other = load_dr_dataset(DataArguments(data_dir=str(root), split_seed=8))
    assert ids(first["validation"]) == ids(second["validation"])
    assert ids(first["train"]) == ids(second["train"])
    assert ids(first["validation"]) != ids(other["validation"])
    assert not set(ids(first["train"])) & set(ids(first["validation"]))
    for split in first.values():
        assert set(split["label"]) == {0, 1, 2, 3, 4}
    assert len(first["validation"]) == 6 + 2 + 2 + 1 + 1
    capped = load_dr_dataset(DataArguments(data_dir=str(root), split_seed=7, max_train_samples=4))
    assert len(capped["train"]) == 4 and ids(capped["validation"]) == ids(first["validation"])


def test_split_keeps_a_single_image_grade_in_train():
    ds = Dataset.from_dict({"image": [""] * 5, "label": [0, 0, 0, 0, 4], "image_id": list("abcde")})
    train, validation = stratified_split(ds, 0.2, 0)
    assert "e" in train["image_id"] and validation["label"] == [0]


@pytest.mark.parametrize("mode", ["L", "P", "RGBA"])
def test_grayscale_palette_and_rgba_images_come_out_rgb(tmp_path, mode):
    for index, grade in enumerate(balanced(2)):
        write_image(tmp_path / "train_images" / f"m{index}.png", grade, mode=mode)
    write_csv(
        tmp_path / "train.csv",
        ["id_code", "diagnosis"],
        [(f"m{i}", g) for i, g in enumerate(balanced(2))],
    )
    assert PILImage.open(tmp_path / "train_images" / "m0.png").mode == mode
    dd = load_dr_dataset(DataArguments(data_dir=str(tmp_path)))
    image = dd["train"][0]["image"]
    assert image.mode == "RGB" and image.size == (32, 32)


def test_missing_label_column_lists_columns_found(tmp_path):
    root = aptos(tmp_path, balanced(1))
    write_csv(root / "train.csv", ["id_code", "severity"], [("img000", 0)])
    with pytest.raises(DataError) as err:
        load_dr_dataset(DataArguments(data_dir=str(root)))
    message = str(err.value)
    assert "train.csv" in message and "'diagnosis'" in message and "'severity'" in message
    assert "label_column" in message


def test_missing_id_column_lists_columns_found(tmp_path):
    root = aptos(tmp_path, balanced(1))
    write_csv(root / "train.csv", ["photo", "diagnosis"], [("img000", 0)])
    with pytest.raises(DataError, match=r"no image-id column.*'id_code'.*'photo'.*id_column"):
        load_dr_dataset(DataArguments(data_dir=str(root)))


def test_bad_labels_name_every_line(tmp_path):
    root = aptos(tmp_path, balanced(2))
    rows = [
        ("img000", "2.0"),
        ("img001", "abc"),
        ("img002", 5),
        ("img003", -1),
        ("img004", ""),
        ("img005", "1.5"),
    ]
    write_csv(root / "train.csv", ["id_code", "diagnosis"], rows)
    with pytest.raises(DataError) as err:
        load_dr_dataset(DataArguments(data_dir=str(root)))
    message = str(err.value)
    assert "train.csv" in message and "5 row(s)" in message
    for line, value in [(3, "'abc'"), (4, "'5'"), (5, "'-1'"), (6, "''"), (7, "'1.5'")]:
        assert f"line {line}: {value}" in message
    assert "line 2" not in message
    assert [parse_grade(v) for v in ("2.0", " 3 ", 4, "nan", "inf", True)] == [
        2,
        3,
        4,
        None,
        None,
        None,
    ]


def test_missing_images_are_all_counted_and_listed_up_to_a_cap(tmp_path):
    root = aptos(tmp_path, balanced(2))
    rows = [(f"img{i:03d}", i % 5) for i in range(10)] + [(f"gone{i}", 0) for i in range(25)]
    write_csv(root / "train.csv", ["id_code", "diagnosis"], rows)
    with pytest.raises(DataError) as err:
        load_dr_dataset(DataArguments(data_dir=str(root)))
    message = str(err.value)
    assert "25 of 35 image(s) not found" in message and "train.csv" in message
    assert (
        "line 12: 'gone0'" in message and "... and 5 more" in message and "'gone24'" not in message
    )


@pytest.mark.parametrize("damage", ["truncated_png", "text_png", "truncated_jpeg", "flipped_png"])
def test_undecodable_images_are_named(tmp_path, damage):
    root = aptos(tmp_path, balanced(2), ext=".jpeg" if "jpeg" in damage else ".png")
    victim = next((root / "train_images").glob("img003.*"))
    write_image(victim, size=256)
    data = victim.read_bytes()
    if damage == "text_png":
        victim.write_text("id_code,diagnosis\n")
    elif damage == "flipped_png":
        victim.write_bytes(data[:60] + bytes([data[60] ^ 0xFF]) + data[61:])
    else:
        victim.write_bytes(data[: len(data) // 2])
    assert image_problem(str(victim)) is not None
    with pytest.raises(DataError) as err:
        load_dr_dataset(DataArguments(data_dir=str(root), validation_split=0.5))
    assert str(victim) in str(err.value) and "skip_bad_images=True" in str(err.value)


def test_jpeg_with_bytes_after_the_end_marker_is_accepted(tmp_path):
    path = write_image(tmp_path / "a.jpg", size=64)
    path.write_bytes(path.read_bytes() + b"\0\0 camera padding")
    assert image_problem(str(path)) is None
    assert image_problem(path.read_bytes()[:-40]) is not None


def test_skip_bad_images_drops_and_reports(tmp_path, caplog):
    root = aptos(tmp_path, balanced(4))
    bad = [root / "train_images" / "img000.png", root / "train_images" / "img019.png"]
    for path in bad:
        path.write_bytes(b"not a png")
    with caplog.at_level(logging.WARNING, logger="dr_hf.data"):
        dd = load_dr_dataset(DataArguments(data_dir=str(root), skip_bad_images=True))
    every = ids(dd["train"]) + ids(dd["validation"])
    assert len(every) == 18 and "img000" not in every and "img019" not in every
    assert all(str(path) in caplog.text for path in bad)
    assert "kept" in caplog.text and "dropped" in caplog.text


def test_missing_files_still_raise_with_skip_bad_images(tmp_path):
    root = aptos(tmp_path, balanced(2))
    (root / "train_images" / "img004.png").unlink()
    with pytest.raises(DataError, match=r"line 6: 'img004'"):
        load_dr_dataset(DataArguments(data_dir=str(root), skip_bad_images=True))


@pytest.mark.parametrize("content", ["", "id_code,diagnosis\n"])
def test_empty_csv(tmp_path, content):
    root = aptos(tmp_path, balanced(1))
    (root / "train.csv").write_text(content)
    with pytest.raises(DataError, match=r"train\.csv (is empty|has a header but no rows)"):
        load_dr_dataset(DataArguments(data_dir=str(root)))


def test_duplicate_ids_are_listed(tmp_path):
    root = aptos(tmp_path, balanced(2))
    rows = [(f"img{i:03d}", i % 5) for i in range(10)] + [("img001.png", 1), ("img007", 2)]
    write_csv(root / "train.csv", ["id_code", "diagnosis"], rows)
    with pytest.raises(DataError) as err:
        load_dr_dataset(DataArguments(data_dir=str(root)))
    message = str(err.value)
    assert "2 image id(s) appear more than once" in message
    assert "'img001': line 3, line 12" in message and "'img007': line 9, line 13" in message


def test_no_source_and_unknown_layout(tmp_path):
    with pytest.raises(DataError, match="pass data_dir"):
        load_dr_dataset(DataArguments())
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DataError, match="no data layout recognised"):
        load_dr_dataset(DataArguments(data_dir=str(tmp_path)))
    for name in ("a.csv", "b.csv"):
        write_csv(tmp_path / name, ["id_code", "diagnosis"], [("x", 0)])
    with pytest.raises(DataError, match=r"several CSV files \(a\.csv, b\.csv\).*train_csv="):
        load_dr_dataset(DataArguments(data_dir=str(tmp_path)))


def test_load_dr_images_keeps_every_image_without_a_split(tmp_path):
    """An evaluation set with one image per grade cannot be split, and need not be."""
    from PIL import Image

    from dr_hf.data.loading import load_dr_images

    (tmp_path / "train_images").mkdir()
    rows = ["id_code,diagnosis"]
    for grade in range(5):
        Image.new("RGB", (16, 16), (grade * 40, 0, 0)).save(
            tmp_path / "train_images" / f"e{grade}.png"
        )
        rows.append(f"e{grade},{grade}")
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    images = load_dr_images(DataArguments(data_dir=str(tmp_path)))
    assert images["image_id"] == [f"e{g}" for g in range(5)]
    assert images["label"] == list(range(5))
    with pytest.raises(DataError, match="no grade has two patients"):
        load_dr_dataset(DataArguments(data_dir=str(tmp_path)))
