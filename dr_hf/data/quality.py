"""Gradeability: whether a photograph can be graded at all, and why not.

`assess_quality` gives each photograph a `QualityVerdict` before grading: `gradable`, the
`issues` (a subset of `QUALITY_ISSUES`, in that order) and the `measures` they were judged on;
`quality_issues_text` joins the issues into one CSV cell.

The photograph is judged near the scale the model sees it. It is shrunk so its shorter side is
about the model's input side `size` (a 3000x2000 photo is not failed for being large), then,
as `preprocess_fundus` does, cropped to the field-of-view (FOV) box `locate_fov` finds, and
that crop shrunk to a shorter side of `size`. Two limits keep the focus measure comparable
between photographs: the crop is never enlarged (enlarging blurs every small photograph
alike), and model sides under 128 pixels are judged at 128 (below that the Laplacian measures
shading rather than detail). So focus separates cleanly at any model side for photographs
96 px or more across; a smaller one is too coarse to judge. Exposure, focus and colour are
measured inside 90 % of the FOV radius, which keeps the rim's step and vignetting out.

The FOV is checked by fitting a circle to the edge of the largest bright region (Kasa's least
squares; edge points on the frame border are left out), so a disc cut by the frame, or one
filling it after a crop, is measured as the whole circle it belongs to. The region is cut at
Otsu's levels, and again where pixels are lit when that finds no disc: a field of view that fills
the frame, with only its corners black, leaves too little surround for Otsu's classes.

| issue | measure | fails when | meaning (values seen on fundus and other photographs) |
|---|---|---|---|
| `no_field_of_view` | `fov_found` | 0 | no bright region on a darker surround with an edge off the frame border: a blank frame, or retina everywhere |
| | `fov_edge_error` | > 0.03 | median distance of the region's edge from the circle, over the radius: not round (fundus 0.011 at most, other photos 0.05 or more) |
| | `fov_fill` | < 0.85 | overlap (IoU) of the region, holes filled, with the circle inside the frame: not a disc (fundus 0.97 or more, other photos 0.78 at most) |
| | `fov_diameter` | < 0.35 | circle diameter over the frame's shorter side: far too small (fundus 0.77 to 1.4) |
| | `fov_visible` | < 0.5 | share of the circle inside the frame: mostly cropped away (whole discs about 1, discs cut at top and bottom 0.84 to 0.93, corner strips 0.25 at most) |
| `too_dark` | `brightness` | < 50 | median of the brightest channel in the FOV, grey levels (fundus 110 to 220; at 15 % exposure 18 to 32) |
| `over_exposed` | `luminance` | > 200 | median luminance (0.299 R + 0.587 G + 0.114 B) in the FOV: washed out (fundus 60 to 135; tripled plus 80: 218 to 255) |
| | `clipped` | > 0.5 | share of FOV pixels with two or more channels at 250 or more: saturated (fundus 0, a white frame 1) |
| `out_of_focus` | `sharpness` | < 0.015 | standard deviation of the Laplacian of Gaussian (sigma 1 px) of the green channel, over the green mean (sharp fundus 0.039 or more; blurred with sigma 4 % of the width 0.008 at most, 0.004 from 160 px up) |
| `not_fundus` | `red_share` | < 0.45 | R / (R + G + B) summed over the lit FOV pixels: a fundus is red-orange (0.54 to 0.70; people, cat, rocket, grey 0.27 to 0.43) |
| | `rgb_order` | < 0.6 | share of lit FOV pixels with R > G > B (fundus 0.82 or more, rocket 0.1, grey 0) |

Focus and colour are judged only when the exposure passes: a clipped or black FOV holds
neither. Where the FOV fails, exposure, focus and colour are measured over the whole view.
FOV measures that could not be taken (no circle) are NaN. Pixels count as lit when their
brightest channel exceeds a fifth of the median brightness plus 2 grey levels.
"""

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from dr_hf.data.preprocessing import (
    as_rgb_array,
    brightness,
    check_rgb,
    levels,
    locate_fov,
    resize_shorter_side,
)

__all__ = [
    "QUALITY_ISSUES",
    "QualityVerdict",
    "assess_quality",
    "quality_issues_text",
    "verdict_from_measures",
]

QUALITY_ISSUES = ("no_field_of_view", "too_dark", "over_exposed", "out_of_focus", "not_fundus")

# Thresholds: see the table in the module docstring.
MAX_EDGE_ERROR = 0.03
MIN_FILL = 0.85
MIN_DIAMETER = 0.35
MIN_VISIBLE = 0.5
MIN_BRIGHTNESS = 50.0
MAX_LUMINANCE = 200.0
MAX_CLIPPED = 0.5
MIN_SHARPNESS = 0.015
MIN_RED_SHARE = 0.45
MIN_RGB_ORDER = 0.6

MIN_JUDGED_SIDE = 128  # smaller model inputs are judged at this side (see the module docstring)
_MIN_CONTRAST = 4  # grey levels between surround and disc below which no disc is assumed
_EDGE_LEVEL = 0.15  # the disc's edge lies this far from the surround level to the disc level
_INNER = 0.9  # photometric measures are taken within this fraction of the FOV radius


