"""One jellybean: shape, shading and shadows, rendered into a small patch.

Everything works on a float32 *linear-light* RGB canvas laid out channel-first
(3, H, W) -- numpy broadcasts a colour over (3, H, W) several times faster
than over (H, W, 3). Each bean
only touches the pixels of its own bounding patch, so cost scales with bean
area rather than image area.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# sRGB colours of the palette words (labels.BEAN_COLOURS).
PALETTE_SRGB: dict[str, tuple[int, int, int]] = {
    "red": (200, 20, 32),
    "orange": (248, 116, 16),
    "yellow": (250, 204, 36),
    "green": (70, 170, 44),
    "blue": (30, 82, 200),
    "purple": (100, 34, 130),
    "pink": (246, 130, 170),
    "white": (238, 234, 220),
    "black": (30, 24, 30),
    "brown": (118, 64, 30),
    "teal": (20, 150, 150),  # no brand sells it: the held-out look (looks.py)
}


def srgb_to_linear(rgb) -> np.ndarray:
    return (np.asarray(rgb, np.float32) / 255.0) ** 2.2


def value_noise(x: np.ndarray, y: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Smooth [0, 1] noise sampled at arbitrary coordinates (wraps on the grid).

    Used where a texture must follow a bean's own (bent, rotated) surface.
    """
    gh, gw = grid.shape
    xf, yf = np.floor(x), np.floor(y)
    fx, fy = x - xf, y - yf
    fx = fx * fx * (3 - 2 * fx)
    fy = fy * fy * (3 - 2 * fy)
    x0 = xf.astype(np.int64) % gw
    y0 = yf.astype(np.int64) % gh
    x1, y1 = (x0 + 1) % gw, (y0 + 1) % gh
    a, b, c, d = grid[y0, x0], grid[y0, x1], grid[y1, x0], grid[y1, x1]
    return (a + (b - a) * fx + (c - a) * fy + (a - b - c + d) * fx * fy).astype(np.float32)


@dataclass
class Light:
    """Key light as seen by the beans (and any other 3D-ish object)."""

    direction: tuple[float, float, float]  # towards the light: x right, y down, z to camera
    shadow_offset: tuple[float, float]  # cast-shadow shift, in bean widths
    shadow_soft: float  # blur of the cast shadow edge, in bean widths
    shadow_colour: tuple[float, float, float]  # light left in full shadow (ambient fill)
    ambient: float = 0.3

    @property
    def dir(self) -> np.ndarray:
        v = np.asarray(self.direction, np.float32)
        return v / np.linalg.norm(v)


@dataclass
class Bean:
    x: float  # centre, image px
    y: float
    length: float  # long axis, px
    width: float  # short axis, px (before perspective squash)
    angle: float  # radians
    bend: float  # 0 = straight ellipse; ~0.3 = kidney
    colour: str
    speckled: bool = False
    squash: float = 1.0  # vertical foreshortening of the angled view
    gloss: float = 1.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)  # per-bean colour jitter
    seed: int = 0
    taper: float = 0.08  # one end slightly fatter

    @property
    def radius(self) -> float:
        """Conservative half-extent of the silhouette, px."""
        return 0.5 * self.length * 1.04 + 0.5 * self.width * self.bend + 2.0


def _grid(x0: int, y0: int, x1: int, y1: int):
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
    return xs, ys


def _shape(bean: Bean, xs, ys, cx: float, cy: float, grow: float = 1.0):
    """Implicit bean: q < 1 inside, q == 1 on the silhouette.

    An ellipse whose long axis is bent along a parabola (kidney shape), with
    blunt ends (exponent > 2 along the long axis) and a slight taper.
    """
    dx = xs - cx
    dy = (ys - cy) / bean.squash
    c, s = math.cos(bean.angle), math.sin(bean.angle)
    u = dx * c + dy * s
    v = -dx * s + dy * c
    a = 0.5 * bean.length * grow
    b = 0.5 * bean.width * grow
    un = u / a
    vn = (v - bean.bend * b * (un * un - 0.35)) / (b * (1.0 + bean.taper * un))
    q = np.abs(un) ** 2.3 + vn * vn
    return q.astype(np.float32), un, vn


def _edge_distance(q: np.ndarray) -> np.ndarray:
    """Approximate signed pixel distance to the silhouette (for anti-aliasing)."""
    sq = np.sqrt(q)
    gy, gx = np.gradient(sq)
    return (sq - 1.0) / np.maximum(np.hypot(gx, gy), 1e-3)


def _patch(img: np.ndarray, cx: float, cy: float, rx: float, ry: float):
    h, w = img.shape[1:]
    x0, x1 = max(int(cx - rx) - 2, 0), min(int(cx + rx) + 3, w)
    y0, y1 = max(int(cy - ry) - 2, 0), min(int(cy + ry) + 3, h)
    if x1 - x0 < 3 or y1 - y0 < 3:
        return None
    return x0, y0, x1, y1


