"""Plain colour words for the candy's pixels.

Works in OKLab after correcting the light's colour cast (from a neutral-looking table,
else from the candy's specular highlights). Highlights, logos and speckles are set
aside (small bright or dark spots), the rest is clustered, clusters that differ only
in shading are merged, and each cluster gets one of the ten words by lightness,
chroma and hue.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.cluster.vq import kmeans2

from clood_candy_plugins.captioners.colour_space import lch, linear_to_oklab
from clood_candy_plugins.captioners.subject_mask import Segmentation, _disk

MIN_SHARE = 0.07  # a colour must cover this share of the candy to be named
ONE_BEAN_AREA = 5.2  # a bean's area over its inscribed radius squared (π/4 · 2r · 2r/0.6)


def name_colour(lightness: float, chroma: float, hue: float) -> str:
    """One of red, orange, yellow, green, blue, purple, pink, white, black, brown for an
    OKLCh colour (lightness 0..1, chroma ~0..0.3, hue in degrees)."""
    # Dark colours carry little chroma even when saturated (a plum bean: 0.025).
    grey_limit = 0.016 + 0.03 * max(0.0, lightness - 0.45) / 0.4
    if lightness < 0.16 or (chroma < grey_limit):
        return "white" if lightness >= 0.6 else "black"
    if chroma < 0.045 and lightness >= 0.72:
        return "white"  # cream, ivory: a tint is not a colour
    if hue >= 345 or hue < 15:
        return "pink" if lightness >= 0.64 else ("purple" if hue < 352 and lightness < 0.42 else "red")
    if hue < 40:
        if lightness >= 0.72 and chroma < 0.16:
            return "pink"
        return "brown" if chroma < 0.06 and lightness < 0.5 else "red"
    if hue < 72:
        return "orange" if lightness >= 0.56 and chroma >= 0.07 else "brown"
    if hue < 112:
        return "yellow" if lightness >= 0.6 else ("brown" if hue < 95 else "green")
    if hue < 200:
        return "green"
    if hue < 292:
        return "blue"
    return "pink" if lightness >= 0.7 else "purple"


@dataclass
class ColourReport:
    colours: list[str]  # most of the candy first
    shares: dict[str, float] = field(default_factory=dict)
    speckled: bool | None = False  # None: candies too small in the frame to tell
    speckle_share: float = 0.0
    cast: tuple[float, float, float] = (1.0, 1.0, 1.0)  # the light's colour (linear RGB, mean 1)
    cast_source: str = "none"  # table | highlights | none


def light_cast(seg: Segmentation) -> tuple[np.ndarray, str]:
    """The light's colour as linear-RGB gains (mean 1): from the table when it looks like a
    lit neutral (white/grey paper under warm or cool light), else from the candy's
    specular highlights, else none."""
    table = ~seg.mask & ~ndimage.binary_dilation(seg.mask, _disk(3))
    if seg.bowl is not None:
        table &= ~seg.bowl
    if table.sum() > 50:
        bg = np.median(seg.linear[table], axis=0)
        ok = linear_to_oklab(bg)
        lightness, chroma, hue = (float(v) for v in lch(ok))
        # A lamp turns white paper cream (chroma ~0.05), never as colourful as wood (~0.09);
        # and light tints lie on the warm–cool line, never green or magenta. Grain says wood.
        grainy = float(np.std(seg.lab[..., 0][table] - seg.background[..., 0][table])) > 4.5
        tinted_like_light = chroma < 0.03 or (
            chroma < 0.065 and lightness > 0.6 and not grainy and (40 <= hue <= 110 or 215 <= hue <= 275))
        if tinted_like_light and lightness > 0.45:
            return bg / bg.mean(), "table"
    # Specular highlights mirror the light itself: small bright peaks on the candy.
    if seg.mask.sum() > 30:
        lightness = linear_to_oklab(seg.linear)[..., 0]
        radius = max(2, int(round(min(c.radius for c in seg.components) * 0.45)))
        peaks, _ = _spots(lightness, seg.mask, radius)
        if peaks.sum() >= 3:
            top = seg.linear[peaks & (lightness >= np.percentile(lightness[peaks], 70))]
            spec = np.median(top, axis=0)
            lightness, chroma, hue = (float(v) for v in lch(linear_to_oklab(spec)))
            light_like = chroma < 0.03 or (chroma < 0.12 and (35 <= hue <= 110 or 215 <= hue <= 275))
            if lightness > 0.75 and light_like:
                return spec / spec.mean(), "highlights"
    return np.ones(3, np.float32), "none"


def _spots(lightness: np.ndarray, mask: np.ndarray, radius: int,
           dark_radius: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(bright spots smaller than ``radius``, dark spots smaller than ``dark_radius``):
    highlights and logos, speckles."""
    filled = np.where(mask, lightness, np.median(lightness[mask]) if mask.any() else 0)
    bright = filled - ndimage.grey_opening(filled, footprint=_disk(radius))
    dark = ndimage.grey_closing(filled, footprint=_disk(dark_radius or radius)) - filled
    return mask & (bright > 0.08), mask & (dark > 0.1)


