"""Synthetic patients: both eyes of one patient, EyePACS layout, and the unchanged single renders."""

import csv
import hashlib

import cv2
import numpy as np
import pytest

from dr_hf.data.fundus_render import FundusGeometry, render_fundus
from dr_hf.data.synthetic import make_synthetic

# sha256 of (photograph bytes + lesion mask bytes) rendered before patients existed: a render
# without a patient's look must stay byte-identical (the quick start and the published figures
# were drawn this way). (grade, width, height, seed) -> digest; 160x96 seed 4 is a wide frame
# whose disc is cut at top and bottom.
OLD_RENDERS = {
    (0, 64, 64, 0): "ab5a2da4a36c83cf79955bfdd17349357aa001117593725211e1e9c9657851c6",
    (1, 64, 64, 1): "1d237a4bf8c1e4d2c52b6dd83d630d361607e18537e3e254f2a90742d43184c2",
    (2, 96, 64, 2): "057fd52ba92c371622510c94cea2608ba348b1795e1dafe0b7c784d89d066c76",
    (3, 128, 80, 3): "7ce892f172764384b87d88c8709cda9567311adf7ceb0262f423e65eaab76c8c",
    (4, 160, 96, 4): "0429d307cac51fa5d1244a93fe0390701c3254c36326099194f911192d300888",
    (4, 48, 48, 5): "403d8deac9571cd6de692059dcd9e89494ffc3b29aeb6d5cf253b5419513510c",
    (2, 300, 200, 6): "b44404649280bcdb91a4521a7b1fdf4d8da03fc11c48168f5e25d23a3fefe597",
    (3, 64, 64, 11): "f0ad5c7d55e85f1ea5d50b1f83cfa1bd7eaa327e23f4dd7e4680052fec3655fe",
}
OLD_GIVEN_GEOMETRY = "5fc73eb636191579b9f0c5ca6624a53fd8ab1751ab0d163ada6c0448f1aa8e21"
# make_synthetic(num_images=10, image_size=64, height=48, seed=7, lesion_masks=True): train.csv,
# then each row's decoded photograph and mask.
OLD_APTOS_SET = "1c4d726ce1ddb27d6fcd550a3ae6d0217f96e161d4b23d3b349dc98fbb4f2747"


@pytest.mark.parametrize("case", sorted(OLD_RENDERS))
def test_renders_without_a_look_are_byte_identical_to_before(case):
    grade, width, height, seed = case
    image, _, mask = render_fundus(
        grade, width, height, np.random.default_rng(seed), return_mask=True
    )
    assert hashlib.sha256(image.tobytes() + mask.tobytes()).hexdigest() == OLD_RENDERS[case]


def test_render_with_given_geometry_is_byte_identical_to_before():
    geo = FundusGeometry(50, 40, 30)
    image, _ = render_fundus(2, 100, 80, np.random.default_rng(0), geometry=geo)
    assert hashlib.sha256(image.tobytes()).hexdigest() == OLD_GIVEN_GEOMETRY


def test_aptos_set_is_byte_identical_to_before(tmp_path):
    folder = make_synthetic(
        tmp_path / "s", num_images=10, image_size=64, height=48, seed=7, lesion_masks=True
    )
    digest = hashlib.sha256((folder / "train.csv").read_bytes())
    with open(folder / "train.csv", newline="") as f:
        for row in list(csv.reader(f))[1:]:
            for sub in ("train_images", "lesion_masks"):
                path = folder / sub / f"{row[0]}.png"
                digest.update(cv2.imread(str(path), cv2.IMREAD_UNCHANGED).tobytes())
    assert digest.hexdigest() == OLD_APTOS_SET


def pair_folder(folder, **kwargs):
    return make_synthetic(folder, **{"image_size": 56, "seed": 0, **kwargs})


def read_photo(folder, name, sub="train", suffix=".jpeg"):
    image = cv2.imread(str(folder / sub / f"{name}{suffix}"), cv2.IMREAD_UNCHANGED)
    assert image is not None, name
    return image


def test_pairs_are_written_in_the_eyepacs_layout_and_read_back_with_patients(tmp_path):
    folder = pair_folder(tmp_path / "pairs", patients=11, lesion_masks=True)
    with open(folder / "trainLabels.csv", newline="") as f:
        rows = list(csv.reader(f))
    names = [f"{p}_{eye}" for p in range(1, 12) for eye in ("left", "right")]
    assert rows[0] == ["image", "level"] and [row[0] for row in rows[1:]] == names
    assert sorted(p.name for p in (folder / "train").iterdir()) == sorted(
        f"{n}.jpeg" for n in names
    )
    assert sorted(p.name for p in (folder / "lesion_masks").iterdir()) == sorted(
        f"{n}.png" for n in names
    )
    assert (folder / "train" / "1_left.jpeg").read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG
    assert read_photo(folder, "1_left").shape == (56, 56, 3)

    from dr_hf.config.arguments import DataArguments
    from dr_hf.data.loading import load_dr_images

    images = load_dr_images(DataArguments(data_dir=str(folder)))
    got = {
        (r["image_id"], r["label"], r["patient_id"], r["eye"])
        for r in images.remove_columns("image")
    }
    want = {(name, int(level), name.split("_")[0], name.split("_")[1]) for name, level in rows[1:]}
    assert len(images) == 22 and got == want