def draw_shadows(img: np.ndarray, bean: Bean, light: Light) -> None:
    """Contact shadow (tight, dark) plus the cast shadow from the key light."""
    tint = np.asarray(light.shadow_colour, np.float32)[:, None, None]
    ox = light.shadow_offset[0] * bean.width
    oy = light.shadow_offset[1] * bean.width * bean.squash
    # (centre dx, dy, grow, softness px, darkness) -- cast first, contact on top
    passes = [
        (ox, oy, 1.0 + 0.15 * light.shadow_soft, max(1.0, light.shadow_soft * bean.width), 1.0),
        (0.0, 0.06 * bean.width * bean.squash, 1.06, max(1.0, 0.12 * bean.width), 1.0),
    ]
    for dx, dy, grow, soft, dark in passes:
        cx, cy = bean.x + dx, bean.y + dy
        r = bean.radius * grow + soft * 1.5
        box = _patch(img, cx, cy, r, r * bean.squash + soft)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        xs, ys = _grid(x0, y0, x1, y1)
        q, _, _ = _shape(bean, xs, ys, cx, cy, grow)
        d = _edge_distance(q)
        t = np.clip(0.5 - d / soft, 0.0, 1.0)
        amount = (t * t * (3 - 2 * t) * dark)[None]
        region = img[:, y0:y1, x0:x1]
        region *= 1.0 - amount * (1.0 - tint)


def _speckles(bean: Bean, un, vn, rng: np.random.Generator) -> np.ndarray:
    """Irregular dots that stick to the bean surface (bend and rotate with it)."""
    grid = rng.random((48, 48), dtype=np.float32)
    spacing = 0.07 * bean.width
    a, b = 0.5 * bean.length, 0.5 * bean.width
    n = value_noise(un * a / spacing + 7.3, vn * b / spacing + 3.1, grid)
    n2 = value_noise(un * a / (spacing * 0.55) + 1.7, vn * b / (spacing * 0.55), grid.T.copy())
    m = np.clip((n * 0.7 + n2 * 0.3 - 0.64) / 0.05, 0.0, 1.0)
    return m * m * (3 - 2 * m)


def draw_bean(img: np.ndarray, bean: Bean, light: Light) -> tuple[int, int, int, int] | None:
    """Composite one glossy bean; returns the pixel box of its alpha > 0.5."""
    r = bean.radius
    box = _patch(img, bean.x, bean.y, r, r * bean.squash)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    xs, ys = _grid(x0, y0, x1, y1)
    q, un, vn = _shape(bean, xs, ys, bean.x, bean.y)
    alpha = np.clip(0.5 - _edge_distance(q), 0.0, 1.0)

    # Height field of a plump bean -> surface normals in image space.
    z = 0.45 * bean.width * np.sqrt(np.clip(1.0 - q, 0.0, 1.0))
    # Hand-made candy is not a perfect ellipsoid: faint dents wobble the highlight.
    rng = np.random.default_rng(bean.seed)
    bump = value_noise(un * 2.5, vn * 2.0, rng.random((16, 16), dtype=np.float32)) - 0.5
    z = z + (0.05 * bean.width) * bump * (z > 0)
    zy, zx = np.gradient(z)
    nz = 1.0 / np.sqrt(zx * zx + zy * zy + 1.0)
    nx, ny = -zx * nz, -zy * nz
    L = light.dir
    ndl = nx * L[0] + ny * L[1] + nz * L[2]

    base = srgb_to_linear(PALETTE_SRGB[bean.colour]) * np.asarray(bean.tint, np.float32)
    base = np.clip(base, 0.002, 0.95)
    col = np.broadcast_to(base[:, None, None], (3,) + z.shape).copy()
    if bean.speckled:
        s = _speckles(bean, un, vn, rng)[None]
        lum = float(base @ np.array([0.3, 0.6, 0.1], np.float32))
        spot = base * 0.18 + np.float32(0.01) if lum > 0.12 else np.array([0.75, 0.68, 0.55], np.float32)
        col = col * (1 - s) + spot[:, None, None] * s

    # Translucent jelly: light travels further near the rim, so colour gets
    # deeper/more saturated there, and the shadow side still glows.
    depth = (1.0 + 0.6 * (1.0 - nz))[None]
    col_sat = col ** depth
    wrap = np.clip((ndl + 0.3) / 1.3, 0.0, 1.0)[None]
    lit = col_sat * (light.ambient + (1 - light.ambient) * wrap * 1.15)
    lit += col_sat * 0.3 * (1.0 - wrap) * np.sqrt(nz)[None]

    # Glossy sugar shell: tight highlight streak + broad sheen + grazing sky.
    h = L + np.array([0, 0, 1], np.float32)
    h /= np.linalg.norm(h)
    ndh = np.clip(nx * h[0] + ny * h[1] + nz * h[2], 0.0, 1.0)
    spec = bean.gloss * (1.6 * ndh ** 140 + 0.10 * ndh ** 12) + 0.05 * (1 - nz) ** 3
    lit += spec[None]

    a3 = alpha[None]
    region = img[:, y0:y1, x0:x1]
    region *= 1.0 - a3
    region += lit * a3

    ys_in, xs_in = np.nonzero(alpha > 0.5)
    if len(xs_in) == 0:
        return None
    return (x0 + int(xs_in.min()), y0 + int(ys_in.min()), x0 + int(xs_in.max()) + 1, y0 + int(ys_in.max()) + 1)
