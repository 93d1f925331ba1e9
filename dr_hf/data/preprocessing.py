"""Fundus photograph preprocessing: field-of-view crop and Ben Graham colour normalisation.

Images are RGB uint8 arrays of shape (H, W, 3), in and out; `preprocess_fundus`, the pipeline
that `dr-hf prepare` and the on-the-fly transform share, also takes PIL images.
`dr_hf.data.fundus_processor` builds a model's `pixel_values` from these steps.

This file is copied into every saved model folder beside the processor (`fundus_processor.py`),
so that plain transformers can preprocess as dr_hf does: it imports only NumPy, Pillow and OpenCV.
"""

from typing import Any

import numpy as np
from PIL import Image, ImageOps

try:
    import cv2
except ImportError as error:  # a model folder used without dr_hf's dependencies
    raise ImportError(
        "Fundus preprocessing (the field-of-view crop) needs OpenCV: pip install "
        "opencv-python-headless"
    ) from error


_WORK_SIDE = 512  # the field of view is located on a copy this long, then refined at full size
_MIN_CONTRAST = 4  # grey levels between background and disc below which no disc is assumed
# PIL images first shrink toward this many times the output side: the crop then runs on far
# fewer pixels and the disc, usually most of the frame, keeps enough of them.
_REDUCE_MARGIN = 2
_ORIENTATION = 0x0112  # the EXIF tag


