import numpy as np
import pytest
from PIL import Image

from dr_hf.data.preprocessing import (
    ben_graham_normalise,
    crop_fov,
    find_fov,
    inscribed_disc,
    preprocess_fundus,
)
from dr_hf.data.synthetic import FundusGeometry, render_fundus

APTOS_W, APTOS_H = 3000, 2000


@pytest.fixture(scope="module")
def aptos_photo():
    """A full-size APTOS-like photograph whose disc is cut by the frame at top and bottom."""
    geo = FundusGeometry(cx=1480, cy=1010, radius=1120)
    image, _ = render_fundus(3, APTOS_W, APTOS_H, np.random.default_rng(7), geometry=geo)
    return image, geo


@pytest.fixture(scope="module")
def small_photo():
    image, geo = render_fundus(2, 320, 240, np.random.default_rng(1))
    assert geo.cy - geo.radius >= 0 and geo.cy + geo.radius < 240  # a whole disc
    return image, geo


def assert_box_close(found, expected, tol):
    assert np.abs(np.array(found) - np.array(expected)).max() <= tol, (found, expected)


def test_find_fov_on_full_size_photo_cut_by_frame(aptos_photo):
    image, geo = aptos_photo
    box = find_fov(image)
    assert_box_close(box, geo.box(APTOS_W, APTOS_H), tol=4)
    assert box[1] == 0 and box[3] == APTOS_H


def test_crop_fov_on_full_size_photo(aptos_photo):
    image, geo = aptos_photo
    x0, y0, x1, y1 = find_fov(image)
    cropped = crop_fov(image)
    assert cropped.shape == (y1 - y0, x1 - x0, 3)
    assert abs(cropped.shape[1] - (2 * geo.radius + 1)) <= 8


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_find_fov_on_small_photos(seed):
    image, geo = render_fundus(seed % 5, 256, 200, np.random.default_rng(seed))
    assert_box_close(find_fov(image), geo.box(256, 200), tol=2)


def test_find_fov_on_dark_noisy_photo(small_photo):
    image, geo = small_photo
    rng = np.random.default_rng(0)
    dark = image.astype(float) * 0.15 + rng.normal(0, 2, image.shape)
    dark = np.clip(dark, 0, 255).astype(np.uint8)
    assert dark.max() < 60
    assert_box_close(find_fov(dark), geo.box(320, 240), tol=3)


def test_find_fov_on_strongly_vignetted_photo(small_photo):
    image, geo = small_photo
    ys, xs = np.ogrid[:240, :320]
    dist = np.minimum(np.sqrt((xs - geo.cx) ** 2 + (ys - geo.cy) ** 2) / geo.radius, 1)
    dim = (image * (1 - 0.8 * dist**2)[..., None]).astype(
        np.uint8
    )  # the rim at a tenth of the centre
    assert_box_close(find_fov(dim), geo.box(320, 240), tol=2)


def test_find_fov_ignores_hot_pixels_and_grey_background(small_photo):
    image, geo = small_photo
    rng = np.random.default_rng(0)
    noisy = np.clip(image.astype(int) + 12, 0, 255).astype(np.uint8)  # a grey, not black, surround
    ys, xs = rng.integers(0, 240, 600), rng.integers(0, 320, 600)
    noisy[ys, xs] = 255
    assert_box_close(find_fov(noisy), geo.box(320, 240), tol=3)


def test_find_fov_explicit_threshold(small_photo):
    image, geo = small_photo
    assert_box_close(find_fov(image, threshold=20), geo.box(320, 240), tol=3)


