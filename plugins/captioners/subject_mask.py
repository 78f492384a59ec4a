"""Separating the candy from what it lies on, from pixels alone.

The table is modelled from the image border (where photographers leave space): seeded by
the border's colour, a smooth surface per CIELAB channel is fitted robustly to every pixel
that matches it, so light falloff (a flash's hot centre, a lamp's pool) is table, not
subject. Pixels far from that surface are subject; hysteresis keeps faint edges attached
to strong cores; shadows (the table, darker, its own colour) are cut away unless they
continue a muted candy; a bowl (a large plain ellipse holding candy-sized blobs of other
colours) is found and set apart. Each blob is measured (area, inscribed radius,
solidity, lobes) so later steps can tell one candy from a pile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from scipy import ndimage
from scipy.spatial import ConvexHull

from clood_candy_plugins.captioners.colour_space import lab_to_linear, linear_to_lab, linear_to_oklab, to_linear

WORK_SIDE = 256  # analysis resolution (long side): enough for beans, fast on 2 cores


@dataclass
class Component:
    area: int
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)
    radius: float  # largest inscribed circle: about half a bean's width, even in a pile
    centre: tuple[float, float]
    solidity: float = 1.0  # area / convex hull area: a bean ~0.95, a pile's bumpy outline less
    lobes: int = 1  # separate thick parts (peaks of the distance to the edge): beans in a pile

    @property
    def one_candy(self) -> bool:
        """One candy, not a pile: convex, and no bigger than one bean as wide as the blob's
        widest point (a bean's area is about 5.2 × its inscribed radius squared)."""
        bulk = self.area / (5.2 * self.radius * self.radius)
        if self.area < 40:  # too few pixels for a meaningful outline
            return bulk <= 1.3
        if self.lobes >= 2 and self.solidity < 0.9:
            return False  # two thick parts with a waist between: touching candies
        return bulk <= 1.0 or (self.solidity >= 0.915 and bulk <= 1.8)


@dataclass
class Segmentation:
    srgb: np.ndarray  # (H, W, 3) float in [0, 1]
    linear: np.ndarray
    lab: np.ndarray  # CIELAB
    mask: np.ndarray  # subject (beans), bowl excluded
    background: np.ndarray  # (H, W, 3) fitted background Lab
    border: np.ndarray  # border ring (bool)
    texture: float  # how busy the background is (CIELAB units)
    components: list[Component] = field(default_factory=list)
    bowl: np.ndarray | None = None  # bowl pixels, when there is a bowl
    shadow_share: float = 0.0  # shadow pixels / subject pixels
    shadow_contrast: float = 0.0  # how much darker shadows are than the lit background (0..1)

    @property
    def found(self) -> bool:
        return bool(self.components)

    @property
    def shape(self) -> tuple[int, int]:
        return self.mask.shape


def load_small(path: Path, side: int = WORK_SIDE) -> np.ndarray:
    """The photo upright, long side at most ``side``, as float sRGB in [0, 1]."""
    with Image.open(path) as im:
        im.draft("RGB", (side, side))  # JPEG: decode at 1/2..1/8 scale, much faster
        im = ImageOps.exif_transpose(im)
        im = im.convert("RGB")
        if max(im.size) > side:
            im.thumbnail((side, side), Image.Resampling.LANCZOS)
        return np.asarray(im, np.float32) / 255.0


def _ring(h: int, w: int) -> np.ndarray:
    width = max(2, int(round(0.05 * min(h, w))))
    ring = np.zeros((h, w), bool)
    ring[:width], ring[-width:], ring[:, :width], ring[:, -width:] = True, True, True, True
    return ring


def _basis(h: int, w: int, step: int = 1, degree: int = 4) -> np.ndarray:
    yy, xx = np.mgrid[0:h:step, 0:w:step].astype(np.float32)
    xx, yy = xx / w - 0.5, yy / h - 0.5
    return np.stack([xx ** i * yy ** j for i in range(degree + 1) for j in range(degree + 1 - i)], -1)


def _least_squares(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Normal equations in float64, lightly damped: fast and stable for a few smooth terms."""
    a64 = a.astype(np.float64)
    gram = a64.T @ a64
    gram += np.eye(len(gram)) * 1e-6 * np.trace(gram) / len(gram)
    return np.linalg.solve(gram, a64.T @ b.astype(np.float64)).astype(np.float32)


def _robust_fit(a: np.ndarray, sample: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray | None, np.ndarray, float]:
    coef, scale = None, 0.0
    for _ in range(4):
        if keep.sum() < a.shape[1] * 6:
            break
        coef = _least_squares(a[keep], sample[keep])
        resid = np.linalg.norm(sample - a @ coef, axis=1)
        scale = float(np.median(resid[keep]) * 1.4826 + 1e-3)
        keep = resid < max(3.0 * scale, 4.0)
    return coef, keep, scale


def _fit_surface(lab: np.ndarray, ring: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A smooth surface per channel through the background, and the border pixels that
    are background.

    Seeded by pixels that match the border's colour (robust while candy covers under half
    of the border), then refitted on every pixel that matches the fit, so light falloff
    across the frame is learnt from the whole visible table. A quadratic unless the table
    is lit so unevenly (a flash's hot centre) that a quartic fits it much better and the
    table is visible enough to pin a quartic down."""
    h, w = ring.shape
    step = max(1, int(round(max(h, w) / 96)))
    sample = lab[::step, ::step].reshape(-1, 3)
    edge = lab[ring]
    seed = np.median(edge, axis=0)
    # Table colour, and not much darker than the table's edge usually is: a flash or a lamp
    # brightens the middle of the table, but a dark candy is darker than its edge.
    resid = np.linalg.norm(sample[:, 1:] - seed[1:], axis=1)
    scale = np.median(np.linalg.norm(edge[:, 1:] - seed[1:], axis=1)) * 1.4826 + 1e-3
    spread = np.median(np.abs(edge[:, 0] - seed[0])) * 1.4826
    keep = (resid < max(3.0 * scale, 5.0)) & (sample[:, 0] > seed[0] - max(3.0 * spread, 12.0))

    best = None
    for degree in (2, 4):
        a = _basis(h, w, step, degree).reshape(-1, (degree + 1) * (degree + 2) // 2)
        coef, inl, fit_scale = _robust_fit(a, sample, keep.copy())
        if coef is None:
            continue
        if best is None or (fit_scale < 0.75 * best[2] and inl.mean() > 0.6):
            best = (degree, coef, fit_scale)
    if best is None:  # nothing matched the border: a flat background of its median colour
        return np.broadcast_to(seed, lab.shape).astype(np.float32).copy(), ring
    degree, coef, fit_scale = best
    full = _basis(h, w, 1, degree) @ coef
    resid = np.linalg.norm(lab - full, axis=-1)
    inliers = ring & (resid < max(3.0 * fit_scale, 4.0))
    if inliers.sum() < 0.2 * ring.sum():
        inliers = ring
    return full.astype(np.float32), inliers


def _distance(lab: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """Colour distance to the background; darkening counts half (shade, falloff)."""
    d = lab - bg
    dl = np.where(d[..., 0] < 0, 0.5 * d[..., 0], d[..., 0])
    return np.sqrt(dl * dl + d[..., 1] ** 2 + d[..., 2] ** 2)


def _hysteresis(dist: np.ndarray, low: float, high: float) -> np.ndarray:
    weak = dist > low
    labels, n = ndimage.label(weak)
    if n == 0:
        return weak
    strong = np.unique(labels[dist > high])
    return np.isin(labels, strong[strong > 0])


def _disk(radius: int) -> np.ndarray:
    r = max(1, radius)
    y, x = np.ogrid[-r:r + 1, -r:r + 1]
    return x * x + y * y <= r * r


def _shadows(ok: np.ndarray, bg_ok: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float]:
    """Subject pixels that are the table in shade (OKLab): darker, but not near-black
    (lightness 42–96 % of the table's), with the table's own a/b scaled down by the
    darkening, give or take the tint of the light that fills shadows. A component that is
    nearly all such pixels is a dark, muted candy (a black bean on grey), and is kept."""
    ratio = ok[..., 0] / np.maximum(bg_ok[..., 0], 1e-3)
    predicted = bg_ok[..., 1:] * ratio[..., None]
    tint = np.linalg.norm(ok[..., 1:] - predicted, axis=-1)
    shadow = mask & (ratio > 0.42) & (ratio < 0.96) & (tint < 0.045)
    labels, n = ndimage.label(mask)
    if n:
        share = ndimage.mean(shadow, labels, np.arange(1, n + 1))
        dark_muted = np.isin(labels, np.flatnonzero(np.asarray(share) > 0.85) + 1)
        shadow &= ~dark_muted
    shadow &= ~_same_as_candy(ok, mask & ~shadow, shadow)
    contrast = float(1 - np.median(ratio[shadow])) if shadow.sum() > 20 else 0.0
    return shadow, contrast


def _same_as_candy(ok: np.ndarray, candy: np.ndarray, shadow: np.ndarray) -> np.ndarray:
    """Shade-like pixels that continue a candy in its own colour (the muted top of a plum
    bean): same colour as the candy they touch, connected to it."""
    labels, n = ndimage.label(candy)
    if n == 0 or not shadow.any():
        return np.zeros_like(shadow)
    back = np.zeros_like(shadow)
    for index, sl in enumerate(ndimage.find_objects(labels), start=1):
        pad = tuple(slice(max(0, s.start - 8), s.stop + 8) for s in sl)
        piece = labels[pad] == index
        colour = np.median(ok[pad][piece], axis=0)
        if float(np.hypot(colour[1], colour[2])) > 0.05 or ndimage.distance_transform_edt(piece).max() < 8:
            continue  # colourful, or too small to tell its own shade from its shadow
        near = shadow[pad] & (np.linalg.norm(ok[pad] - colour, axis=-1) < 0.05)
        grown, _ = ndimage.label(piece | near)
        keep = np.isin(grown, np.unique(grown[piece]))
        back[pad] |= near & keep
    return back


def _solidity(blob: np.ndarray) -> float:
    ys, xs = np.nonzero(blob)
    if len(xs) < 6 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return 1.0
    corners = np.column_stack([xs, ys]).astype(float)
    corners = np.concatenate([corners + offset for offset in ((0, 0), (1, 0), (0, 1), (1, 1))])
    try:
        return float(min(1.0, blob.sum() / ConvexHull(corners).volume))
    except Exception:  # degenerate outline (a line of pixels)
        return 1.0


def _lobes(dist: np.ndarray, radius: float) -> int:
    """Thick parts of a blob at least a bean's half-width apart: a pile's beans show as
    separate peaks of the distance to the edge, a single bean as one ridge."""
    size = max(3, int(radius * 1.2) | 1)
    peaks = (dist == ndimage.maximum_filter(dist, size=size)) & (dist >= 0.55 * radius)
    return max(1, ndimage.label(ndimage.binary_dilation(peaks, iterations=max(1, int(radius * 0.3))))[1])


def _components(mask: np.ndarray, min_area: int) -> tuple[np.ndarray, list[Component]]:
    labels, n = ndimage.label(mask)
    if n == 0:
        return labels, []
    dist = ndimage.distance_transform_edt(mask)
    out = []
    index = np.arange(1, n + 1)
    areas = ndimage.sum(mask, labels, index)
    radii = ndimage.maximum(dist, labels, index)
    centres = ndimage.center_of_mass(mask, labels, index)
    slices = ndimage.find_objects(labels)
    keep = np.zeros(n + 1, bool)
    floor = max(min_area, 0.06 * float(np.max(areas)))  # crumbs beside a big candy are not candy
    for i, (area, radius, centre, sl) in enumerate(zip(areas, radii, centres, slices), start=1):
        if area < floor or radius < 1.5:
            continue
        solidity = _solidity(labels[sl] == i)
        if solidity < 0.3:
            continue  # a ragged sliver: leftover shadow or table grain, not a candy
        keep[i] = True
        out.append(Component(int(area), (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop), float(radius),
                             (float(centre[1]), float(centre[0])), solidity,
                             _lobes(dist[sl] * (labels[sl] == i), float(radius))))
    return np.where(keep[labels], labels, 0), out


def _bowl(ok: np.ndarray, bg_ok: np.ndarray, labels: np.ndarray,
          comps: list[Component]) -> tuple[np.ndarray, np.ndarray] | None:
    """(bowl pixels, candy in it) when the biggest blob is a bowl: a large ellipse whose
    outer rim is one plain, muted colour, holding candy-sized blobs of other colours.
    Inside the bowl its rim colour is the background; lightness is ignored there because a
    bowl's hollow runs from lit to shaded."""
    if not comps:
        return None
    h, w = labels.shape
    big = max(comps, key=lambda c: c.area)
    if big.area < 0.03 * h * w:
        return None
    index = labels[int(big.centre[1]), int(big.centre[0])] or np.bincount(labels[labels > 0]).argmax()
    region = ndimage.binary_fill_holes(labels == index)
    x0, y0, x1, y1 = big.box
    fill = region.sum() / (np.pi / 4 * (x1 - x0) * (y1 - y0))
    if not 0.85 < fill < 1.12:
        return None  # not round: a pile, a bean
    rim = region & ~ndimage.binary_erosion(region, _disk(max(2, int(big.radius * 0.1))))
    rim_ab = np.median(ok[rim][:, 1:], axis=0)
    rim_light = float(np.median(ok[rim][:, 0]))
    gap = np.linalg.norm(ok[..., 1:] - rim_ab, axis=-1)
    if float(np.hypot(*rim_ab)) > 0.08 or (gap[rim] < 0.03).mean() < 0.7 or rim_light < 0.5:
        return None  # a colourful, mottled or dark rim: a candy, not plain light ceramic
    candy = region & ~rim & ((gap > 0.04) | (ok[..., 0] < 0.45 * rim_light))
    candy = ndimage.binary_opening(candy, _disk(1))
    pieces, n = ndimage.label(candy)
    if n == 0:
        return None
    radii = ndimage.maximum(ndimage.distance_transform_edt(candy), pieces, np.arange(1, n + 1))
    if float(np.max(radii)) < 0.08 * big.radius or candy.sum() < 0.04 * region.sum():
        return None  # only specks inside: a speckled bean, not a bowl of beans
    if float(np.max(radii)) > 0.6 * big.radius:
        return None  # one thing filling it: not a bowl
    if rim_light < float(np.median(bg_ok[rim][:, 0])) - 0.08 and float(np.max(radii)) > 0.35 * big.radius:
        return None  # one big candy in a darker ring: its own shadow, not a bowl
    inside = ok[candy]
    if float(np.median(np.hypot(inside[:, 1], inside[:, 2]))) < 0.07 and \
            float(np.median(inside[:, 0])) < rim_light - 0.2:
        return None  # dark, muted flecks on a pale body: a speckled bean
    return region & ~candy, candy


def segment(srgb: np.ndarray) -> Segmentation:
    """Subject mask, components, bowl and background model of one photo."""
    linear = to_linear(srgb)
    lab = linear_to_lab(linear)
    h, w = lab.shape[:2]
    ring = _ring(h, w)
    bg, inliers = _fit_surface(lab, ring)
    dist = _distance(lab, bg)
    texture = float(np.percentile(dist[inliers], 95))
    high = max(14.0, 2.2 * texture)
    mask = _hysteresis(dist, 0.55 * high, high)
    unit = max(1, int(round(min(h, w) / 160)))
    mask = ndimage.binary_opening(mask, _disk(unit))
    mask = ndimage.binary_fill_holes(mask)  # bean highlights and logos belong to the bean

    ok = linear_to_oklab(linear)
    bg_ok = linear_to_oklab(lab_to_linear(bg))
    min_area = max(6, int(0.0004 * h * w))
    shadow, contrast = _shadows(ok, bg_ok, mask)
    shadow_share = float(shadow.sum() / max(1, mask.sum()))
    lit = ndimage.binary_fill_holes(mask & ~shadow)  # specks are not holes
    # Smooth the outline (a dark bean's shaded edge comes and goes), then drop crumbs.
    lit = ndimage.binary_opening(ndimage.binary_closing(lit, _disk(unit)), _disk(unit))

    # A bowl first, with and without shadows: a grey bowl on a grey table reads as shade.
    bowl = candy = None
    for candidate in (lit, mask):
        labels, comps = _components(candidate, min_area)
        found = _bowl(ok, bg_ok, labels, comps)
        if found is not None:
            bowl, candy = found
            break
    if bowl is not None:
        lit = (lit & ~ndimage.binary_dilation(bowl, _disk(unit))) | candy
    labels, comps = _components(lit, min_area)
    return Segmentation(srgb=srgb, linear=linear, lab=lab, mask=labels > 0, background=bg, border=ring,
                        texture=texture, components=comps, bowl=bowl, shadow_share=shadow_share,
                        shadow_contrast=contrast)
