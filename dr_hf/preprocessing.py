"""Fundus photograph preprocessing: field-of-view crop and Ben Graham colour normalisation.

Images are RGB uint8 arrays of shape (H, W, 3), in and out.
"""

import cv2
import numpy as np

_WORK_SIDE = 512  # the field of view is located on a copy this long, then refined at full size
_MIN_CONTRAST = 8  # grey levels between background and disc below which no disc is assumed


def _check_rgb(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise ValueError(f"Expected an RGB image of shape (H, W, 3), got {shape}.")
    if image.dtype != np.uint8:
        raise ValueError(f"Expected a uint8 RGB image, got dtype {image.dtype}: convert it first.")


def _brightness(image: np.ndarray) -> np.ndarray:
    # The brightest channel: fundus discs are red-dominant, so grey levels would waste contrast.
    return image.max(axis=2)


def _levels(small: np.ndarray) -> tuple[float, float]:
    """Background and disc brightness, the two classes Otsu's method separates."""
    otsu, _ = cv2.threshold(small, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    dark, bright = small[small <= otsu], small[small > otsu]
    if bright.size == 0 or dark.size == 0:
        return float(small.min()), float(small.max())
    return float(np.median(dark)), float(np.median(bright))


def _largest_component(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return None
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h = (int(v) for v in stats[best, :4])
    return x, y, x + w, y + h


def _refine_edge(
    bright: np.ndarray, edge: int, window: int, background: float, threshold: float, lead: bool
) -> int:
    """Place one box edge to the pixel on full-resolution profiles near its coarse position.

    `bright` holds lines (rows) perpendicular to the edge's axis, ordered along it. The edge sits
    where a line first holds a few pixels brighter than halfway between background and the local
    rim brightness, so a dim, vignetted rim is located as well as a bright one.
    """
    n = bright.shape[0]
    lo, hi = max(0, edge - window), min(n, edge + window)
    if hi <= lo:
        return edge
    strip = bright[lo:hi].astype(np.float32)
    rim = strip[strip > threshold]
    if rim.size == 0:
        return edge
    level = (background + float(np.median(rim))) / 2
    counts = (strip > max(level, threshold)).sum(axis=1)
    inside = np.flatnonzero(counts >= 2)
    if inside.size == 0:
        return edge
    return lo + int(inside[0]) if lead else lo + int(inside[-1]) + 1


def find_fov(image: np.ndarray, threshold: int | None = None) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1), ends exclusive, of the circular field of view.

    The disc is found on a copy whose longest side is 512 pixels: Otsu's method separates the
    background from the disc, and the threshold lies a fifth of the way from the background level
    to the disc level, so dark photographs work as well as bright ones (`threshold` overrides it,
    in grey levels of the brightest channel). The largest connected region is the disc, which
    ignores noise and labels. Each edge is then refined on full-resolution pixels near it. A disc
    cut by the frame spans the full height. With no disc (a blank image) the full frame is returned.
    """
    _check_rgb(image)
    height, width = image.shape[:2]
    full = (0, 0, width, height)
    scale = max(height, width) / _WORK_SIDE
    if scale > 1:
        size = (max(1, round(width / scale)), max(1, round(height / scale)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    else:
        small, scale = image, 1.0
    small = cv2.medianBlur(_brightness(small), 3)
    background, disc = _levels(small)
    if threshold is None:
        if disc - background < _MIN_CONTRAST or background > 0.5 * disc:
            return full
        threshold = background + 0.2 * (disc - background)
    mask = cv2.morphologyEx(
        (small > threshold).astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)
    )
    coarse = _largest_component(mask)
    if coarse is None:
        return full
    sx = width / small.shape[1]
    sy = height / small.shape[0]
    x0, y0, x1, y1 = (
        round(coarse[0] * sx),
        round(coarse[1] * sy),
        round(coarse[2] * sx),
        round(coarse[3] * sy),
    )
    window = int(np.ceil(2 * scale)) + 2
    bright = cv2.medianBlur(_brightness(image), 3)  # drops isolated hot pixels
    if scale > 1:
        k = int(np.ceil(scale)) | 1  # average as much as the coarse search did, against noise
        bright = cv2.blur(bright, (k, k))
    # Profiles only span the coarse box's other axis, so noise and labels outside it don't count.
    columns = bright[y0:y1].T
    rows = bright[:, x0:x1]
    x0 = _refine_edge(columns, x0, window, background, threshold, lead=True)
    x1 = _refine_edge(columns, x1, window, background, threshold, lead=False)
    y0 = _refine_edge(rows, y0, window, background, threshold, lead=True)
    y1 = _refine_edge(rows, y1, window, background, threshold, lead=False)
    return x0, y0, x1, y1


def crop_fov(image: np.ndarray) -> np.ndarray:
    """The image cropped to its field of view (see `find_fov`)."""
    x0, y0, x1, y1 = find_fov(image)
    return np.ascontiguousarray(image[y0:y1, x0:x1])


def _inscribed_disc(shape: tuple[int, ...], box: tuple[int, int, int, int], fraction: float):
    # A disc cut by the frame keeps the box width as its diameter, centred in the box.
    x0, y0, x1, y1 = box
    ys, xs = np.ogrid[: shape[0], : shape[1]]
    radius = fraction * (x1 - x0) / 2
    return (xs - (x0 + x1 - 1) / 2) ** 2 + (ys - (y0 + y1 - 1) / 2) ** 2 <= radius**2


def fov_mask(image: np.ndarray) -> np.ndarray:
    """Boolean mask of the field of view: the disc inscribed in the `find_fov` box, clipped."""
    return _inscribed_disc(image.shape, find_fov(image), 1.0)


def ben_graham_normalise(
    image: np.ndarray, sigma: float | None = None, mask_outside: bool = True
) -> np.ndarray:
    """Ben Graham's colour normalisation (Kaggle DR 2015): `4*img - 4*blur(img, sigma) + 128`.

    Subtracting the local average colour removes lighting and pigment differences between
    photographs and leaves vessels and lesions on a grey background. Graham blurred with
    sigma = radius / 30 on photos rescaled to a 300-pixel radius; on a crop to the field of view
    the radius is about min(h, w) / 2, hence the default sigma = min(h, w) / 60. With
    `mask_outside`, everything outside 95 % of the field-of-view radius is set black, which hides
    the bright halo the blur leaves along the rim (Graham cut at 90 %).
    """
    _check_rgb(image)
    if sigma is None:
        sigma = max(1.0, min(image.shape[:2]) / 60)
    blurred = cv2.GaussianBlur(image, (0, 0), sigma)
    out = cv2.addWeighted(image, 4.0, blurred, -4.0, 128.0)
    if mask_outside:
        box = find_fov(image)
        if box != (0, 0, image.shape[1], image.shape[0]):
            out[~_inscribed_disc(image.shape, box, 0.95)] = 0
    return out


ben_graham = ben_graham_normalise


def preprocess_fundus(image: np.ndarray, crop: bool = True, ben_graham: bool = False) -> np.ndarray:
    """The per-image preprocessing of the data pipeline: field-of-view crop, then Ben Graham."""
    _check_rgb(image)
    if crop:
        image = crop_fov(image)
    if ben_graham:
        image = ben_graham_normalise(image)
    return image
