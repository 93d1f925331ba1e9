"""`prepare_dataset`: the preprocessed, cached copy that training reads instead of raw photographs."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from datasets import (
    ClassLabel,
    Dataset,
    DatasetDict,
    Features,
    Value,
    concatenate_datasets,
    load_from_disk,
)
from datasets import Image as ImageFeature
from PIL import Image

import dr_hf
from dr_hf.data.prepare import PREPARE_INFO, prepare_dataset, read_prepare_info
from dr_hf.data.transforms import FundusTransform, with_transforms
from dr_hf.grades import GRADE_NAMES

SIZE = 48
SHAPES = [(90, 120), (100, 100), (80, 130)]


def make_dataset(n_train: int, n_val: int) -> DatasetDict:
    """Noisy bright discs on black, in frames of several shapes."""
    features = Features(
        {
            "image": ImageFeature(mode="RGB"),
            "label": ClassLabel(names=GRADE_NAMES),
            "image_id": Value("string"),
        }
    )
    rng = np.random.default_rng(0)

    def image(height: int, width: int) -> Image.Image:
        array = np.zeros((height, width, 3), np.uint8)
        cv2.circle(array, (width // 2, height // 2), min(height, width) // 2 - 4, (170, 80, 40), -1)
        return Image.fromarray(cv2.add(array, rng.integers(0, 25, array.shape, dtype=np.uint8)))

    def split(n: int, offset: int) -> Dataset:
        rows = {
            "image": [image(*SHAPES[i % 3]) for i in range(n)],
            "label": [(offset + i) % len(GRADE_NAMES) for i in range(n)],
            "image_id": [f"img_{offset + i:03d}" for i in range(n)],
        }
        return Dataset.from_dict(rows, features=features)

    return DatasetDict({"train": split(n_train, 0), "validation": split(n_val, 100)})


@pytest.fixture(scope="module")
def raw():
    return make_dataset(n_train=4, n_val=2)


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "aptos_48"
    assert prepare_dataset(raw, out, size=SIZE) == out
    return out


def test_round_trip_keeps_rows_and_resizes(raw, prepared):
    loaded = load_from_disk(str(prepared))
    assert set(loaded) == {"train", "validation"}
    for name, split in loaded.items():
        assert split.features == raw[name].features
        assert split["label"] == raw[name]["label"]
        assert split["image_id"] == raw[name]["image_id"]
        for image in split["image"]:
            assert min(image.size) == SIZE and image.mode == "RGB" and image.format == "PNG"


def test_prepared_images_are_cropped(raw, prepared):
    # Raw train image 2 is 130x80 with a 72-pixel disc: cropped it is nearly square.
    width, height = raw["train"][2]["image"].size
    assert width / height > 1.5
    cropped = load_from_disk(str(prepared))["train"][2]["image"]
    assert cropped.size[0] / cropped.size[1] < 1.15
    pixels = np.asarray(cropped)
    assert pixels[SIZE // 2, :2].max() > 60  # disc up to the left edge, no black margin


def test_read_prepare_info(prepared, tmp_path):
    info = read_prepare_info(prepared)
    assert info == {
        "crop": True,
        "ben_graham": False,
        "size": SIZE,
        "dr_hf_version": dr_hf.__version__,
    }
    assert read_prepare_info(tmp_path) is None
    (tmp_path / PREPARE_INFO).write_text("{not json")
    with pytest.raises(ValueError, match=PREPARE_INFO):
        read_prepare_info(tmp_path)


def test_refuses_a_foreign_non_empty_folder(raw, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        prepare_dataset(raw, tmp_path, size=SIZE)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_replaces_an_earlier_prepare_output(raw, tmp_path):
    out = tmp_path / "prepared"
    prepare_dataset(raw, out, size=40)
    prepare_dataset(raw, out, size=36, ben_graham=True)
    assert read_prepare_info(out)["size"] == 36 and read_prepare_info(out)["ben_graham"]
    assert min(load_from_disk(str(out))["validation"][0]["image"].size) == 36


def test_refuses_to_overwrite_its_own_source(raw, prepared, tmp_path):
    out = tmp_path / "again"
    prepare_dataset(load_from_disk(str(prepared)), out, size=32)
    with pytest.raises(ValueError, match="another folder"):
        prepare_dataset(load_from_disk(str(out)), out, size=32)
    assert read_prepare_info(out)["size"] == 32


def test_map_is_cached_and_parallel(raw, tmp_path):
    raw.save_to_disk(str(tmp_path / "raw"))
    source = load_from_disk(str(tmp_path / "raw"))
    prepare_dataset(source, tmp_path / "first", size=SIZE, num_proc=2)
    caches = sorted(p.name for p in (tmp_path / "raw" / "train").glob("cache-*.arrow"))
    assert caches  # map wrote its result beside the source, where a second run finds it
    prepare_dataset(source, tmp_path / "second", size=SIZE, num_proc=2)
    assert sorted(p.name for p in (tmp_path / "raw" / "train").glob("cache-*.arrow")) == caches
    first = load_from_disk(str(tmp_path / "first"))["train"]
    second = load_from_disk(str(tmp_path / "second"))["train"]
    assert first["image_id"] == second["image_id"] == raw["train"]["image_id"]


def test_in_memory_source_is_mapped_to_files_then_cleaned_up(raw, tmp_path, monkeypatch):
    """`load_dr_dataset`'s splits live in memory: without a cache file `map` would hold every
    encoded PNG in RAM until `save_to_disk`."""
    assert all(not split.cache_files for split in raw.values())
    mapped = {}
    real_map = DatasetDict.map

    def recording_map(self, *args, **kwargs):
        result = real_map(self, *args, **kwargs)
        for name, split in result.items():
            mapped[name] = [Path(cache["filename"]) for cache in split.cache_files]
            assert all(path.is_file() for path in mapped[name])
        return result

    monkeypatch.setattr(DatasetDict, "map", recording_map)
    out = tmp_path / "data" / "prepared"
    prepare_dataset(raw, out, size=SIZE, num_proc=2)
    assert set(mapped) == {"train", "validation"}
    for paths in mapped.values():
        assert paths and all(path.parent.parent == out.parent for path in paths)
        assert all(not path.exists() for path in paths)
    assert sorted(p.name for p in out.parent.iterdir()) == ["prepared"]
    assert load_from_disk(str(out))["train"]["image_id"] == raw["train"]["image_id"]


def test_training_transform_reads_prepared_data(prepared):
    loaded = load_from_disk(str(prepared))
    info = read_prepare_info(prepared)
    ready, train_tf = with_transforms(loaded, 32, crop=not info["crop"], seed=0)
    assert train_tf.crop is False
    sample = ready["train"][1]
    assert (
        sample["pixel_values"].shape == (3, 32, 32)
        and sample["pixel_values"].dtype == torch.float32
    )
    assert sample["labels"] == loaded["train"][1]["label"]
    assert ready["validation"][0]["pixel_values"].shape == (3, 32, 32)
    assert json.loads((prepared / PREPARE_INFO).read_text())["crop"] is True


def test_prepared_images_match_the_on_the_fly_transform(raw, tmp_path):
    """Prepared at the training size, the images are the pixels the transform would make, a
    disc cut by the frame included (its crop is not square)."""
    cut = np.zeros((80, 130, 3), np.uint8)
    cv2.circle(cut, (65, 40), 52, (170, 80, 40), -1)
    cut = cv2.add(cut, np.random.default_rng(1).integers(0, 25, cut.shape, dtype=np.uint8))
    extra = Dataset.from_dict(
        {"image": [Image.fromarray(cut)], "label": [2], "image_id": ["cut"]},
        features=raw["train"].features,
    )
    dataset = DatasetDict(train=concatenate_datasets([raw["train"], extra]))
    out = prepare_dataset(dataset, tmp_path / "bg", size=SIZE, ben_graham=True)
    transform = FundusTransform(None, ben_graham=True, train=False, size=SIZE)
    prepared = load_from_disk(str(out))["train"]["image"]
    assert prepared[-1].size[0] > 1.2 * SIZE  # the cut disc's crop kept its aspect ratio
    for image, original in zip(prepared, dataset["train"]["image"]):
        np.testing.assert_array_equal(np.asarray(image), transform.preprocess(original))
