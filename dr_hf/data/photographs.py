"""Opening a photograph file the way every path does (training checks, `predict`, `evaluate`, the
demo, the processor): whatever a camera, a phone or an archive hands over becomes an 8-bit RGB
image, or a `PhotographError` that says in plain words what is wrong with the file.

- Orientation: the EXIF orientation tag is applied (a phone's portrait JPEG stands upright).
- Several frames (animated GIF, multi-page TIFF): the first frame is graded, and a note says so.
- Depth: 16-bit and 32-bit integer images are scaled from their type's range, float images from
  [0, 1] (or from 0 to their maximum when they exceed 1); nothing is clipped to white.
- Transparency (RGBA, LA, palette with a transparent colour): composited on black, the colour
  outside a fundus camera's field of view.
- CMYK, YCbCr, palette, 1-bit and grayscale: converted to RGB.
- Size: Pillow's decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`, about 179 million pixels
  before it refuses) is kept, so a few-KB file that claims 20000x20000 pixels is refused before
  any pixel is decoded; memory stays bounded by that limit (3 bytes a pixel).
"""

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Formats Pillow reads that cameras, phones and archives produce; a folder's other files are
# reported as skipped by extension, never read silently.
PHOTOGRAPH_EXTENSIONS = tuple(
    ".png .jpg .jpeg .jpe .tif .tiff .bmp .gif .webp .ppm .pgm .jp2 .j2k .dib".split()
)


class PhotographError(ValueError):
    """A file that cannot be graded, with the reason in plain words (the file is named)."""


@dataclass
class Photograph:
    """An 8-bit RGB image and what was done to make it one (`notes`, e.g. the frame taken)."""

    image: Image.Image
    notes: list[str] = field(default_factory=list)


def _name(source) -> str:
    return str(source) if isinstance(source, (str, Path)) else "the uploaded image"


def to_rgb(image: Image.Image, notes: list[str] | None = None) -> Image.Image:
    """An image of any mode as 8-bit RGB: scaled (not clipped) from deeper types, transparency
    composited on black. `notes`, when given, gets a line for each change a reader should know."""
    notes = notes if notes is not None else []
    if image.mode in ("RGB", "L"):
        return image.convert("RGB") if image.mode == "L" else image
    if image.mode.startswith("I") or image.mode == "F":
        array = np.asarray(image).astype(np.float64)
        if image.mode == "F":
            top = 1.0 if array.size == 0 or np.nanmax(array) <= 1.0 else float(np.nanmax(array))
            notes.append(f"float image scaled from [0, {top:g}] to 8 bits")
        else:
            top = 65535.0 if array.size == 0 or array.max() <= 65535 else float(array.max())
            notes.append(f"{image.mode} image scaled from [0, {top:g}] to 8 bits")
        scaled = np.clip(np.nan_to_num(array) / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, "L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:
            notes.append("transparent pixels shown as black")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return image.convert("RGB")


def open_photograph(source: str | Path | bytes) -> Photograph:
    """Decode a file (a path or its bytes) into an upright 8-bit RGB `Photograph`.

    Raises `PhotographError` naming the file for an empty, truncated or unreadable file, a file
    that is not an image, and one over Pillow's decompression-bomb limit.
    """
    name = _name(source)
    if (
        isinstance(source, (str, Path))
        and Path(source).is_file()
        and Path(source).stat().st_size == 0
    ):
        raise PhotographError(f"{name} is empty (0 bytes): copy the photograph again.")
    if isinstance(source, bytes) and not source:
        raise PhotographError(f"{name} is empty (0 bytes).")
    notes: list[str] = []
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as opened:
            frames = getattr(opened, "n_frames", 1)
            if frames > 1:
                opened.seek(0)
                notes.append(f"first of {frames} frames graded")
            upright = ImageOps.exif_transpose(opened)
            upright.load()
            return Photograph(to_rgb(upright, notes), notes)
    except Image.DecompressionBombError as error:
        raise PhotographError(
            f"{name} is too large to decode safely ({error}). If it is a real photograph, resize "
            "it, or raise PIL.Image.MAX_IMAGE_PIXELS in the program that calls dr_hf."
        ) from error
    except UnidentifiedImageError as error:
        raise PhotographError(
            f"{name} is not an image Pillow can read (a different file type with an image's "
            "extension, or a damaged header)."
        ) from error
    except FileNotFoundError as error:
        raise PhotographError(f"{name} does not exist.") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise PhotographError(
            f"{name} could not be decoded: {error}. It is probably cut short or damaged: copy "
            "it again from the camera or archive."
        ) from error