def test_both_eyes_of_a_patient_look_alike_and_patients_differ(tmp_path):
    folder = pair_folder(tmp_path / "pairs", patients=12, lesion_masks=True)
    patients = range(1, 13)
    # The left eye is the right eye's mirror image: flip it back, then compare pixels; the
    # fundus colour (the mean) needs no flip.
    left = [read_photo(folder, f"{p}_left")[:, ::-1].astype(float) for p in patients]
    right = [read_photo(folder, f"{p}_right").astype(float) for p in patients]
    pixels = np.array([[np.abs(a - b).mean() for b in right] for a in left])
    colour = np.array(
        [[np.abs(a.mean((0, 1)) - b.mean((0, 1))).sum() for b in right] for a in left]
    )
    for distance in (pixels, colour):
        nearest = (distance.argmin(axis=1) == np.arange(12)).mean()
        assert nearest >= 0.8, distance.round(1)
    # ... but each eye has its own lesions: where both eyes have some, they rarely coincide.
    compared = 0
    for p in patients:
        a = read_photo(folder, f"{p}_left", "lesion_masks", ".png")[:, ::-1] > 0
        b = read_photo(folder, f"{p}_right", "lesion_masks", ".png") > 0
        if a.sum() >= 10 and b.sum() >= 10:
            compared += 1
            assert (a & b).sum() / (a | b).sum() < 0.3, p
    assert compared >= 2


def test_a_patients_eyes_differ_in_lesions_and_noise_and_the_left_is_mirrored():
    from dr_hf.data.fundus_render import draw_look

    look = draw_look(np.random.default_rng(5))

    def eye(side, seed, grade=0):
        return render_fundus(grade, 64, 48, np.random.default_rng(seed), look=look, eye=side)

    (right, geo_r), (left, geo_l), (right_2, _) = eye("right", 1), eye("left", 2), eye("right", 3)
    assert geo_l == FundusGeometry(63 - geo_r.cx, geo_r.cy, geo_r.radius)
    assert np.abs(right_2.astype(int) - right.astype(int)).mean() < 5  # only the noise differs
    mirrored = np.abs(left[:, ::-1].astype(int) - right.astype(int)).mean()
    assert mirrored < 0.5 * np.abs(left.astype(int) - right.astype(int)).mean()

    def changed(image):  # share of pixels that moved by more than noise does
        return (np.abs(image.astype(int) - right.astype(int)).max(axis=2) > 25).mean()

    assert changed(right_2) == 0 and changed(eye("right", 1, grade=3)[0]) > 0.03  # lesions
    np.testing.assert_array_equal(eye("left", 2)[0], left)
    geo = FundusGeometry(30, 24, 20)
    _, given = render_fundus(1, 64, 48, np.random.default_rng(2), geo, look=look, eye="left")
    assert given == geo
    with pytest.raises(ValueError, match="left or right"):
        render_fundus(0, 64, 48, np.random.default_rng(0), look=look, eye="unknown")
    with pytest.raises(ValueError, match="needs look"):
        render_fundus(0, 64, 48, np.random.default_rng(0), eye="left")


def test_fellow_eye_grades_agree_as_targeted_without_rendering():
    from dr_hf.data.synthetic import EYEPACS_GRADE_SHARES, FELLOW_EYE_DIFFERENCE, pair_grades

    grades = pair_grades(4000, np.random.default_rng(0))
    assert grades.shape == (4000, 2) and grades.min() >= 0 and grades.max() <= 4
    apart = np.bincount(np.abs(grades[:, 0] - grades[:, 1]), minlength=5)
    assert apart[3:].sum() == 0
    np.testing.assert_allclose(apart[:3] / 4000, FELLOW_EYE_DIFFERENCE, atol=0.02)
    assert 0.8 <= apart[0] / 4000 <= 0.9 and apart[1] > apart[2]  # as EyePACS, roughly
    left_worse, right_worse = (
        (grades[:, 0] > grades[:, 1]).sum(),
        (grades[:, 1] > grades[:, 0]).sum(),
    )
    assert abs(left_worse - right_worse) < 0.25 * (left_worse + right_worse)
    photographs = np.bincount(grades.ravel(), minlength=5) / grades.size
    assert np.abs(photographs - EYEPACS_GRADE_SHARES).max() < 0.06, photographs
    assert list(np.argsort(-photographs)) == [0, 2, 1, 3, 4]  # EyePACS's order
    np.testing.assert_array_equal(grades, pair_grades(4000, np.random.default_rng(0)))
    assert not np.array_equal(grades, pair_grades(4000, np.random.default_rng(1)))
    small = pair_grades(10, np.random.default_rng(3))
    assert set(small.max(axis=1)) == set(range(5))  # each grade has a patient in a small set


