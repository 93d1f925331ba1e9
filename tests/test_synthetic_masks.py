import csv

import cv2
import numpy as np

from dr_hf.data.synthetic import make_synthetic, render_fundus


def grades_of(folder):
    with open(folder / "train.csv", newline="") as f:
        return {row["id_code"]: int(row["diagnosis"]) for row in csv.DictReader(f)}


def test_masks_written_for_every_image_with_the_photo_size(tmp_path):
    folder = make_synthetic(
        tmp_path / "set", num_images=12, image_size=96, height=64, seed=2, lesion_masks=True
    )
    grades = grades_of(folder)
    assert sorted(p.stem for p in (folder / "lesion_masks").iterdir()) == sorted(grades)
    for id_code, grade in grades.items():
        mask = cv2.imread(str(folder / "lesion_masks" / f"{id_code}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (64, 96) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
        if grade == 0:
            assert mask.max() == 0, id_code
        if grade >= 2:
            assert (mask == 255).sum() >= 3, (id_code, grade)


def test_photos_identical_with_and_without_masks(tmp_path):
    plain = make_synthetic(tmp_path / "plain", num_images=10, image_size=64, seed=4)
    masked = make_synthetic(
        tmp_path / "masked", num_images=10, image_size=64, seed=4, lesion_masks=True
    )
    assert not (plain / "lesion_masks").exists()
    assert (plain / "train.csv").read_bytes() == (masked / "train.csv").read_bytes()
    names = sorted(p.name for p in (plain / "train_images").iterdir())
    assert len(names) == 10
    for name in names:
        a = (plain / "train_images" / name).read_bytes()
        assert a == (masked / "train_images" / name).read_bytes(), name


def test_rewriting_without_masks_removes_stale_masks(tmp_path):
    make_synthetic(tmp_path, num_images=12, image_size=32, seed=0, lesion_masks=True)
    make_synthetic(tmp_path, num_images=10, image_size=32, seed=0, overwrite=True)
    assert not list((tmp_path / "lesion_masks").iterdir())


def test_render_mask_marks_the_lesions_and_keeps_the_photo():
    for seed in range(6):
        healthy, _ = render_fundus(0, 128, 96, np.random.default_rng(seed))
        for grade in range(5):
            image, geo, mask = render_fundus(
                grade, 128, 96, np.random.default_rng(seed), return_mask=True
            )
            again, geo_again = render_fundus(grade, 128, 96, np.random.default_rng(seed))
            np.testing.assert_array_equal(image, again)
            assert geo == geo_again and mask.shape == (96, 128)
            if grade == 0:
                assert mask.max() == 0
                continue
            # The same seed draws the same eye: mask pixels are where the lesions changed it.
            changed = np.abs(image.astype(int) - healthy.astype(int)).max(axis=2) > 25
            assert changed[mask > 0].mean() > 0.75, (seed, grade)
            x0, y0, x1, y1 = geo.box(128, 96)
            assert mask[:y0].max(initial=0) == 0 and mask[y1:].max(initial=0) == 0
            assert mask[:, :x0].max(initial=0) == 0 and mask[:, x1:].max(initial=0) == 0
