import csv

import cv2
import numpy as np
import pytest

from dr_hf.data.synthetic import (
    APTOS_GRADE_SHARES,
    FundusGeometry,
    grade_counts,
    make_synthetic,
    render_fundus,
)
from dr_hf.grades import NUM_GRADES


def read_folder(folder):
    with open(folder / "train.csv", newline="") as f:
        rows = list(csv.reader(f))
    images = {
        id_code: cv2.cvtColor(
            cv2.imread(str(folder / "train_images" / f"{id_code}.png")), cv2.COLOR_BGR2RGB
        )
        for id_code, _ in rows[1:]
    }
    return rows, images


def test_same_seed_gives_same_files(tmp_path):
    first = make_synthetic(tmp_path / "a", num_images=12, image_size=64, seed=3)
    second = make_synthetic(tmp_path / "b", num_images=12, image_size=64, seed=3)
    assert (first / "train.csv").read_bytes() == (second / "train.csv").read_bytes()
    rows_a, images_a = read_folder(first)
    _, images_b = read_folder(second)
    assert len(images_a) == 12
    for id_code, image in images_a.items():
        np.testing.assert_array_equal(image, images_b[id_code])


def test_different_seeds_differ(tmp_path):
    _, images_a = read_folder(make_synthetic(tmp_path / "a", num_images=10, image_size=48, seed=0))
    _, images_b = read_folder(make_synthetic(tmp_path / "b", num_images=10, image_size=48, seed=1))
    assert all(not np.array_equal(images_a[k], images_b[k]) for k in images_a)


def test_csv_layout_and_frame_shape(tmp_path):
    folder = make_synthetic(tmp_path / "out", num_images=10, image_size=72, seed=0, height=48)
    rows, images = read_folder(folder)
    assert rows[0] == ["id_code", "diagnosis"]
    assert [r[0] for r in rows[1:]] == [f"synth_{i:05d}" for i in range(10)]
    assert sorted(p.name for p in (folder / "train_images").iterdir()) == [
        f"synth_{i:05d}.png" for i in range(10)
    ]
    assert all(image.shape == (48, 72, 3) for image in images.values())
    assert {int(r[1]) for r in rows[1:]} == set(range(NUM_GRADES))


def test_grade_distribution_is_skewed_like_aptos():
    counts = grade_counts(200)
    assert sum(counts) == 200
    assert counts[0] == max(counts) and 0.45 <= counts[0] / 200 <= 0.52
    assert counts[2] > counts[1] > counts[4] > counts[3]
    for n in (10, 11, 23, 57):
        small = grade_counts(n)
        assert sum(small) == n and min(small) >= 2
    assert np.allclose(np.array(grade_counts(3662)) / 3662, APTOS_GRADE_SHARES, atol=0.002)


def test_every_grade_present_twice_in_a_small_set(tmp_path):
    rows, _ = read_folder(make_synthetic(tmp_path, num_images=12, image_size=32, seed=5))
    grades = [int(r[1]) for r in rows[1:]]
    assert all(grades.count(g) >= 2 for g in range(NUM_GRADES))
    assert grades.count(0) == max(grades.count(g) for g in range(NUM_GRADES))


def test_lesion_amount_grows_with_grade():
    # The same seed draws the same eye: pixels that differ from the grade-0 render are lesions.
    amounts = np.zeros((8, NUM_GRADES))
    for seed in range(8):
        renders = [
            render_fundus(g, 128, 128, np.random.default_rng(seed))[0] for g in range(NUM_GRADES)
        ]
        for grade, image in enumerate(renders):
            diff = np.abs(image.astype(int) - renders[0].astype(int)).max(axis=2)
            amounts[seed, grade] = (diff > 25).mean()
    mean = amounts.mean(axis=0)
    assert mean[0] == 0
    assert np.all(np.diff(mean) > 0), mean
    assert mean[1] < 0.005 < mean[3]  # mild is a few dots, severe covers the retina


def test_anatomy_varies_between_eyes():
    images = [render_fundus(0, 96, 64, np.random.default_rng(s)) for s in range(40)]
    radii = {geo.radius for _, geo in images}
    cut = [geo.cy - geo.radius < 0 and geo.cy + geo.radius >= 64 for _, geo in images]
    assert len(radii) > 5
    assert 0 < sum(cut) < 40  # some discs are cut by the frame, as in APTOS
    colours = [image[geo.cy, geo.cx].astype(int) for image, geo in images]
    assert np.ptp(np.array(colours)[:, 0]) > 30


def test_render_honours_geometry_and_stays_dark_outside():
    geo = FundusGeometry(cx=50, cy=40, radius=30)
    image, drawn = render_fundus(2, 100, 80, np.random.default_rng(0), geometry=geo)
    assert drawn == geo and image.shape == (80, 100, 3) and image.dtype == np.uint8
    assert image[:5, :5].max() < 30 and image[40, 50].max() > 60
    assert geo.box(100, 80) == (20, 10, 81, 71)


def test_render_rejects_bad_grade_and_tiny_frames():
    with pytest.raises(ValueError, match="grade=5"):
        render_fundus(5, 64, 64, np.random.default_rng(0))
    with pytest.raises(ValueError, match="too small"):
        render_fundus(0, 8, 64, np.random.default_rng(0))


def test_refuses_to_overwrite(tmp_path):
    (tmp_path / "train.csv").write_text("id_code,diagnosis\nreal_photo,3\n")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        make_synthetic(tmp_path, num_images=10, image_size=32)
    assert (tmp_path / "train.csv").read_text() == "id_code,diagnosis\nreal_photo,3\n"
    assert not (tmp_path / "train_images").exists()
    make_synthetic(tmp_path, num_images=12, image_size=32, overwrite=True)
    assert (tmp_path / "train.csv").read_text().startswith("id_code,diagnosis\nsynth_00000,")
    make_synthetic(tmp_path, num_images=10, image_size=32, overwrite=True)
    assert len(list((tmp_path / "train_images").iterdir())) == 10  # no stale images left
