"""Drawing of one synthetic fundus photograph: `render_fundus`, the `FundusGeometry` it returns,
and the `FundusLook` that the photographs of one patient share (`draw_look`).

Each photograph is an orange-red disc on black with an optic disc, branching vessels, a macula,
uneven illumination and noise. Lesions follow the grade: microaneurysms (1+), blot haemorrhages
and hard exudates (2+), haemorrhages in every quadrant, cotton-wool spots and venous beading (3),
new vessels and pre-retinal haemorrhage (4). Counts are drawn from overlapping ranges, so
neighbouring grades overlap the way real gradings do. With `return_mask=True` the renderer also
gives the lesion mask, read from the same lesion layers, so the photograph does not change.

A photograph drawn without a look is an eye of its own. With a `FundusLook` (drawn once per
patient) and an eye, what belongs to the patient comes from the look: the field of view, the
fundus colour and choroidal texture, the optic disc and macula (mirrored between the right eye,
disc on the right of the frame, and the left eye), the vessel layout and branching, and the
camera (illumination pattern, exposure, blur, noise level, colour cast). What belongs to the eye
comes from its own generator: its lesions (their counts, positions and the venous beading,
drawn for its grade) and the noise's pixels. The fellow eye is therefore the mirror image of the
same retina with other lesions: a model can tell the patient from either eye.
Writing a whole data set of these photographs is `dr_hf.data.synthetic`'s job.
"""

import math
from dataclasses import dataclass

import cv2
import numpy as np

from dr_hf.data.patients import LEFT, RIGHT
from dr_hf.grades import NUM_GRADES

__all__ = ["FundusGeometry", "FundusLook", "draw_look", "render_fundus"]

# Lesion counts per grade (low, high), both inclusive.
_MICROANEURYSMS = ((0, 0), (1, 6), (3, 14), (6, 22), (6, 24))
_HAEMORRHAGES = ((0, 0), (0, 0), (0, 5), (8, 20), (6, 22))
_EXUDATES = ((0, 0), (0, 1), (0, 10), (2, 14), (2, 16))
_COTTON_WOOL = ((0, 0), (0, 0), (0, 1), (1, 4), (1, 5))


@dataclass(frozen=True)
class FundusGeometry:
    """Where the field of view was drawn: pixels within `radius` of (cx, cy), clipped to the frame."""

    cx: int
    cy: int
    radius: int

    def box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The field of view's bounding box (x0, y0, x1, y1), ends exclusive, as `find_fov` gives."""
        return (
            max(0, self.cx - self.radius),
            max(0, self.cy - self.radius),
            min(width, self.cx + self.radius + 1),
            min(height, self.cy + self.radius + 1),
        )


@dataclass(frozen=True)
class FundusLook:
    """What every photograph of one patient shares, drawn once by `draw_look`.

    `anatomy_seed` seeds the field of view, the fundus colour and texture, where the optic disc
    and macula lie and the vessel layout; `camera_seed` the illumination pattern, exposure, blur
    and noise level; `colour_cast` multiplies the red, green and blue of the camera's picture.
    """

    anatomy_seed: int
    camera_seed: int
    colour_cast: tuple[float, float, float] = (1.0, 1.0, 1.0)


def draw_look(rng: np.random.Generator) -> FundusLook:
    """A patient's look, drawn from the patient's generator."""
    anatomy_seed, camera_seed = (int(s) for s in rng.integers(0, 2**63, 2))
    cast = tuple(float(c) for c in rng.uniform(0.9, 1.1, 3))
    return FundusLook(anatomy_seed, camera_seed, cast)


def _mirrored(geo: FundusGeometry, width: int) -> FundusGeometry:
    return FundusGeometry(width - 1 - geo.cx, geo.cy, geo.radius)


