"""Odd and hostile photograph files: each becomes an upright 8-bit RGB image or a PhotographError
that names the file; deeper images are scaled, not clipped."""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from dr_hf.data.photographs import PhotographError, open_photograph
from dr_hf.data.preprocessing import as_rgb_array, to_rgb


@pytest.fixture(scope="module")
def retina() -> np.ndarray:
    """scikit-image's real fundus photograph, reduced to 256 px (uint8 RGB)."""
    return np.asarray(Image.fromarray(data.retina()).resize((256, 256), Image.BOX))


def _save(image: Image.Image, path, **kwargs):
    image.save(path, **kwargs)
    return path


def _gray16(retina: np.ndarray) -> np.ndarray:
    return (np.asarray(Image.fromarray(retina).convert("L")).astype(np.uint16) * 257).astype(
        np.uint16
    )


def test_16_bit_grayscale_png_is_scaled_not_clipped(retina, tmp_path):
    gray = np.asarray(Image.fromarray(retina).convert("L"))
    path = _save(Image.fromarray(_gray16(retina)), tmp_path / "deep.png")
    with Image.open(path) as opened:
        assert opened.mode.startswith("I")  # Pillow reads it as a 16-bit image
    photo = open_photograph(path)
    array = np.asarray(photo.image)
    assert photo.image.mode == "RGB" and array.dtype == np.uint8
    assert np.abs(array[..., 0].astype(int) - gray).max() <= 1  # clipping would make it white
    assert array.mean() < 200 and any("scaled" in note for note in photo.notes)


def test_float_tiff_in_unit_range_is_scaled(retina, tmp_path):
    gray = np.asarray(Image.fromarray(retina).convert("L"))
    path = _save(Image.fromarray((gray / 255.0).astype(np.float32), "F"), tmp_path / "f.tiff")
    array = np.asarray(open_photograph(path).image)
    assert np.abs(array[..., 1].astype(int) - gray).max() <= 1  # not all-black (too_dark)


def test_float_image_beyond_one_is_scaled_by_its_maximum():
    image = Image.fromarray(np.array([[0.0, 500.0, 1000.0]], dtype=np.float32), "F")
    assert np.asarray(to_rgb(image))[0, :, 0].tolist() == [0, 128, 255]


def test_transparency_is_black_and_modes_become_rgb(retina, tmp_path):
    rgba = Image.fromarray(retina).convert("RGBA")
    alpha = np.full(retina.shape[:2], 255, np.uint8)
    alpha[:, :64] = 0
    rgba.putalpha(Image.fromarray(alpha))
    array = np.asarray(open_photograph(_save(rgba, tmp_path / "a.png")).image)
    assert array[:, :64].max() == 0 and np.array_equal(array[:, 64:], retina[:, 64:])
    palette = Image.fromarray(retina).convert("P", palette=Image.Palette.ADAPTIVE)
    cmyk = Image.fromarray(retina).convert("CMYK")
    for name, image, kwargs in [("p.png", palette, {}), ("c.jpg", cmyk, {"quality": 95})]:
        photo = open_photograph(_save(image, tmp_path / name, **kwargs))
        assert photo.image.mode == "RGB" and photo.image.size == (256, 256)
        assert np.abs(np.asarray(photo.image).astype(int) - retina).mean() < 12