@dataclass(frozen=True)
class QualityVerdict:
    """Whether a photograph can be graded: `issues` (empty when gradable) and its `measures`."""

    gradable: bool
    issues: tuple[str, ...]
    measures: dict[str, float] = field(default_factory=dict)


def quality_issues_text(verdict: QualityVerdict) -> str:
    """The issues as one CSV cell, joined with ";" (empty when gradable)."""
    return ";".join(verdict.issues)


def assess_quality(image: Any, size: int = 224) -> QualityVerdict:
    """Judge a photograph (PIL image of any mode, or RGB uint8 array) at the model's input side
    `size`; see the module docstring for the measures and thresholds."""
    if size < 1:
        raise ValueError(f"size={size}: pass the model's input side in pixels, e.g. 224.")
    side = max(size, MIN_JUDGED_SIDE)
    array = as_rgb_array(image, side)
    check_rgb(array)
    frame = _reduce(array, side)
    circle, measures = _fit_fov(frame)
    # Outside a disc that fails its checks, the whole view is measured: a bogus circle would
    # pick an arbitrary patch of the picture.
    view, inside = _model_view(frame, circle if _is_disc(measures) else None, side)
    measures.update(_photometry(view, inside))
    return verdict_from_measures(measures)


def _reduce(array: np.ndarray, size: int) -> np.ndarray:
    """The frame shrunk so its shorter side is about `size`; a smaller one is kept.

    A large shrink first samples bilinearly down to twice the target (under a millisecond),
    then averages 2x2 blocks: area-averaging every pixel of a 3000x2000 photo costs ~10 ms.
    """
    height, width = array.shape[:2]
    if min(height, width) <= size:
        return array
    scale = size / min(height, width)
    new = (max(1, round(width * scale)), max(1, round(height * scale)))
    if scale < 0.25:
        array = cv2.resize(array, (2 * new[0], 2 * new[1]), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(array, new, interpolation=cv2.INTER_AREA)


_UNMEASURED = {"fov_found": 0.0} | dict.fromkeys(
    ("fov_diameter", "fov_visible", "fov_edge_error", "fov_fill"), math.nan
)


def _fit_fov(frame: np.ndarray) -> tuple[tuple[float, float, float] | None, dict[str, float]]:
    """The circle (cx, cy, r) the bright region's edge lies on, and the FOV measures.

    The region is first cut at Otsu's levels. When that gives no gradable disc, it is cut again
    where pixels are lit: a field of view that fills the frame, with only the corners black, has
    too little surround for Otsu's classes (they split the retina itself), but the corners' arcs
    still lie on one circle. The first cut's measures stand when neither gives a disc.
    """
    fits = []
    for outline in _bright_outlines(frame):
        fits.append(_fit_outline(frame, outline))
        if _is_disc(fits[-1][1]):
            return fits[-1]
    return fits[0] if fits else (None, _UNMEASURED)


def _fit_outline(frame: np.ndarray, outline: np.ndarray):
    """Kasa's circle through an outline's points off the frame border, and its FOV measures."""
    height, width = frame.shape[:2]
    x, y = outline[:, 0, 0].astype(np.float64), outline[:, 0, 1].astype(np.float64)
    free = (x > 0) & (x < width - 1) & (y > 0) & (y < height - 1)
    if free.sum() < 12:  # the outline runs along the frame: no disc edge to fit
        return None, _UNMEASURED
    x, y = x[free], y[free]
    # Kasa: x^2 + y^2 = 2 cx x + 2 cy y + (r^2 - cx^2 - cy^2), linear in the unknowns.
    design = np.column_stack([x, y, np.ones_like(x)])
    solution = np.linalg.lstsq(design, x * x + y * y, rcond=None)[0]
    cx, cy = solution[0] / 2, solution[1] / 2
    radius = math.sqrt(max(solution[2] + cx * cx + cy * cy, 1.0))
    if not radius < 20 * max(height, width):  # a straight edge (or NaN): no circle to speak of
        return None, _UNMEASURED
    disc = _disc_mask((height, width), (cx, cy), (radius, radius))
    region = np.zeros((height, width), np.uint8)
    cv2.drawContours(region, [outline], 0, 1, thickness=cv2.FILLED)  # holes (vessels) filled
    region = region.view(bool)
    return (cx, cy, radius), {
        "fov_found": 1.0,
        "fov_diameter": 2 * radius / min(height, width),
        "fov_visible": min(1.0, float(disc.sum()) / (math.pi * radius**2)),
        "fov_edge_error": float(np.median(np.abs(np.hypot(x - cx, y - cy) - radius)) / radius),
        "fov_fill": float((disc & region).sum() / max(1, (disc | region).sum())),
    }


def _bright_outlines(frame: np.ndarray) -> list[np.ndarray]:
    """Outlines (OpenCV contours) of the largest region brighter than the surround: cut at
    Otsu's levels, then where pixels are lit (as `_photometry` counts them); none without contrast.

    Levels come from `preprocessing.levels` (Otsu's classes), as in the FOV search; unlike
    there, a grey surround is accepted, so an over-exposed photo keeps its disc.
    """
    bright = cv2.medianBlur(brightness(frame), 3)
    background, disc = levels(bright)
    if disc - background < _MIN_CONTRAST:
        return []
    otsu = background + max(_EDGE_LEVEL * (disc - background), _MIN_CONTRAST / 2)
    lit = 0.2 * _median_u8(bright.ravel()) + 2
    outlines = []
    for threshold in (otsu, lit):
        mask = cv2.morphologyEx(
            (bright > threshold).astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)
        )
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        if contours:
            outlines.append(max(contours, key=cv2.contourArea))
    return outlines