def _random_geometry(width: int, height: int, rng: np.random.Generator) -> FundusGeometry:
    """A disc inside the frame, or (one photo in four on wide frames) cut at top and bottom."""
    short = min(width, height)
    if width >= 1.2 * height and rng.random() < 0.25:
        radius = int(rng.uniform(0.54, 0.62) * height)
        radius = min(radius, int(0.48 * width))
        cy = height // 2 + int(rng.integers(-short // 40, short // 40 + 1))
    else:
        radius = int(rng.uniform(0.40, 0.48) * short)
        slack = max(0, height // 2 - radius - 1)
        cy = height // 2 + int(rng.integers(-slack, slack + 1))
    slack = max(0, width // 2 - radius - 1)
    cx = width // 2 + int(rng.integers(-min(slack, width // 20), min(slack, width // 20) + 1))
    return FundusGeometry(cx, cy, max(radius, 4))


def _smooth_noise(height: int, width: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a coarse random grid, upsampled."""
    grid = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def _walk(start, angle, length, curl, rng, steps=24) -> np.ndarray:
    """A tortuous path: a random walk of the heading, bending by `curl` per step."""
    points, (x, y) = [start], start
    step = length / steps
    for _ in range(steps):
        angle += curl + rng.normal(0, 0.12)
        x, y = x + step * math.cos(angle), y + step * math.sin(angle)
        points.append((x, y))
    return np.array(points)


def _draw_path(layer: np.ndarray, path: np.ndarray, width0: float, width1: float) -> None:
    widths = np.linspace(width0, width1, len(path) - 1)
    for (a, b), w in zip(zip(path[:-1], path[1:]), widths):
        p, q = tuple(int(v) for v in a), tuple(int(v) for v in b)
        cv2.line(layer, p, q, 1.0, max(1, round(w)), cv2.LINE_AA)


def _vessel_tree(layer, start, angle, length, width, curl, depth, rng, beads=None) -> None:
    path = _walk(start, angle, length, curl, rng)
    _draw_path(layer, path, width, 0.6 * width)
    if beads is not None:
        for x, y in path[2::3]:
            cv2.circle(
                layer, (int(x), int(y)), max(1, round(width * beads.uniform(0.8, 1.3))), 1.0, -1
            )
    if depth == 0:
        return
    for i in sorted(rng.choice(np.arange(4, len(path) - 4), size=2, replace=False)):
        heading = math.atan2(*(path[i + 1] - path[i])[::-1])
        branch = heading + rng.choice([-1, 1]) * rng.uniform(0.4, 1.0)
        remaining = length * (1 - i / len(path))
        _vessel_tree(
            layer, tuple(path[i]), branch, remaining * 0.8, width * 0.65, curl, depth - 1, rng
        )


def _lesion_points(n, geo, od, rng, quadrants=False) -> list[tuple[int, int]]:
    """Random positions inside 90 % of the disc, away from the optic disc."""
    points = []
    while len(points) < n:
        angle = rng.uniform(0, 2 * math.pi)
        if quadrants:  # spread evenly over the four quadrants
            angle = (len(points) % 4 + rng.uniform(0, 1)) * math.pi / 2
        dist = geo.radius * 0.88 * math.sqrt(rng.uniform(0.02, 1))
        x, y = geo.cx + dist * math.cos(angle), geo.cy + dist * math.sin(angle)
        if math.hypot(x - od[0], y - od[1]) > od[2] * 1.6:
            points.append((int(x), int(y)))
    return points


def _draw_lesions(grade, shape, geo, od, rng) -> dict[str, np.ndarray]:
    """Alpha layers of each lesion colour, drawn from the lesion generator alone."""
    red, yellow, pale = (np.zeros(shape, np.float32) for _ in range(3))
    r = geo.radius

    def count(table):
        return int(rng.integers(table[grade][0], table[grade][1] + 1))

    def axes(low, high, minimum=1):
        return tuple(max(minimum, round(r * rng.uniform(low, high))) for _ in range(2))

    for x, y in _lesion_points(count(_MICROANEURYSMS), geo, od, rng):
        cv2.circle(red, (x, y), max(1, round(r * rng.uniform(0.006, 0.011))), 1.0, -1, cv2.LINE_AA)
    for x, y in _lesion_points(count(_HAEMORRHAGES), geo, od, rng, quadrants=grade >= 3):
        cv2.ellipse(red, (x, y), axes(0.015, 0.04), rng.uniform(0, 180), 0, 360, 1, -1, cv2.LINE_AA)
    for x, y in _lesion_points(count(_EXUDATES), geo, od, rng):
        for _ in range(int(rng.integers(1, 5))):  # exudates come in small clusters
            jx, jy = rng.normal(0, r * 0.02, 2)
            size = max(1, round(r * rng.uniform(0.005, 0.012)))
            cv2.circle(yellow, (int(x + jx), int(y + jy)), size, 1.0, -1, cv2.LINE_AA)
    for x, y in _lesion_points(count(_COTTON_WOOL), geo, od, rng):
        cv2.ellipse(pale, (x, y), axes(0.02, 0.06, 2), rng.uniform(0, 180), 0, 360, 0.8, -1)
    if grade == 4:
        for _ in range(int(rng.integers(1, 4))):  # new vessels: fine tortuous loops near the disc
            angle = rng.uniform(0, 2 * math.pi)
            start = (od[0] + od[2] * math.cos(angle), od[1] + od[2] * math.sin(angle))
            for _ in range(int(rng.integers(3, 7))):
                heading, length = rng.uniform(0, 2 * math.pi), r * rng.uniform(0.1, 0.2)
                path = _walk(start, heading, length, rng.normal(0, 0.4), rng, steps=16)
                _draw_path(red, path, max(1.0, r * 0.004), max(1.0, r * 0.003))
        if rng.random() < 0.35:  # pre-retinal haemorrhage: a large boat-shaped pool
            (x, y), size = _lesion_points(1, geo, od, rng)[0], r * rng.uniform(0.08, 0.14)
            cv2.ellipse(
                red, (x, y), (round(size), round(size * 0.7)), 0, 0, 180, 1.0, -1, cv2.LINE_AA
            )
    pale = cv2.GaussianBlur(pale, (0, 0), max(1.0, r * 0.012))
    return {"red": red, "yellow": yellow, "pale": pale}


# Colours the lesion layers are composited in, in drawing order.
_LESION_COLOURS = (
    ("red", (115, 18, 12)),
    ("yellow", (245, 215, 90)),
    ("pale", (235, 220, 195)),
)


def _check_request(grade: int, width: int, height: int) -> None:
    if grade not in range(NUM_GRADES):
        raise ValueError(f"grade={grade} is not a DR grade: use 0 to {NUM_GRADES - 1}.")
    if min(width, height) < 16:
        raise ValueError(f"A {width}x{height} photograph is too small: use 16 pixels or more.")


def _draw_retina(geo: FundusGeometry, xs, ys, anatomy: np.random.Generator, side=None):
    """Retina: pigment colour with choroidal texture and a darker macula.

    `side` puts the optic disc right (1) or left (-1) of the centre; None draws it.
    Returns the float32 RGB image, the optic disc (x, y, radius) and the macula centre (x, y).
    """
    r, (height, width) = geo.radius, (ys.shape[0], xs.shape[1])
    base = np.array([anatomy.uniform(190, 235), anatomy.uniform(70, 115), anatomy.uniform(25, 60)])
    drawn = anatomy.choice([-1, 1])  # left or right eye; drawn always, to keep the stream
    side = drawn if side is None else side
    od = (geo.cx + side * r * anatomy.uniform(0.3, 0.42), geo.cy + r * anatomy.normal(0, 0.05))
    od = (*od, r * anatomy.uniform(0.08, 0.11))
    macula = (geo.cx - side * r * anatomy.uniform(0.0, 0.08), od[1] + r * anatomy.normal(0, 0.03))
    shade = 1 + 0.06 * _smooth_noise(height, width, 12, anatomy)
    spread = 2 * (0.12 * r) ** 2
    shade -= (
        0.25 * np.exp(-((xs - macula[0]) ** 2) / spread) * np.exp(-((ys - macula[1]) ** 2) / spread)
    )
    return shade[..., None] * base.astype(np.float32), od, macula


def _draw_optic_disc(image: np.ndarray, od) -> None:
    """Optic disc, in place: a bright yellowish disc with a paler cup."""
    disc = np.zeros(image.shape[:2], np.float32)
    cv2.circle(disc, (int(od[0]), int(od[1])), int(od[2]), 1.0, -1, cv2.LINE_AA)
    cv2.circle(disc, (int(od[0]), int(od[1])), int(od[2] * 0.5), 1.3, -1, cv2.LINE_AA)
    disc = cv2.GaussianBlur(disc, (0, 0), max(1.0, od[2] * 0.15))[..., None]
    image += disc * (np.array([250, 215, 150], np.float32) - image) * 0.75


def _draw_vessels(image, grade, geo, od, macula, anatomy, lesions) -> None:
    """Vessels, in place: veins and arteries arch from the optic disc round the macula.

    Whether the veins are beaded (grade 3 and up, sometimes 2) is drawn from `lesions`; the
    vessel layout from `anatomy`.
    """
    r, shape = geo.radius, image.shape[:2]
    veins, arteries = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    beading = lesions.random() < (0.0, 0.0, 0.1, 0.6, 0.5)[grade]
    toward_macula = math.atan2(macula[1] - od[1], macula[0] - od[0])
    for layer, width0 in ((veins, 0.022 * r), (arteries, 0.016 * r)):
        for up in (-1, 1):
            tree_beads = lesions if beading and layer is veins else None
            heading = toward_macula + up * anatomy.uniform(0.9, 1.3)
            arch = -up * anatomy.uniform(0.03, 0.06)
            length = r * anatomy.uniform(1.0, 1.3)
            _vessel_tree(layer, od[:2], heading, length, width0, arch, 2, anatomy, tree_beads)
            heading = toward_macula + math.pi + up * anatomy.uniform(0.3, 0.8)
            length = r * anatomy.uniform(0.6, 0.8)
            _vessel_tree(layer, od[:2], heading, length, width0 * 0.8, 0.0, 1, anatomy)
    image *= 1 - np.minimum(veins, 1)[..., None] * np.array([0.5, 0.7, 0.6], np.float32)
    image *= 1 - np.minimum(arteries, 1)[..., None] * np.array([0.3, 0.45, 0.4], np.float32)


def _composite_lesions(image: np.ndarray, layers: dict[str, np.ndarray]) -> None:
    """Lesions, in place: each colour's alpha layer composited over the retina."""
    for name, colour in _LESION_COLOURS:
        alpha = np.minimum(layers[name], 1)[..., None]
        image += alpha * (np.array(colour, np.float32) - image)


# Alpha at or above which a lesion layer's pixel counts as lesion in the mask: the inside of a
# shape drawn at 1.0 (anti-aliased edges are about 0.5) and of a blurred cotton-wool spot (0.8).
_MASK_ALPHA = 0.4


def _lesion_mask(layers: dict[str, np.ndarray], geo: FundusGeometry) -> np.ndarray:
    """uint8 mask, 255 where a lesion layer is drawn, cut to the field of view the camera keeps.

    Venous beading is not in it: it is drawn into the veins, and lesion segmentation sets
    (IDRiD) mark microaneurysms, haemorrhages, exudates and cotton-wool spots, not vessels.
    """
    alpha = np.maximum.reduce([layers[name] for name, _ in _LESION_COLOURS])
    fov = np.zeros(alpha.shape, np.uint8)
    cv2.circle(fov, (geo.cx, geo.cy), geo.radius, 1, -1)
    return ((alpha >= _MASK_ALPHA) & (fov > 0)).astype(np.uint8) * 255


def _photograph(
    image, geo: FundusGeometry, xs, ys, camera: np.random.Generator, noise=None, cast=None
) -> np.ndarray:
    """Camera: vignetting, uneven illumination, exposure, colour cast, blur, noise and the black
    surround. The noise's level comes from `camera`, its pixels from `noise` (default: `camera`)."""
    r, shape = geo.radius, image.shape[:2]
    dist2 = ((xs - geo.cx) ** 2 + (ys - geo.cy) ** 2) / r**2
    tilt = camera.uniform(0, 2 * math.pi)
    light = 1 - camera.uniform(0.25, 0.45) * dist2 * np.sqrt(np.sqrt(dist2))  # dist ** 2.5
    light += (
        camera.uniform(-0.15, 0.15)
        * ((xs - geo.cx) * math.cos(tilt) + (ys - geo.cy) * math.sin(tilt))
        / r
    )
    image *= (light * camera.uniform(0.7, 1.1))[..., None]
    if cast is not None:
        image *= np.asarray(cast, np.float32)
    image = cv2.GaussianBlur(image, (0, 0), max(0.5, r * camera.uniform(0.001, 0.003)))
    fov = np.zeros(shape, np.uint8)
    cv2.circle(fov, (geo.cx, geo.cy), r, 1, -1)
    image *= fov[..., None]
    level = camera.uniform(1.5, 4.0)
    image += level * (noise or camera).standard_normal(image.shape, np.float32)
    return image


def render_fundus(
    grade: int,
    width: int,
    height: int,
    rng: np.random.Generator,
    geometry: FundusGeometry | None = None,
    return_mask: bool = False,
    look: FundusLook | None = None,
    eye: str | None = None,
) -> tuple[np.ndarray, FundusGeometry] | tuple[np.ndarray, FundusGeometry, np.ndarray]:
    """One synthetic fundus photograph (RGB uint8, height x width) of a DR grade, and its disc.

    Without `look`, anatomy, lesions and noise come from three generators seeded from `rng`, so
    the same seed with another grade gives the same eye with other lesions. With a patient's
    `look` and `eye` ("left" or "right"), the anatomy and camera come from the look and `rng`
    draws only this eye's lesions and noise pixels; the left eye is the right eye's mirror image
    (its field of view too, unless `geometry` is given). `geometry` fixes the disc.
    `return_mask` adds a third item, the lesion mask (uint8, height x width, 255 on lesions,
    all 0 for grade 0); it only reads the lesion layers, so the photograph is the same.
    """
    _check_request(grade, width, height)
    if look is None:
        if eye is not None:
            raise ValueError(f"eye={eye!r} needs look=: an eye belongs to a patient's look.")
        anatomy, lesions, camera = (np.random.default_rng(s) for s in rng.integers(0, 2**63, 3))
        noise, side, cast = camera, None, None
    else:
        if eye not in (LEFT, RIGHT):
            raise ValueError(
                f"eye={eye!r}: a patient's photograph is of the {LEFT} or {RIGHT} eye."
            )
        lesions, noise = (np.random.default_rng(s) for s in rng.integers(0, 2**63, 2))
        anatomy, camera = (np.random.default_rng(s) for s in (look.anatomy_seed, look.camera_seed))
        side, cast = 1, look.colour_cast  # drawn as the right eye, mirrored for the left
    flip = eye == LEFT
    given = _mirrored(geometry, width) if geometry and flip else geometry
    geo = given or _random_geometry(width, height, anatomy)
    ys, xs = (np.arange(n, dtype=np.float32) for n in (height, width))
    ys, xs = ys[:, None], xs[None, :]  # broadcast: full-frame arrays only where needed
    image, od, macula = _draw_retina(geo, xs, ys, anatomy, side)
    _draw_optic_disc(image, od)
    _draw_vessels(image, grade, geo, od, macula, anatomy, lesions)
    if flip:
        image = np.ascontiguousarray(image[:, ::-1])
        geo, od = _mirrored(geo, width), (width - 1 - od[0], *od[1:])
    layers = _draw_lesions(grade, (height, width), geo, od, lesions)
    _composite_lesions(image, layers)
    image = np.clip(_photograph(image, geo, xs, ys, camera, noise, cast), 0, 255).astype(np.uint8)
    return (image, geo, _lesion_mask(layers, geo)) if return_mask else (image, geo)