def test_animated_gif_grades_the_first_frame_and_says_so(retina, tmp_path):
    frames = [Image.fromarray(retina), Image.fromarray(255 - retina)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    photo = open_photograph(path)
    assert photo.notes == ["first of 2 frames graded"]
    assert np.abs(np.asarray(photo.image).astype(int) - retina).mean() < 20  # not the negative


def test_exif_orientation_is_applied(retina, tmp_path):
    wide = Image.fromarray(retina[:, :200])  # 200 wide, 256 high
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: show it turned 90 degrees clockwise
    path = _save(wide, tmp_path / "phone.jpg", exif=exif, quality=95)
    assert open_photograph(path).image.size == (256, 200)


@pytest.mark.parametrize("size", [(1, 1), (4000, 20)])
def test_tiny_and_sliver_images_decode(size, tmp_path):
    path = _save(Image.new("RGB", size, (90, 30, 10)), tmp_path / "odd.png")
    assert open_photograph(path).image.size == size


def _bomb_png(side: int) -> bytes:
    """A valid PNG header claiming side x side 8-bit gray pixels, with one tiny IDAT chunk."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_is_refused_in_our_words(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_bomb_png(20000))
    assert path.stat().st_size < 1000
    with pytest.raises(PhotographError, match=r"bomb\.png is too large to decode safely"):
        open_photograph(path)


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("empty.jpg", b"", "is empty"),
        ("notes.jpg", b"patient notes, not a photograph\n" * 20, "not an image"),
    ],
)
def test_files_that_are_not_photographs(name, content, reason, tmp_path):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(PhotographError, match=rf"{name}.*{reason}"):
        open_photograph(path)


def test_truncated_files_are_reported_as_cut_short(retina, tmp_path):
    for name in ("cut.png", "cut.jpg"):
        buffer = io.BytesIO()
        Image.fromarray(retina).save(buffer, format="PNG" if name.endswith("png") else "JPEG")
        path = tmp_path / name
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        with pytest.raises(PhotographError, match=rf"{name} could not be decoded.*cut short"):
            open_photograph(path)


def test_training_and_the_processor_scale_deep_images_too(retina):
    """A 16-bit image as `datasets` decodes it reaches `as_rgb_array` (training, the processor)
    in mode I;16: it is scaled there as well, and the processor's input matches the 8-bit one."""
    from dr_hf.data.fundus_processor import FundusImageProcessor

    gray = Image.fromarray(retina).convert("L")
    deep = Image.fromarray(np.asarray(gray).astype(np.uint16) * 257)
    assert np.abs(as_rgb_array(deep).astype(int) - as_rgb_array(gray).astype(int)).max() <= 1
    processor = FundusImageProcessor(size=64)
    eight = processor(gray, return_tensors="np")["pixel_values"]
    sixteen = processor(deep, return_tensors="np")["pixel_values"]
    assert np.abs(eight - sixteen).max() < 0.05


# ---- Through `predict`: each odd file gets a grade with its verdict, or its own error row ------


def _odd_files(folder, retina: np.ndarray) -> dict[str, str]:
    """Odd and hostile files, each with what `predict` must do with it: "graded" or "error"."""
    folder.mkdir()
    image = Image.fromarray(retina)
    gray = image.convert("L")
    image.convert("CMYK").save(folder / "cmyk.jpg", quality=90)
    Image.fromarray(np.asarray(gray).astype(np.uint16) * 257).save(folder / "deep16.png")
    Image.fromarray((np.asarray(gray) / 255).astype(np.float32), "F").save(folder / "float.tiff")
    image.convert("RGBA").save(folder / "rgba.png")
    image.convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    image.save(folder / "anim.gif", save_all=True, append_images=[image.rotate(90)])
    image.save(folder / "photo.webp")
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(folder / "rotated.jpg", exif=exif)
    Image.new("RGB", (1, 1), (80, 20, 10)).save(folder / "one.png")
    Image.new("RGB", (4000, 20), (80, 20, 10)).save(folder / "sliver.png")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not a photograph\n" * 10)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    (folder / "cut.png").write_bytes(buffer.getvalue()[:2000])
    (folder / "bomb.png").write_bytes(_bomb_png(20000))
    (folder / "readme.txt").write_text("skipped by extension")
    graded = ["cmyk.jpg", "deep16.png", "float.tiff", "rgba.png", "palette.png", "anim.gif"]
    graded += ["photo.webp", "rotated.jpg", "one.png", "sliver.png"]
    errors = ["empty.jpg", "notes.jpg", "cut.png", "bomb.png"]
    return {name: "graded" for name in graded} | {name: "error" for name in errors}


def test_predict_grades_odd_files_or_reports_each(trained_run, retina, tmp_path, caplog):
    from dr_hf.inference import predict

    folder = tmp_path / "odd"
    expected = _odd_files(folder, retina)
    output_dir, _ = trained_run
    with caplog.at_level("WARNING"):
        result = predict(output_dir / "best", [folder], device="cpu", progress=False)
    rows = {Path(row["image"]).name: row for row in result.records()}
    assert set(rows) == set(expected)  # every photograph has its row; readme.txt is not one
    for name, outcome in expected.items():
        row = rows[name]
        if outcome == "graded":
            assert row["error"] == "" and row["gradable"] in (True, False), row
            if row["gradable"]:
                assert row["grade"] in range(5), row
            else:  # judged ungradable: no grade, retake or refer
                assert row["grade"] == "" and row["decision"] == "retake or refer", row
            assert abs(sum(row[f"prob_{g}"] for g in range(5)) - 1) < 1e-4
        else:
            assert row["error"] and name in row["error"], row
    assert "too large to decode safely" in rows["bomb.png"]["error"]
    assert "readme.txt" in caplog.text and "skipped" in caplog.text
    assert "anim.gif: first of 2 frames graded" in caplog.text
    # Deep images are graded as their 8-bit original is, not clipped white or black.
    assert rows["deep16.png"]["gradable"] == rows["float.tiff"]["gradable"]
    assert not {"over_exposed", "too_dark"} & set(rows["deep16.png"]["quality_issues"].split(";"))


def test_training_sees_an_exif_rotated_photo_upright_as_predict_does(retina, tmp_path):
    """`datasets` decodes without applying the EXIF orientation; `as_rgb_array` (training, the
    processor) applies it, once: the same array as `open_photograph`'s upright image."""
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    Image.fromarray(retina[:, :200]).save(path, exif=exif, quality=95)
    with Image.open(path) as stored:  # as datasets hands it over: stored sideways
        assert stored.size == (200, 256)
        training = as_rgb_array(stored)
    upright = open_photograph(path).image
    assert training.shape == (200, 256, 3)
    assert np.array_equal(training, np.asarray(upright))
    assert np.array_equal(as_rgb_array(upright), np.asarray(upright))  # not turned twice


def test_the_demo_grades_odd_files_or_says_why(trained_run, retina, tmp_path):
    """The demo's grading functions (what the page calls) on every odd file: an answer for each,
    the same outcome as `predict`, never an exception; the batch table has a row per file."""
    from dr_hf.demo.grading import grade_photo, grade_photos
    from dr_hf.inference import load_grader

    folder = tmp_path / "odd"
    expected = _odd_files(folder, retina)
    output_dir, _ = trained_run
    grader = load_grader(output_dir / "best", device="cpu")
    for name, outcome in expected.items():
        answer = grade_photo(grader, str(folder / name), None)
        if outcome == "error":
            assert answer.error and name in answer.summary, name
        else:
            assert not answer.error and answer.model_view is not None, (name, answer.error)
    table, csv_path, _ = grade_photos(
        grader, [str(folder / name) for name in expected], tmp_path / "tables"
    )
    assert sorted(Path(image).name for image in table["image"]) == sorted(expected)
    assert Path(csv_path).is_file()