def _specks(ok: np.ndarray, comp: np.ndarray, radius: float) -> np.ndarray:
    """Speckles on one candy: spots in its middle (the shaded rim is left out) much darker
    than its body, or of another hue. Shade forms one patch; speckles are many."""
    interior = ndimage.binary_erosion(comp, _disk(max(1, int(radius * 0.2))))
    if interior.sum() < 20:
        return np.zeros_like(comp)
    light, chroma, hue = lch(ok)
    body_light = float(np.percentile(light[interior], 60))
    lit = interior & (light >= body_light - 0.05)
    a, b = float(np.median(ok[..., 1][lit])), float(np.median(ok[..., 2][lit]))
    body_chroma, body_hue = float(np.hypot(a, b)), float(np.degrees(np.arctan2(b, a)) % 360)
    gap = np.minimum(np.abs(hue - body_hue), 360 - np.abs(hue - body_hue))
    darker = interior & (light < body_light - 0.12)
    unlike = (body_light - light > 0.2) | ((gap > 25) & (chroma > 0.03) & (body_chroma > 0.04))
    return darker & unlike


def _unlike_body(ok: np.ndarray, body: np.ndarray, spots: np.ndarray) -> np.ndarray:
    """Dark spots that are not just the candy's own colour in shade (mottled cherry red):
    speckles differ in hue, or are much darker than the body around them."""
    if not body.any() or not spots.any():
        return spots
    light, chroma, hue = lch(ok)
    b_light = float(np.median(light[body]))
    b_chroma = float(np.median(chroma[body]))
    b_hue = float(np.degrees(np.arctan2(np.median(ok[..., 2][body]), np.median(ok[..., 1][body]))) % 360)
    gap = np.minimum(np.abs(hue - b_hue), 360 - np.abs(hue - b_hue))
    return (b_light - light > 0.22) | ((gap > 25) & (b_chroma > 0.04)) | ((chroma > 0.04) & (b_chroma < 0.04))


def _one_colour(pixels: np.ndarray) -> str:
    """The name of one candy's pixels: the median of its more colourful part (edges mixed
    with the table and shaded sides pull towards grey)."""
    _, chroma, _ = lch(pixels)
    rich = pixels[chroma >= np.percentile(chroma, 40)]
    a, b = float(np.median(rich[:, 1])), float(np.median(rich[:, 2]))
    return name_colour(float(np.percentile(rich[:, 0], 60)), float(np.hypot(a, b)),
                       float(np.degrees(np.arctan2(b, a)) % 360))


def subject_colours(seg: Segmentation) -> ColourReport:
    """The candy's colour words, biggest share first, and whether it is speckled.

    Candies lying apart are named one by one (one candy, one colour); a pile or bowl is
    clustered, since one blob holds several candies. Speckles are judged only on candies
    big enough in the frame to show them (``speckled`` None otherwise)."""
    if not seg.found:
        return ColourReport(colours=[])
    gains, source = light_cast(seg)
    ok = linear_to_oklab(seg.linear / np.clip(gains, 0.5, 2.0))
    lightness = ok[..., 0]
    unit = max(1, int(round(min(seg.shape) / 160)))
    labels, n = ndimage.label(seg.mask)

    # Which labelled blob is which component: one candy gets one colour, a pile is clustered.
    one_candy = {int(labels[int(c.centre[1]), int(c.centre[0])]): c.one_candy for c in seg.components}
    lone = [c.radius for c in seg.components if c.one_candy]
    bean_radius = float(np.median(lone)) if lone else None
    weights: dict[str, float] = {}
    speck_votes = [0.0, 0.0]  # speckled area, judged area
    speckle_px = judged_px = 0
    for index, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        comp = labels[sl] == index
        area = int(comp.sum())
        inner = ndimage.binary_erosion(comp, _disk(unit))
        if inner.sum() < 0.3 * area:
            inner = comp
        radius = float(ndimage.distance_transform_edt(comp).max())
        alone = one_candy.get(index, area <= 1.3 * ONE_BEAN_AREA * radius * radius)
        # Spot sizes follow one bean, not the blob: in a pile a whole darker bean is no speck.
        bean = radius if alone else min(radius / 1.25, bean_radius or radius)
        bright, dark = _spots(lightness[sl], inner, max(2, int(round(bean * 0.45))), max(2, int(round(bean * 0.2))))
        if bean >= 9 and alone:  # a speck needs pixels on the candy; piles have crevices
            specks = _specks(ok[sl], comp, radius)
            blobs = int(np.count_nonzero(np.bincount(ndimage.label(specks)[0].ravel())[1:] >= 2))
            share = float(specks.sum() / max(1, comp.sum()))
            speck_votes[0] += area if (0.03 <= share <= 0.6 and blobs >= 4) else 0
            speck_votes[1] += area
            speckle_px += int(specks.sum())
            judged_px += int(comp.sum())
            dark = specks
        else:
            dark &= _unlike_body(ok[sl], inner & ~bright & ~dark, dark)
        body = inner & ~bright & ~dark
        if body.sum() < 0.3 * inner.sum():
            body = inner & ~dark if (inner & ~dark).sum() >= 0.3 * inner.sum() else inner
        pixels = ok[sl][body]
        if len(pixels) < 4:
            continue
        if alone:
            name = _one_colour(pixels)
            weights[name] = weights.get(name, 0.0) + area
        else:
            names, shares = _cluster_names(pixels)
            for name in names:
                weights[name] = weights.get(name, 0.0) + area * shares[name]
    total = sum(weights.values()) or 1.0
    shares = {k: round(v / total, 3) for k, v in sorted(weights.items(), key=lambda kv: -kv[1])}
    speckled = None if not speck_votes[1] else speck_votes[0] >= 0.5 * speck_votes[1]
    report = ColourReport(colours=[c for c, v in shares.items() if v >= MIN_SHARE], shares=shares,
                          speckled=speckled, speckle_share=speckle_px / max(1, judged_px),
                          cast=tuple(float(g) for g in gains), cast_source=source)
    if not report.colours and shares:
        report.colours = list(shares)[:1]
    return report