def _model_view(frame, circle, side) -> tuple[np.ndarray, np.ndarray]:
    """The frame as `preprocess_fundus` crops it for the model (the FOV box), shrunk to a
    shorter side of `side` but never enlarged, and the pixels of that view inside 90 % of the
    fitted circle (all of it without one)."""
    box = locate_fov(frame, None) or (0, 0, frame.shape[1], frame.shape[0])
    x0, y0, x1, y1 = box
    view = np.ascontiguousarray(frame[y0:y1, x0:x1])
    if min(view.shape[:2]) > side:
        view = resize_shorter_side(view, side)
    if circle is None:
        return view, np.ones(view.shape[:2], bool)
    sx, sy = view.shape[1] / (x1 - x0), view.shape[0] / (y1 - y0)
    cx, cy, radius = circle
    centre = ((cx - x0 + 0.5) * sx - 0.5, (cy - y0 + 0.5) * sy - 0.5)
    inside = _disc_mask(view.shape[:2], centre, (_INNER * radius * sx, _INNER * radius * sy))
    if inside.sum() < 16:  # a circle that misses the view: measure the view
        inside[:] = True
    return view, inside


def _disc_mask(shape, centre, axes) -> np.ndarray:
    """Boolean mask of an axis-aligned ellipse, drawn by OpenCV at 1/16 pixel precision."""
    mask = np.zeros(shape, np.uint8)
    scaled = [round(16 * v) for v in (*centre, *axes)]
    cv2.ellipse(mask, scaled[:2], scaled[2:], 0, 0, 360, 1, -1, cv2.LINE_8, 4)
    return mask.view(bool)


def _median_u8(values: np.ndarray) -> float:
    """Median of uint8 values from their histogram (np.median sorts)."""
    counts = np.bincount(values, minlength=256).cumsum()
    return float(np.searchsorted(counts, counts[-1] / 2))


def _photometry(view: np.ndarray, inside: np.ndarray) -> dict[str, float]:
    """Exposure, focus and colour measures of the pixels `inside` the model's view."""
    red, green, blue = (view[..., channel][inside] for channel in range(3))
    brightest = np.maximum(np.maximum(red, green), blue)
    level = _median_u8(brightest)
    clipped = (red >= 250).view(np.uint8) + (green >= 250) + (blue >= 250) >= 2
    lit = brightest > 0.2 * level + 2
    r, g, b = (channel[lit].astype(np.int64) for channel in (red, green, blue))
    green_view = view[..., 1].astype(np.float32)
    log = cv2.Laplacian(cv2.GaussianBlur(green_view, (0, 0), 1.0), cv2.CV_32F)
    return {
        "brightness": level,
        "luminance": _median_u8(cv2.cvtColor(view, cv2.COLOR_RGB2GRAY)[inside]),
        "clipped": float(clipped.mean()),
        "sharpness": float(log[inside].std() / (green.mean() + 1.0)),
        "red_share": float(r.sum() / max(1, r.sum() + g.sum() + b.sum())),
        "rgb_order": float(((r > g) & (g > b)).mean()) if lit.any() else 0.0,
    }


def _is_disc(m: dict[str, float]) -> bool:
    """Whether the FOV measures describe a gradable disc (NaN, unmeasured, fails)."""
    return bool(
        m["fov_found"]
        and m["fov_edge_error"] <= MAX_EDGE_ERROR
        and m["fov_fill"] >= MIN_FILL
        and m["fov_diameter"] >= MIN_DIAMETER
        and m["fov_visible"] >= MIN_VISIBLE
    )


def verdict_from_measures(m: dict[str, float]) -> QualityVerdict:
    """The verdict on measures such as `assess_quality(...).measures`: the issues they fail, in
    `QUALITY_ISSUES` order (the thresholds are the module docstring's table)."""
    failed = {
        "no_field_of_view": not _is_disc(m),
        "too_dark": m["brightness"] < MIN_BRIGHTNESS,
        "over_exposed": m["luminance"] > MAX_LUMINANCE or m["clipped"] > MAX_CLIPPED,
    }
    exposed = not (failed["too_dark"] or failed["over_exposed"])
    failed["out_of_focus"] = exposed and m["sharpness"] < MIN_SHARPNESS
    failed["not_fundus"] = exposed and not (
        m["red_share"] >= MIN_RED_SHARE and m["rgb_order"] >= MIN_RGB_ORDER
    )
    issues = tuple(issue for issue in QUALITY_ISSUES if failed[issue])
    return QualityVerdict(gradable=not issues, issues=issues, measures=m)
