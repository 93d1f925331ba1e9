"""Opening a photograph file the way every path does (training checks, `predict`, `evaluate`, the
demo, the processor): whatever a camera, a phone or an archive hands over becomes an 8-bit RGB
image, or a `PhotographError` that says in plain words what is wrong with the file.

- Orientation: the EXIF orientation tag is applied (a phone's portrait JPEG stands upright).
- Several frames (animated GIF, multi-page TIFF): the first frame is graded, and a note says so.
- Depth, transparency and colour modes: `preprocessing.to_rgb`, which the processor applies too
  (16-bit and float images scaled, not clipped; transparency on black; CMYK, palette, grayscale
  to RGB).
- Size: Pillow's decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`, about 179 million pixels
  before it refuses) is kept, so a few-KB file that claims 20000x20000 pixels is refused before
  any pixel is decoded; memory stays bounded by that limit (3 bytes a pixel).
"""

import io
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from dr_hf.data.preprocessing import to_rgb


class PhotographError(ValueError):
    """A file that cannot be graded, with the reason in plain words (the file is named)."""


@dataclass
class Photograph:
    """An 8-bit RGB image and what was done to make it one (`notes`, e.g. the frame taken)."""

    image: Image.Image
    notes: list[str] = field(default_factory=list)


def _name(source) -> str:
    return str(source) if isinstance(source, (str, Path)) else "the uploaded image"


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