def check_rgb(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise ValueError(f"Expected an RGB image of shape (H, W, 3), got {shape}.")
    if image.dtype != np.uint8:
        raise ValueError(f"Expected a uint8 RGB image, got dtype {image.dtype}: convert it first.")


def brightness(image: np.ndarray) -> np.ndarray:
    # The brightest channel: fundus discs are red-dominant, so grey levels would waste contrast.
    return cv2.max(cv2.max(image[..., 0], image[..., 1]), image[..., 2])


def levels(small: np.ndarray) -> tuple[float, float]:
    """Background and disc brightness: the peak of the darker class Otsu's method separates
    (a vignetted rim can outnumber the black corners, so not its median) and the brighter
    class's median."""
    otsu, _ = cv2.threshold(small, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    dark, bright = small[small <= otsu], small[small > otsu]
    if bright.size == 0 or dark.size == 0:
        return float(small.min()), float(small.max())
    return float(np.bincount(dark).argmax()), float(np.median(bright))


def _largest_component(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return None
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h = (int(v) for v in stats[best, :4])
    return x, y, x + w, y + h


def _refine_edge(bright: np.ndarray, edge: int, window: int, threshold: float, lead: bool) -> int:
    """Place one box edge to the pixel on full-resolution profiles near its coarse position.

    `bright` holds lines (rows) perpendicular to the edge's axis, ordered along it. The edge sits
    where a line first holds a few pixels brighter than halfway between the local background and
    the local rim brightness, so a dim, vignetted rim is located as well as a bright one.
    """
    n = bright.shape[0]
    lo, hi = max(0, edge - window), min(n, edge + window)
    if hi <= lo:
        return edge
    # Smoothing along the lines quiets noise but hardly moves the edge, where the disc is flat.
    strip = cv2.blur(bright[lo:hi].astype(np.float32), (15, 1))
    above = strip > threshold
    if not above.any() or above.all():
        return edge
    level = (float(np.median(strip[~above])) + float(np.median(strip[above]))) / 2
    counts = (strip > max(level, threshold)).sum(axis=1)
    inside = np.flatnonzero(counts >= 2)
    if inside.size == 0:
        return edge
    return lo + int(inside[0]) if lead else lo + int(inside[-1]) + 1


def find_fov(image: np.ndarray, threshold: int | None = None) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1), ends exclusive, of the circular field of view.

    The disc is found on a copy whose longest side is 512 pixels. Otsu's method separates the
    background from the disc; the threshold lies a tenth of the way from the background level to
    the disc level, and above the noise, so dark and vignetted photographs work as well as bright
    ones (`threshold`, in grey levels of the brightest channel, overrides it). The largest
    connected region is the disc, which ignores specks and labels. Each edge is then refined on
    full-resolution pixels near it, so a 3000-pixel photo costs about 20 ms. A disc cut by the
    frame spans the full height. With no disc (a blank frame, or retina everywhere) the full
    frame is returned.
    """
    check_rgb(image)
    box = locate_fov(image, threshold)
    return box or (0, 0, image.shape[1], image.shape[0])


def locate_fov(image: np.ndarray, threshold: float | None) -> tuple[int, int, int, int] | None:
    height, width = image.shape[:2]
    scale = max(height, width) / _WORK_SIDE
    # Brightness is taken before downscaling so that both stages see the same background level.
    bright = cv2.medianBlur(brightness(image), 3)  # drops isolated hot pixels
    if scale > 1:
        size = (max(1, round(width / scale)), max(1, round(height / scale)))
        small = cv2.medianBlur(cv2.resize(bright, size, interpolation=cv2.INTER_AREA), 3)
    else:
        small, scale = bright, 1.0
    background, disc = levels(small)
    if threshold is None:
        if disc - background < _MIN_CONTRAST or background > 0.3 * disc:
            return None
        # Neighbour differences measure the noise left after the median filter.
        noise = np.median(np.abs(np.diff(small.astype(np.int16), axis=1))) / 0.954
        threshold = background + max(0.1 * (disc - background), 4 * noise, _MIN_CONTRAST / 2)
    mask = cv2.morphologyEx(
        (small > threshold).astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)
    )
    coarse = _largest_component(mask)
    if coarse is None:
        return None
    sx = width / small.shape[1]
    sy = height / small.shape[0]
    x0, y0, x1, y1 = (
        round(coarse[0] * sx),
        round(coarse[1] * sy),
        round(coarse[2] * sx),
        round(coarse[3] * sy),
    )
    window = int(np.ceil(2 * scale)) + 2
    k = max(3, int(np.ceil(scale)) | 1)  # average at least as much as the coarse search did
    bright = cv2.blur(bright, (k, k))
    # Profiles only span the coarse box's other axis, so noise and labels outside it don't count.
    columns = bright[y0:y1].T
    rows = bright[:, x0:x1]
    x0 = _refine_edge(columns, x0, window, threshold, lead=True)
    x1 = _refine_edge(columns, x1, window, threshold, lead=False)
    y0 = _refine_edge(rows, y0, window, threshold, lead=True)
    y1 = _refine_edge(rows, y1, window, threshold, lead=False)
    return x0, y0, x1, y1


def crop_fov(image: np.ndarray) -> np.ndarray:
    """The image cropped to its field of view (see `find_fov`)."""
    x0, y0, x1, y1 = find_fov(image)
    return np.ascontiguousarray(image[y0:y1, x0:x1])


def inscribed_disc(
    shape: tuple[int, ...], box: tuple[int, int, int, int] | None, fraction: float = 1.0
) -> np.ndarray:
    """The ellipse inscribed in the box, shrunk by `fraction`; all True without a box.

    A box on the frame's top or bottom edge holds a cut disc: its width is the diameter and the
    centre is placed from the uncut side (from the middle when both are cut).
    """
    if box is None:
        return np.ones(shape[:2], bool)
    x0, y0, x1, y1 = box
    rx, ry = (x1 - x0) / 2, (y1 - y0) / 2
    cx, cy = (x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2
    if y0 == 0 or y1 == shape[0]:
        ry = rx
        if y0 > 0:
            cy = y0 + rx - 0.5
        elif y1 < shape[0]:
            cy = y1 - rx - 0.5
    ys, xs = np.ogrid[: shape[0], : shape[1]]
    return ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= fraction**2


def ben_graham_normalise(
    image: np.ndarray,
    sigma: float | None = None,
    mask_outside: bool = True,
    box: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """Ben Graham's colour normalisation (Kaggle DR 2015): `4*img - 4*blur(img, sigma) + 128`.

    Subtracting the local average colour removes lighting and pigment differences between
    photographs and leaves vessels and lesions on a grey background. Graham blurred with
    sigma = radius / 30 (photos rescaled to a 300-pixel radius), which is the default here, the
    radius being half the field of view's width (min(h, w) / 2 without one).

    With `mask_outside` the average is taken over the field of view only (a blur of the image
    times the mask, divided by the blur of the mask), so the rim keeps no bright halo and needs
    no trimming (Graham cut at 90 % of the radius); outside is black. Without it, or with no
    field of view found, Graham's plain formula applies to the whole frame. `box` is the field
    of view's box when the caller knows it (the frame of a crop), so it is not located again.
    """
    check_rgb(image)
    if not mask_outside:
        box = None
    elif box is None:
        box = locate_fov(image, None)
    if sigma is None:
        diameter = box[2] - box[0] if box else min(image.shape[:2])
        sigma = max(1.0, diameter / 60)
    inside = inscribed_disc(image.shape, box, 0.98)
    pixels = image.astype(np.float32)
    if box is None:
        average = _blur(pixels, sigma)
    else:
        pixels *= inside[..., None]
        weight = _blur(inside.astype(np.float32), sigma)
        average = _blur(pixels, sigma) / np.maximum(weight, 1e-3)[..., None]
    out = np.clip(4 * (pixels - average) + 128, 0, 255).astype(np.uint8)
    out[~inside] = 0
    return out


def _blur(pixels: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; a wide one runs on a copy shrunk to about 4 pixels per sigma (it is smooth
    at that scale): 0.02 s instead of 2 s on a 3000-pixel photo, within a grey level."""
    factor = sigma / 4
    if factor < 2:
        return cv2.GaussianBlur(pixels, (0, 0), sigma)
    height, width = pixels.shape[:2]
    size = (max(1, round(width / factor)), max(1, round(height / factor)))
    small = cv2.GaussianBlur(cv2.resize(pixels, size, interpolation=cv2.INTER_AREA), (0, 0), 4.0)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR).reshape(pixels.shape)


def preprocess_fundus(
    image: np.ndarray | Image.Image,
    crop: bool = True,
    ben_graham: bool = False,
    size: int | None = None,
) -> np.ndarray:
    """The per-image preprocessing of the data pipeline, shared by `dr-hf prepare` and the
    on-the-fly transform so that Ben Graham sees the same image in both: field-of-view crop,
    shorter side to `size` (aspect ratio kept, so a disc cut by the frame stays round; None
    keeps the size), then Ben Graham, whose blur scales with the disc.

    A PIL image is first turned into an array by `as_rgb_array`.
    """
    array = as_rgb_array(image, size)
    check_rgb(array)
    box = locate_fov(array, None) if crop else None
    if box is not None:
        x0, y0, x1, y1 = box
        array = np.ascontiguousarray(array[y0:y1, x0:x1])
    if size is not None:
        array = resize_shorter_side(array, size)
    if ben_graham:
        # After the crop the field of view is the frame; without a disc, no mask applies.
        frame = (0, 0, array.shape[1], array.shape[0]) if box is not None else None
        array = ben_graham_normalise(array, mask_outside=not crop or box is not None, box=frame)
    return array


def to_rgb(image: Image.Image, notes: list[str] | None = None) -> Image.Image:
    """An image of any mode as 8-bit RGB. `notes`, when given, gets a line for each change a
    reader should know.

    16-bit and 32-bit integer images are scaled from their type's range (0-65535, or their
    maximum beyond it), float images from [0, 1] (or from 0 to their maximum beyond 1): Pillow's
    own conversion clips them, turning a 16-bit photograph white and a float one black.
    Transparency (RGBA, LA, palette with a transparent colour) is composited on black, the colour
    outside a fundus camera's field of view; CMYK, YCbCr, palette and 1-bit become RGB.
    """
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


def as_rgb_array(image: Any, size: int | None = None) -> np.ndarray:
    """An array as it is; a PIL image (any mode) as RGB uint8, turned upright by its EXIF
    orientation, first box-reduced by an integer factor toward twice `size`.

    The orientation is applied here too, so that training (which gets the photographs `datasets`
    decodes) sees a phone's rotated JPEG as `predict`, the demo and `pipeline()` do; an image
    already turned upright has no orientation tag left and is not turned twice.

    PIL's `reduce` is far cheaper than converting a full-size photograph to an array and resizing
    it there. The factor is rounded, so the shorter side stays at least 1.5 `size`: a 2000-pixel
    photo trained at 512 is halved rather than kept full size.
    """
    if isinstance(image, np.ndarray):
        return image
    if not isinstance(image, Image.Image):
        raise TypeError(
            f"expected a decoded PIL image or an RGB array, got {type(image).__name__}: keep the "
            "`image` column's datasets Image feature with decode=True."
        )
    if image.getexif().get(_ORIENTATION, 1) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode not in ("RGB", "L"):  # `reduce` refuses palette, 1-bit and 16-bit images
        image = to_rgb(image)
    if size is not None and (factor := round(min(image.size) / (_REDUCE_MARGIN * size))) >= 2:
        image = image.reduce(factor)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


def resize_shorter_side(array: np.ndarray, size: int) -> np.ndarray:
    height, width = array.shape[:2]
    scale = size / min(height, width)
    new = (max(1, round(width * scale)), max(1, round(height * scale)))
    if new == (width, height):
        return array
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(array, new, interpolation=interpolation)


def model_input(image: Any, size: int, crop: bool = True, ben_graham: bool = False) -> np.ndarray:
    """The photograph as a model of input side `size` sees it: RGB uint8 (size, size, 3).

    `as_rgb_array`'s cheap reduction toward twice `size`, the field-of-view crop and Ben Graham
    (run at `size`, as `dr-hf prepare` runs it), then one area resampling to the square input.
    """
    array = as_rgb_array(image, size)
    array = preprocess_fundus(array, crop, ben_graham, size if ben_graham else None)
    if array.shape[:2] == (size, size):
        return array
    return cv2.resize(array, (size, size), interpolation=cv2.INTER_AREA)


def normalize(array: np.ndarray, mean, std) -> np.ndarray:
    """`(pixel / 255 - mean) / std` per channel, as float32 channels-first (3, H, W)."""
    mean = np.asarray(mean, np.float32) * 255
    std = np.asarray(std, np.float32) * 255
    return ((array.astype(np.float32) - mean) / std).transpose(2, 0, 1)