def test_same_seed_gives_the_same_pairs_and_another_seed_others(tmp_path):
    first, second, other = (
        pair_folder(tmp_path / name, patients=3, seed=seed, image_size=48)
        for name, seed in (("a", 4), ("b", 4), ("c", 5))
    )
    assert (first / "trainLabels.csv").read_bytes() == (second / "trainLabels.csv").read_bytes()
    for name in ("1_left", "2_right", "3_left"):
        photo = (first / "train" / f"{name}.jpeg").read_bytes()
        assert photo == (second / "train" / f"{name}.jpeg").read_bytes()
        assert photo != (other / "train" / f"{name}.jpeg").read_bytes()


def test_an_earlier_set_is_refused_then_replaced_without_stale_files(tmp_path):
    folder = tmp_path / "set"
    pair_folder(folder, patients=4, image_size=32, lesion_masks=True)
    with pytest.raises(FileExistsError, match="trainLabels.csv"):
        pair_folder(folder, patients=2, image_size=32)
    with pytest.raises(FileExistsError, match="trainLabels.csv"):
        make_synthetic(folder, num_images=10, image_size=32)
    assert len(list((folder / "train").iterdir())) == 8  # nothing lost
    pair_folder(folder, patients=2, image_size=32, overwrite=True)
    assert sorted(p.stem for p in (folder / "train").iterdir()) == [
        "1_left",
        "1_right",
        "2_left",
        "2_right",
    ]
    assert not list((folder / "lesion_masks").iterdir())
    # the other layout replaces it whole: the folder never holds two sets
    make_synthetic(folder, num_images=10, image_size=32, overwrite=True)
    assert not (folder / "trainLabels.csv").exists() and not list((folder / "train").iterdir())
    pair_folder(folder, patients=2, image_size=32, overwrite=True)
    assert not (folder / "train.csv").exists() and not list((folder / "train_images").iterdir())
    # photographs named like EyePACS's without a label CSV are not removed unasked
    (folder / "trainLabels.csv").unlink()
    with pytest.raises(FileExistsError, match="1_left.jpeg"):
        pair_folder(folder, patients=1, image_size=32)
    assert len(list((folder / "train").iterdir())) == 4


def test_overwrite_never_removes_a_real_eyepacs_folders_photographs(tmp_path):
    """A real EyePACS folder has the synthetic set's names (`10_left.jpeg`, trainLabels.csv):
    without the marker make-synthetic leaves beside its sets, overwrite refuses it whole."""
    from dr_hf.data.synthetic import MARKER

    folder = tmp_path / "eyepacs"
    pair_folder(folder, patients=2, image_size=32)
    (folder / MARKER).unlink()  # now indistinguishable from a real EyePACS folder
    before = sorted(p.name for p in (folder / "train").iterdir())
    for write in (
        lambda: pair_folder(folder, patients=1, image_size=32, overwrite=True),
        lambda: make_synthetic(folder, num_images=10, image_size=32, overwrite=True),
    ):
        with pytest.raises(FileExistsError, match=f"no {MARKER}"):
            write()
        assert sorted(p.name for p in (folder / "train").iterdir()) == before
        assert (folder / "trainLabels.csv").is_file()


def test_cli_writes_pairs_and_refuses_num_images_with_patients(tmp_path, capsys):
    from dr_hf.cli import main

    out = tmp_path / "pairs"
    args = ["make-synthetic", "--output", str(out), "--patients", "2", "--image-size", "32"]
    assert main([*args, "--lesion-masks"]) == 0
    assert "both eyes of 2 synthetic patients" in capsys.readouterr().out
    rows = (out / "trainLabels.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows] == [
        "image",
        "1_left",
        "1_right",
        "2_left",
        "2_right",
    ]
    assert len(list((out / "lesion_masks").iterdir())) == 4
    assert main([*args, "--num-images", "10", "--overwrite"]) == 2
    error = capsys.readouterr().err
    assert "--num-images 10 and --patients 2" in error and "pass one of them" in error