def test_blank_or_full_frames_return_the_full_box():
    assert find_fov(np.zeros((90, 120, 3), np.uint8)) == (0, 0, 120, 90)
    assert find_fov(np.full((2000, 3000, 3), 3, np.uint8)) == (0, 0, 3000, 2000)
    assert find_fov(np.full((64, 64, 3), 150, np.uint8)) == (0, 0, 64, 64)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        find_fov(np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        crop_fov(np.zeros((32, 32, 3), np.float32))


def disc_mask(image: np.ndarray) -> np.ndarray:
    """The disc Ben Graham normalises within: the one inscribed in the field-of-view box."""
    return inscribed_disc(image.shape, find_fov(image))


def test_fov_mask_matches_drawn_disc(small_photo):
    image, geo = small_photo
    ys, xs = np.ogrid[:240, :320]
    drawn = (xs - geo.cx) ** 2 + (ys - geo.cy) ** 2 <= geo.radius**2
    assert (disc_mask(image) != drawn).mean() < 0.01


def test_ben_graham_centres_colours_inside_the_disc(small_photo):
    image, geo = small_photo
    out = ben_graham_normalise(image)
    assert out.shape == image.shape and out.dtype == np.uint8
    ys, xs = np.ogrid[:240, :320]
    dist = np.sqrt((xs - geo.cx) ** 2 + (ys - geo.cy) ** 2) / geo.radius
    assert abs(out[dist <= 0.8].mean() - 128) < 10
    assert abs(image[dist <= 0.8].mean() - 128) > 20  # the input was not grey already
    assert abs(out[(dist > 0.9) & (dist < 0.96)].mean() - 128) < 6  # no bright halo at the rim
    assert out[:3, :3].max() == 0  # outside the disc stays black
    assert ben_graham_normalise(image, mask_outside=False)[:3, :3].min() >= 100
    assert not np.array_equal(ben_graham_normalise(image, sigma=2.0), out)


def test_ben_graham_after_crop_keeps_corners_black(aptos_photo):
    cropped = crop_fov(aptos_photo[0])
    out = ben_graham_normalise(cropped)
    h, w = out.shape[:2]
    assert out[:20, :20].max() == 0 and out[-20:, -20:].max() == 0
    assert abs(out[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3].mean() - 128) < 10


def test_fov_mask_of_disc_cut_at_the_top():
    geo = FundusGeometry(cx=100, cy=70, radius=90)
    image, _ = render_fundus(0, 200, 200, np.random.default_rng(4), geometry=geo)
    ys, xs = np.ogrid[:200, :200]
    drawn = (xs - geo.cx) ** 2 + (ys - geo.cy) ** 2 <= geo.radius**2
    assert find_fov(image)[1] == 0
    assert (disc_mask(image) != drawn).mean() < 0.01


def test_preprocess_fundus_keywords(small_photo):
    image, geo = small_photo
    np.testing.assert_array_equal(preprocess_fundus(image, crop=False, ben_graham=False), image)
    np.testing.assert_array_equal(preprocess_fundus(image), crop_fov(image))
    both = preprocess_fundus(image, crop=True, ben_graham=True)
    assert both.shape == crop_fov(image).shape
    np.testing.assert_array_equal(both, ben_graham_normalise(crop_fov(image)))
    centre = both[
        both.shape[0] // 3 : 2 * both.shape[0] // 3, both.shape[1] // 3 : 2 * both.shape[1] // 3
    ]
    assert abs(centre.mean() - 128) < 12


def test_preprocess_fundus_keeps_a_cut_disc_round():
    """A disc cut by the frame is resized keeping its aspect ratio before Ben Graham's mask:
    squeezed to a square it lost a further 7 % of its pixels to the black outside."""
    geo = FundusGeometry(cx=450, cy=300, radius=350)  # cut at top and bottom
    image, _ = render_fundus(2, 900, 600, np.random.default_rng(5), geometry=geo)
    out = preprocess_fundus(Image.fromarray(image), crop=True, ben_graham=True, size=224)
    x0, _, x1, _ = find_fov(image)
    assert out.shape[0] == 224 and out.shape[1] == round(224 * (x1 - x0) / 600)
    ys, xs = np.ogrid[:600, x0:x1]
    inside = (xs - geo.cx) ** 2 + (ys - geo.cy) ** 2 <= (0.98 * geo.radius) ** 2
    assert abs((out.max(axis=2) == 0).mean() - (1 - inside.mean())) < 0.02


@pytest.mark.parametrize("mode", ["RGB", "P", "L"])
def test_preprocess_fundus_reduces_pil_images_of_any_mode(small_photo, mode):
    image = Image.fromarray(np.repeat(np.repeat(small_photo[0], 4, axis=0), 4, axis=1))
    image = image.quantize(colors=64) if mode == "P" else image.convert(mode)
    out = preprocess_fundus(image, crop=True, size=100)  # 960x1280 reduced 5x, cropped to ~100
    assert out.dtype == np.uint8 and out.shape[2] == 3 and min(out.shape[:2]) == 100
    with pytest.raises(TypeError, match="PIL image"):
        preprocess_fundus("photo.png")
