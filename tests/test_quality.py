import csv
import math

import cv2
import numpy as np
import pytest
from PIL import Image

from dr_hf.data import quality
from dr_hf.data.preprocessing import crop_fov, find_fov
from dr_hf.data.quality import QUALITY_ISSUES, assess_quality, quality_issues_text
from dr_hf.data.synthetic import make_synthetic


@pytest.fixture(scope="module")
def skdata():
    # Real photographs that scikit-image (a test dependency) ships inside its package.
    from skimage import data

    return data


@pytest.fixture(scope="module")
def retina(skdata):
    return skdata.retina()  # a real fundus photograph, 1411x1411


def read_set(folder):
    with open(folder / "train.csv", newline="") as f:
        ids = [row["id_code"] for row in csv.DictReader(f)]
    return {
        id_code: cv2.cvtColor(
            cv2.imread(str(folder / "train_images" / f"{id_code}.png")), cv2.COLOR_BGR2RGB
        )
        for id_code in ids
    }


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("quality")
    square = read_set(make_synthetic(root / "square", num_images=30, image_size=160, seed=3))
    wide = read_set(make_synthetic(root / "wide", num_images=6, image_size=240, height=160))
    return list(square.values()) + list(wide.values())


def blurred(image):
    """Gaussian blur with sigma 4 % of the width, run at an eighth of the size when that is
    large (a wide blur is smooth at that scale; at full size it takes seconds)."""
    sigma, (height, width) = 0.04 * image.shape[1], image.shape[:2]
    if width < 400:
        return cv2.GaussianBlur(image, (0, 0), sigma)
    small = cv2.resize(image, (width // 8, height // 8), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / 8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def darkened(image):
    return (image * 0.15).astype(np.uint8)


def brightened(image):
    return np.clip(image.astype(int) * 3 + 80, 0, 255).astype(np.uint8)


def corner_strip(image):
    height, width = image.shape[:2]
    return np.ascontiguousarray(image[: height // 4, : width // 2])


def white_frame(image):
    return np.full_like(image, 255)


DEGRADATIONS = [
    (blurred, "out_of_focus"),
    (darkened, "too_dark"),
    (brightened, "over_exposed"),
    (white_frame, "over_exposed"),
    (corner_strip, "no_field_of_view"),
]


def test_real_fundus_photo_is_gradable_at_any_scale_and_crop(retina):
    large = np.zeros((2000, 3000, 3), np.uint8)  # a large photo is not failed for its size
    large[50:1950, 550:2450] = cv2.resize(retina, (1900, 1900), interpolation=cv2.INTER_CUBIC)
    variants = {
        "full": retina,
        "224 px": cv2.resize(retina, (224, 224), interpolation=cv2.INTER_AREA),
        "cropped to its FOV": crop_fov(retina),
        "cut at top and bottom": np.ascontiguousarray(retina[200:-200]),
        "3000x2000": large,
        "PIL": Image.fromarray(retina),
    }
    for name, image in variants.items():
        verdict = assess_quality(image)
        assert verdict.gradable and verdict.issues == (), (name, verdict)
    # Margins, so that small changes of the photograph do not flip the verdict.
    m = assess_quality(retina).measures
    assert m["sharpness"] > 2 * quality.MIN_SHARPNESS
    assert (
        m["brightness"] > 3 * quality.MIN_BRIGHTNESS
        and m["luminance"] < 0.7 * quality.MAX_LUMINANCE
    )
    assert m["fov_edge_error"] < quality.MAX_EDGE_ERROR / 5 and m["fov_fill"] > 0.95
    assert m["red_share"] > quality.MIN_RED_SHARE + 0.1


def _filling_crop(retina: np.ndarray, across: float, down: float) -> np.ndarray:
    """The retina photograph cropped about its disc so the disc fills the frame: `across` and
    `down` are the frame's half-sides over the disc's radius; only the corners stay black."""
    x0, y0, x1, y1 = find_fov(retina)
    cx, cy, radius = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    w, h = int(radius * across), int(radius * down)
    assert math.hypot(w, h) > radius  # the corners lie outside the disc
    return np.ascontiguousarray(retina[int(cy - h) : int(cy + h), int(cx - w) : int(cx + w)])


@pytest.mark.parametrize("across, down", [(0.85, 0.6), (0.8, 0.65), (0.75, 0.7), (0.9, 0.9)])
def test_a_field_of_view_that_fills_the_frame_is_gradable(retina, across, down):
    crop = _filling_crop(retina, across, down)
    verdict = assess_quality(crop)
    assert verdict.gradable, verdict
    assert verdict.measures["fov_diameter"] > 1.1  # the circle is larger than the frame


def test_16_bit_and_float_versions_of_a_photo_get_its_verdict(retina, tmp_path):
    from dr_hf.data.photographs import open_photograph

    crop = _filling_crop(retina, 0.8, 0.65)
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "deep.png")
    Image.fromarray(gray.astype(np.float32) / 255, "F").save(tmp_path / "float.tiff")
    Image.fromarray(gray).save(tmp_path / "eight.png")
    verdicts = {
        name: assess_quality(open_photograph(tmp_path / name).image)
        for name in ("eight.png", "deep.png", "float.tiff")
    }
    assert verdicts["deep.png"].issues == verdicts["eight.png"].issues
    assert verdicts["float.tiff"].issues == verdicts["eight.png"].issues
    for name in ("deep.png", "float.tiff"):  # clipping would read over_exposed or too_dark
        for measure in ("brightness", "luminance"):
            assert verdicts[name].measures[measure] == pytest.approx(
                verdicts["eight.png"].measures[measure], abs=1
            )


def test_synthetic_fundus_photos_are_gradable(synthetic):
    assert len(synthetic) == 36
    for image in synthetic:
        verdict = assess_quality(image)
        assert verdict.gradable, (image.shape, verdict)


def test_photos_that_are_not_fundus_are_ungradable(skdata):
    photos = {
        "astronaut": skdata.astronaut(),
        "coffee": skdata.coffee(),
        "chelsea": skdata.chelsea(),
        "rocket": skdata.rocket(),
        "motorcycle": skdata.stereo_motorcycle()[0],
        "camera": cv2.cvtColor(skdata.camera(), cv2.COLOR_GRAY2RGB),
    }
    for name, photo in photos.items():
        verdict = assess_quality(photo)
        assert not verdict.gradable, (name, verdict)
        assert {"not_fundus", "no_field_of_view"} & set(verdict.issues), (name, verdict)
        assert "no_field_of_view" in verdict.issues, (name, verdict)  # none shows a round disc
        # Brown coffee and an orange cat are retina-coloured: only their shape tells them apart.
        if name not in ("coffee", "chelsea"):
            assert "not_fundus" in verdict.issues, (name, verdict)


@pytest.mark.parametrize("degrade, issue", DEGRADATIONS)
def test_degraded_real_photo_fails_with_the_right_reason(retina, degrade, issue):
    small = cv2.resize(retina, (224, 224), interpolation=cv2.INTER_AREA)
    for image in (retina, small, crop_fov(retina)):
        verdict = assess_quality(degrade(image))
        assert not verdict.gradable and issue in verdict.issues, verdict
        if degrade is not white_frame:  # which also has no field of view
            assert verdict.issues == (issue,), verdict


@pytest.mark.parametrize("degrade, issue", DEGRADATIONS)
def test_degraded_synthetic_photos_fail_with_the_right_reason(synthetic, degrade, issue):
    for image in synthetic[::3]:
        verdict = assess_quality(degrade(image))
        assert issue in verdict.issues, (image.shape, verdict)


def test_verdict_lists_issues_in_order_and_joins_them_for_csv(retina):
    white = assess_quality(np.full((120, 160, 3), 255, np.uint8))
    assert white.issues == ("no_field_of_view", "over_exposed") and not white.gradable
    assert quality_issues_text(white) == "no_field_of_view;over_exposed"
    good = assess_quality(retina)
    assert quality_issues_text(good) == ""
    assert set(good.measures) >= {"fov_diameter", "brightness", "sharpness", "red_share"}
    assert all(isinstance(value, float) for value in good.measures.values())
    assert QUALITY_ISSUES[0] == "no_field_of_view" and len(QUALITY_ISSUES) == 5


def test_other_modes_and_bad_input(retina):
    grey = Image.fromarray(retina).convert("L")
    assert assess_quality(grey).issues == ("not_fundus",)
    assert assess_quality(Image.fromarray(retina).convert("P")).gradable
    with pytest.raises(ValueError, match="uint8"):
        assess_quality(retina.astype(np.float32))
    with pytest.raises(ValueError, match="input side"):
        assess_quality(retina, size=0)


@pytest.mark.parametrize(
    "measure, value, issue",
    [
        ("fov_found", 0.0, "no_field_of_view"),
        ("fov_edge_error", 0.05, "no_field_of_view"),
        ("fov_fill", 0.7, "no_field_of_view"),
        ("fov_diameter", 0.2, "no_field_of_view"),
        ("fov_visible", 0.3, "no_field_of_view"),
        ("fov_fill", float("nan"), "no_field_of_view"),
        ("brightness", 30.0, "too_dark"),
        ("luminance", 230.0, "over_exposed"),
        ("clipped", 0.8, "over_exposed"),
        ("sharpness", 0.005, "out_of_focus"),
        ("red_share", 0.35, "not_fundus"),
        ("rgb_order", 0.3, "not_fundus"),
    ],
)
def test_each_threshold_of_the_table_decides_its_issue(retina, measure, value, issue):
    measures = dict(assess_quality(retina).measures)
    measures[measure] = value
    assert quality.verdict_from_measures(measures).issues == (issue,)


def test_predict_and_evaluate_report_gradeability(trained_run, synthetic_dir, skdata, tmp_path):
    """Every readable photograph gets its row and probabilities; the ungradable ones get no grade
    (retake or refer) unless `--grade-ungradable`; evaluate counts and lists them."""
    import csv
    import json
    import shutil

    from PIL import Image

    from dr_hf.cli import evaluate_main, predict_main

    best = trained_run[0] / "best"
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in sorted((synthetic_dir / "train_images").glob("*.png"))[:3]:
        shutil.copy(path, photos / path.name)
    Image.fromarray(skdata.astronaut()).save(photos / "person.png")
    Image.new("RGB", (300, 300), (255, 255, 255)).save(photos / "white.png")
    for flags in ([], ["--only-gradable"], ["--grade-ungradable"]):
        output = tmp_path / f"preds{flags}.csv"
        assert (
            predict_main([str(photos), "--model", str(best), "--output", str(output), *flags]) == 0
        )
        rows = {row["image"].rsplit("/", 1)[-1]: row for row in csv.DictReader(open(output))}
        assert len(rows) == 5 and all(row["prob_0"] for row in rows.values())
        assert (
            rows["person.png"]["gradable"] == "False" and rows["white.png"]["gradable"] == "False"
        )
        assert "not_fundus" in rows["person.png"]["quality_issues"]
        assert "over_exposed" in rows["white.png"]["quality_issues"]
        graded = {name for name, row in rows.items() if row["grade"] != ""}
        gradable = {name for name, row in rows.items() if row["gradable"] == "True"}
        assert len(gradable) == 3
        assert graded == (set(rows) if flags == ["--grade-ungradable"] else gradable)
        for name in set(rows) - graded:
            assert rows[name]["grade_name"] == "ungradable" and rows[name]["referable"] == ""
            assert rows[name]["decision"] == "retake or refer"

    report = tmp_path / "report"
    argv = ["--model", str(best), "--data", str(synthetic_dir), "--output", str(report)]
    assert evaluate_main([*argv, "--bootstrap", "0"]) == 0
    metrics = json.loads((report / "metrics.json").read_text())
    gradeability = metrics["gradeability"]
    assert gradeability["num_gradable"] + gradeability["num_ungradable"] == metrics["num_images"]
    assert gradeability["num_gradable"] == 60 and gradeability["ungradable"] == []
    assert gradeability["gradable_metrics"]["qwk"] == pytest.approx(metrics["qwk"])
    header = next(csv.reader(open(report / "predictions.csv")))
    assert header[-2:] == ["gradable", "quality_issues"]
