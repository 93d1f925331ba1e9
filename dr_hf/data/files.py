"""Image files on disk: extensions, indexing a folder, resolving ids to paths, decode errors.

A label CSV names its images by id, with or without an extension and in any case; the folder is
listed once (`index_images`) and every id is looked up in that index, so a missing or ambiguous
id is reported with its row instead of surfacing as an error deep inside a DataLoader.
"""

import os
from pathlib import Path

from PIL import Image as PILImage

from dr_hf.errors import DataError, listing

# Formats Pillow reads that cameras, phones and archives produce; other files in a folder are
# reported as skipped, never read.
IMAGE_EXTENSIONS = tuple(
    ".png .jpg .jpeg .jpe .tif .tiff .bmp .gif .webp .ppm .pgm .jp2 .j2k .dib".split()
)
# What PIL raises on a file it cannot decode: truncated or corrupted data (OSError, SyntaxError),
# impossible header values (ValueError) and images above PIL's decompression-bomb pixel limit.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, PILImage.DecompressionBombError)


def index_images(folder: Path) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """Images directly in `folder`, by lower-case file name and by lower-case stem."""
    by_name: dict[str, list[Path]] = {}
    by_stem: dict[str, list[Path]] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            path = Path(entry.path)
            if path.suffix.lower() in IMAGE_EXTENSIONS and entry.is_file():
                by_name.setdefault(path.name.lower(), []).append(path)
                by_stem.setdefault(path.stem.lower(), []).append(path)
    return by_name, by_stem


def holds_images(folder: Path) -> bool:
    """Whether `folder` directly holds an image; stops at the first, unlike `index_images`."""
    with os.scandir(folder) as entries:
        return any(
            Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS and entry.is_file()
            for entry in entries
        )


def strip_image_extension(image_id: str) -> str:
    """`abc.png` -> `abc`; ids without an image extension stay as they are."""
    stem, extension = os.path.splitext(image_id)
    return stem if extension.lower() in IMAGE_EXTENSIONS else image_id


def resolve_images(ids: list[str], rows: list[str], folder: Path, where: str) -> list[str]:
    """Absolute path of each id's image in `folder` (extension found on disk, any case)."""
    by_name, by_stem = index_images(folder)
    paths, missing, ambiguous = [], [], []
    for image_id, row in zip(ids, rows):
        has_extension = strip_image_extension(image_id) != image_id
        found = (by_name if has_extension else by_stem).get(image_id.lower(), [])
        if len(found) == 1:
            paths.append(str(found[0].resolve()))
        elif found:
            ambiguous.append(f"{row}: {image_id!r} -> {', '.join(sorted(p.name for p in found))}")
        else:
            missing.append(f"{row}: {image_id!r}")
    if missing:
        raise DataError(
            f"{where}: {len(missing)} of {len(ids)} image(s) not found in {folder} "
            f"(extensions tried: {', '.join(IMAGE_EXTENSIONS)}):\n{listing(missing)}\n"
            "Add the files, remove these rows, or pass the right image_dir / validation_image_dir."
        )
    if ambiguous:
        raise DataError(
            f"{where}: {len(ambiguous)} id(s) match several files in {folder}:\n"
            f"{listing(ambiguous)}\nKeep one file per id or write the extension in the CSV."
        )
    return paths


__all__ = [
    "DECODE_ERRORS",
    "IMAGE_EXTENSIONS",
    "holds_images",
    "index_images",
    "resolve_images",
    "strip_image_extension",
]