def _hue_gap(a: float, b: float) -> float:
    return min(abs(a - b), 360 - abs(a - b))


@dataclass
class _Group:
    size: int
    lightness: float  # of its biggest member: the lit colour
    a: float  # size-weighted mean of the members' median a/b
    b: float

    @property
    def chroma(self) -> float:
        return float(np.hypot(self.a, self.b))

    @property
    def hue(self) -> float:
        return float(np.degrees(np.arctan2(self.b, self.a)) % 360)

    def absorbs(self, other: "_Group") -> bool:
        """True when ``other`` is this candy in different light: the same hue when both
        are colourful; nearly the same a/b when both are muted (a plum bean's shaded
        side, a licorice bean's highlights)."""
        if self.chroma > 0.05 and other.chroma > 0.05:
            return _hue_gap(self.hue, other.hue) < 18
        if self.chroma <= 0.05 and other.chroma <= 0.05:
            return float(np.hypot(self.a - other.a, self.b - other.b)) < 0.02 and abs(self.lightness - other.lightness) < 0.3
        return False

    def add(self, other: "_Group") -> None:
        total = self.size + other.size
        self.a = (self.a * self.size + other.a * other.size) / total
        self.b = (self.b * self.size + other.b * other.size) / total
        self.size = total


def _cluster_names(pixels: np.ndarray) -> tuple[list[str], dict[str, float]]:
    """k-means on lightness-damped OKLab, clusters of the same candy in light and shade
    merged, each group named by its lit colour."""
    n = len(pixels)
    if n == 0:
        return [], {}
    if n > 4000:  # k-means on a fixed sample: the same answer, faster
        pixels = pixels[np.random.default_rng(0).choice(n, 4000, replace=False)]
    feats = np.column_stack([pixels[:, 0] * 0.4, pixels[:, 1], pixels[:, 2]]).astype(np.float64)
    k = int(min(6, max(1, len(pixels) // 40)))
    if k > 1:
        _, labels = kmeans2(feats, k, seed=np.random.default_rng(0), minit="++", iter=20)
    else:
        labels = np.zeros(len(feats), int)
    clusters = []
    for j in range(int(labels.max()) + 1):
        member = pixels[labels == j]
        if len(member):
            clusters.append(_Group(len(member), float(np.percentile(member[:, 0], 65)),
                                   float(np.median(member[:, 1])), float(np.median(member[:, 2]))))
    clusters.sort(key=lambda c: -c.size)
    groups: list[_Group] = []
    for cluster in clusters:
        home = next((g for g in groups if g.absorbs(cluster)), None)
        if home is None:
            groups.append(cluster)
        else:
            home.add(cluster)
    weights: dict[str, float] = {}
    for g in groups:
        if len(groups) > 1 and g.size < 0.25 * len(pixels) and 0.02 <= g.chroma < 0.06 and g.lightness < 0.5:
            continue  # a minor dull, dark part of a group: shade between candies, not a candy
        name = name_colour(g.lightness, g.chroma, g.hue)
        weights[name] = weights.get(name, 0.0) + g.size / len(pixels)
    total = sum(weights.values()) or 1.0
    names = sorted(weights, key=lambda w: -weights[w])
    return names, {w: round(weights[w] / total, 3) for w in names}
