"""What surrounds the candy, from pixels: the table, the light, the framing, the layout.

Each reader returns a plain word from the caption vocabulary (or None when the pixels do
not say) plus the numbers it decided on, so the report can show why.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage

from clood_candy.captions import metadata
from clood_candy_plugins.captioners.colour_names import name_colour
from clood_candy_plugins.captioners.colour_space import lch, linear_to_oklab
from clood_candy_plugins.captioners.subject_mask import Component, Segmentation, _disk

BEAN_WIDTH_RATIO = 0.6  # a jellybean is about 0.6 times as wide as it is long
ONE_BEAN_AREA = 5.2  # a bean's area over its inscribed radius squared (π/4 · 2r · 2r/0.6)


def table_pixels(seg: Segmentation) -> np.ndarray:
    """The visible table: not candy, not bowl, not right next to either (shadows, edges)."""
    near = seg.mask if seg.bowl is None else (seg.mask | seg.bowl)
    table = ~ndimage.binary_dilation(near, _disk(max(2, int(min(seg.shape) * 0.02))))
    return table if table.sum() > 0.05 * table.size else ~near


def _detrended_lightness(seg: Segmentation) -> np.ndarray:
    return seg.lab[..., 0] - seg.background[..., 0]


def _grain(resid: np.ndarray, table: np.ndarray) -> float:
    """Coherence of the table's texture (0: none or any direction, 1: all one way, like wood
    grain), from the structure tensor averaged over the table."""
    gy, gx = np.gradient(ndimage.gaussian_filter(resid, 0.7))
    jxx = ndimage.gaussian_filter(gx * gx, 3)[table].mean()
    jyy = ndimage.gaussian_filter(gy * gy, 3)[table].mean()
    jxy = ndimage.gaussian_filter(gx * gy, 3)[table].mean()
    root = math.sqrt((jxx - jyy) ** 2 + 4 * jxy * jxy)
    return float(root / (jxx + jyy + 1e-6))


def background(seg: Segmentation, cast: np.ndarray, flash: bool = False) -> tuple[str | None, dict[str, float]]:
    """white, grey, dark, wood, "<colour> cloth", or textured. White and grey differ by
    how bright the lit part of the table is (a flash lights only the middle: its peak)."""
    table = table_pixels(seg)
    if table.sum() < 30:
        return None, {}
    # White-patch balance (the cast's strongest channel kept): a lamp must not turn white
    # paper grey. Lightness is the lit part of the table (a flash leaves the edges dark).
    balanced = seg.linear[table] / np.clip(cast / max(float(np.max(cast)), 1e-3), 0.3, 1.0)
    ok = linear_to_oklab(np.median(balanced, axis=0))
    _, chroma, hue = (float(v) for v in lch(ok))
    lightness = float(np.percentile(linear_to_oklab(balanced)[:, 0], 99 if flash else 95))
    resid = _detrended_lightness(seg)
    texture = float(np.std(resid[table]))
    fine = float(np.median(np.abs(resid - ndimage.gaussian_filter(resid, 1.5))[table]))  # weave, fibre, grit
    grain = _grain(resid, table)
    facts = {"table_lightness": round(lightness, 3), "table_chroma": round(chroma, 3), "table_hue": round(hue, 1),
             "table_texture": round(texture, 2), "table_fine": round(fine, 2),
             "table_grain": round(grain, 3)}
    # Wood: warm, and grained (texture running one way); its colour fades under a flash.
    grained = grain > 0.5 and fine > 0.5
    if 30 <= hue <= 100 and 0.3 <= lightness and ((grained and chroma >= 0.02) or (0.03 <= chroma <= 0.16 and grain > 0.35)):
        return "wood", facts
    if lightness < 0.3:
        return "dark", facts
    if chroma < 0.035:
        if lightness >= 0.86:
            return "white", facts  # bright enough to be white, however textured (a felt pad)
        if fine >= 0.35:
            return ("grey cloth" if grain < 0.35 else "textured"), facts
        return "grey", facts
    colour = name_colour(lightness, chroma, hue)
    if colour in ("white", "black"):
        return ("white" if colour == "white" else "dark"), facts
    return f"{colour} cloth", facts


def lighting(seg: Segmentation, cast: np.ndarray, cast_source: str,
             exif: dict[str, Any]) -> tuple[str | None, dict[str, float]]:
    """flash (EXIF, or a hot centre fading fast to dark edges), warm indoor light (an orange
    cast, or a room's light level with nothing neutral in view to tell its colour), indoor
    light (a room's level, neutral), dim light, or daylight.

    The light level comes from the camera's meter (EXIF) when it is there: pixels alone
    cannot tell a dim room from a dark table, since cameras expose everything to look bright."""
    table = table_pixels(seg)
    light = seg.lab[..., 0]
    h, w = seg.shape
    cy, cx = h // 2, w // 2
    centre = light[cy - h // 6: cy + h // 6, cx - w // 6: cx + w // 6]
    corners = np.concatenate([light[: h // 8, : w // 8].ravel(), light[: h // 8, -w // 8:].ravel(),
                              light[-h // 8:, : w // 8].ravel(), light[-h // 8:, -w // 8:].ravel()])
    falloff = float(np.median(corners) / max(np.median(centre), 1.0))
    warmth = float(cast[0] / max(cast[2], 1e-3))
    scene = float(np.median(light[table])) if table.any() else float(np.median(light))
    level = metadata.light_level(exif)
    facts = {"warmth": round(warmth, 2), "falloff": round(falloff, 2), "scene_lightness": round(scene, 1),
             "shadow_contrast": round(seg.shadow_contrast, 2)}
    if level is not None:
        facts["light_level_ev"] = round(level, 1)
    if metadata.flash_fired(exif):
        return "flash", facts
    if falloff < 0.45 and scene < 45 and (level is None or level < 9):
        return "flash", facts  # a hot middle and dark edges: on-camera flash in the dark
    if level is not None and level >= 10:
        return "daylight", facts  # no lamp is this bright; a warm cast here is low sun
    if warmth > 1.45:
        return "warm indoor light", facts
    if level is not None:
        if level <= 3:
            return "dim light", facts
        neutral_seen = cast_source == "table" and warmth < 1.15
        return ("indoor light" if neutral_seen else "warm indoor light"), facts
    if scene < 30:
        return "dim light", facts
    return "daylight", facts


def _is_one_candy(c: Component) -> bool:
    return c.one_candy


def bean_length(seg: Segmentation) -> float:
    """Typical single-bean length in pixels: from lone candies when there are any, else from
    the inscribed radius of the piles (about one bean's half-width, a little more)."""
    singles = [c.radius for c in seg.components if _is_one_candy(c)]
    if singles:
        return 2 * float(np.median(singles)) / BEAN_WIDTH_RATIO
    radii = [c.radius for c in seg.components]
    return 2 * float(np.median(radii)) / 1.25 / BEAN_WIDTH_RATIO if radii else 0.0


def layout(seg: Segmentation) -> tuple[int | None, str | None, dict[str, float]]:
    """(count, arrangement, numbers): single, few, pile, scattered or bowl."""
    if not seg.found:
        return None, None, {}
    singles = [c.area for c in seg.components if _is_one_candy(c)]
    if singles:
        single_area = float(np.median(singles))
    else:
        # No lone candy to measure: a pile's widest point is about one bean wide.
        single_area = ONE_BEAN_AREA * float(np.median([c.radius for c in seg.components])) ** 2
    per_comp = [1 if _is_one_candy(c) else max(2, c.lobes, round(c.area / max(single_area, 1.0)))
                for c in seg.components]
    count = int(sum(per_comp))
    biggest = max(per_comp)
    facts = {"components": float(len(seg.components)), "largest_group": float(biggest)}
    if seg.bowl is not None:
        return count, "bowl", facts
    if count == 1:
        return 1, "single", facts
    touching = sum(n for n in per_comp if n > 1)
    if (biggest >= 2 and biggest >= 0.6 * count) or (count >= 3 and touching >= 0.75 * count):
        return count, "pile", facts
    if count <= 4:
        return count, "few", facts
    return count, "scattered", facts


def framing(seg: Segmentation, arrangement: str | None) -> tuple[str | None, dict[str, float]]:
    """macro close-up, medium shot or wide shot, from how big one candy is in the frame:
    a lone candy close up fills a third of it or more; in a close-up of a group each candy
    is smaller (the group fills the frame), so the bar is halved for groups."""
    if not seg.found:
        return None, {}
    h, w = seg.shape
    bean = bean_length(seg) / max(h, w)
    x0 = min(c.box[0] for c in seg.components)
    y0 = min(c.box[1] for c in seg.components)
    x1 = max(c.box[2] for c in seg.components)
    y1 = max(c.box[3] for c in seg.components)
    facts = {"bean_share": round(bean, 3), "subject_fill": round((x1 - x0) * (y1 - y0) / (h * w), 3)}
    macro, medium = (0.33, 0.14) if arrangement == "single" else (0.17, 0.085)
    if bean >= macro:
        return "macro close-up", facts
    return ("medium shot" if bean >= medium else "wide shot"), facts
