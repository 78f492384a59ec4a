"""Backgrounds, lighting presets, camera perspective, bowl and bean layout.

Textures are generated flat in "table" coordinates and, for the angled view,
warped with a perspective homography so wood grain and cloth weave recede
like they do in a real photo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .beans import Bean, Light, srgb_to_linear

CLOTH_SRGB = {
    "blue": (58, 88, 150), "green": (64, 122, 72), "grey": (128, 128, 124),
    "red": (162, 42, 44), "pink": (222, 150, 164), "purple": (108, 72, 140),
}


# --------------------------------------------------------------------------- noise
def smooth_noise(h: int, w: int, cell_y: float, cell_x: float, rng: np.random.Generator) -> np.ndarray:
    """Band-limited noise in ~[0, 1]; anisotropic cells give grain/fibres."""
    gh = max(2, int(h / max(cell_y, 1.0)) + 2)
    gw = max(2, int(w / max(cell_x, 1.0)) + 2)
    g = Image.fromarray(rng.random((gh, gw), dtype=np.float32))
    return np.asarray(g.resize((w, h), Image.BICUBIC), np.float32)


# -------------------------------------------------------------------------- camera
@dataclass
class Camera:
    """Maps image pixels to table coordinates (identity for top-down)."""

    size: tuple[int, int]
    angled: bool
    coeffs: tuple | None = None  # PIL PERSPECTIVE coefficients image -> table
    table_size: tuple[int, int] | None = None

    @classmethod
    def make(cls, size: tuple[int, int], angled: bool) -> Camera:
        w, h = size
        if not angled:
            return cls(size, False, None, size)
        spread, depth = 0.55, 1.7  # far edge wider; table deeper than it looks
        tw, th = int(w * (1 + spread)), int(h * depth)
        pad = w * spread / 2
        src = [(0, 0), (w, 0), (w, h), (0, h)]
        dst = [(0, 0), (tw, 0), (pad + w, th), (pad, th)]
        a = []
        for (x, y), (u, v) in zip(src, dst):
            a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
            a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        sol = np.linalg.solve(np.array(a, float), np.array([c for p in dst for c in p], float))
        return cls(size, True, tuple(sol), (tw, th))

    def _map(self, x: float, y: float) -> tuple[float, float]:
        a, b, c, d, e, f, g, h = self.coeffs
        den = g * x + h * y + 1
        return (a * x + b * y + c) / den, (d * x + e * y + f) / den

    def scale_squash(self, y: float) -> tuple[float, float]:
        """(size multiplier vs frame centre, vertical foreshortening) at row y."""
        if not self.angled:
            return 1.0, 1.0
        w, h = self.size

        def jac(yy: float) -> tuple[float, float]:
            x0, y0 = self._map(w / 2, yy)
            x1, _ = self._map(w / 2 + 1, yy)
            _, y2 = self._map(w / 2, yy + 1)
            return x1 - x0, y2 - y0

        dxc, _ = jac(h / 2)
        dx, dy = jac(y)
        return dxc / dx, min(1.0, dx / dy)

    def warp(self, tex: np.ndarray) -> np.ndarray:
        """Table texture (C, th, tw) -> image (C, h, w)."""
        if not self.angled:
            return tex
        chans = [
            np.asarray(Image.fromarray(np.ascontiguousarray(c)).transform(
                self.size, Image.PERSPECTIVE, self.coeffs, Image.BILINEAR), np.float32)
            for c in tex
        ]
        return np.stack(chans)


# ---------------------------------------------------------------------- backgrounds
def paper(h: int, w: int, unit: float, rng) -> np.ndarray:
    """White seamless paper: near-uniform with faint fibres and unevenness."""
    tint = np.array([1.0, 0.995, 0.975], np.float32) * rng.uniform(0.74, 0.8)
    fib = smooth_noise(h, w, 2.0, 2.0, rng) - 0.5
    blot = smooth_noise(h, w, h / 2.5, w / 2.5, rng) - 0.5
    v = 1.0 + 0.025 * fib + 0.05 * blot
    return tint[:, None, None] * v[None]


def wood(h: int, w: int, unit: float, rng) -> np.ndarray:
    """Planks with growth rings, fibre streaks along the grain and dark seams."""
    if rng.random() < 0.4:  # planks running the other way
        return np.ascontiguousarray(_planks(w, h, unit, rng).transpose(0, 2, 1))
    return _planks(h, w, unit, rng)


def _planks(h: int, w: int, unit: float, rng) -> np.ndarray:
    light = srgb_to_linear((196, 140, 92)) * rng.uniform(0.8, 1.1)
    dark = srgb_to_linear((120, 72, 40)) * rng.uniform(0.7, 1.0)
    board = unit * rng.uniform(3.5, 5.5)
    y = np.arange(h, dtype=np.float32)[:, None] + rng.uniform(0, board)
    idx = np.floor(y / board)
    frac = y / board - idx
    n_boards = int(h / board) + 3
    tone = rng.uniform(0.8, 1.15, n_boards).astype(np.float32)[idx.astype(int) % n_boards]
    phase = rng.uniform(0, 10, n_boards).astype(np.float32)[idx.astype(int) % n_boards]
    slow = smooth_noise(h, w, unit * 0.8, unit * 8.0, rng)
    rings_n = rng.uniform(2.5, 5.0)
    t = frac * rings_n + 0.9 * slow + phase
    rings = 0.5 + 0.5 * np.sin(np.float32(2 * np.pi) * t)
    rings = rings * rings * rings
    fibre = smooth_noise(h, w, max(1.2, unit * 0.018), unit * 1.5, rng)
    pores = smooth_noise(h, w, 1.3, max(8.0, unit * 0.3), rng)  # fine grain at any zoom
    mix = np.clip(0.45 * rings + 0.4 * fibre + 0.3 * pores - 0.1, 0, 1)[None]
    seam_px = frac * board
    seam = np.clip(np.minimum(seam_px, board - seam_px) / max(1.0, unit * 0.02), 0, 1)
    row = (tone * (0.35 + 0.65 * seam))[None]  # plank tone and dark gaps: per row
    return (light[:, None, None] + (dark - light)[:, None, None] * mix) * row


def cloth(h: int, w: int, unit: float, colour: str, rng, light_xy) -> np.ndarray:
    """Plain weave built only from smooth (band-limited) terms so it does not
    alias into a pixel grid: thread profiles, a soft over/under switch,
    per-thread tone and slubs along each thread, plus soft folds."""
    base = srgb_to_linear(CLOTH_SRGB[colour])
    p = float(np.clip(unit * 0.045, 2.6, 14.0))
    x = np.arange(w, dtype=np.float32)[None, :] / p
    y = np.arange(h, dtype=np.float32)[:, None] / p
    tone_x = (1 + 0.07 * rng.standard_normal(int(x.max()) + 2)).astype(np.float32)
    tone_y = (1 + 0.07 * rng.standard_normal(int(y.max()) + 2)).astype(np.float32)
    warp_tone = np.interp(x, np.arange(len(tone_x)), tone_x).astype(np.float32)
    weft_tone = np.interp(y, np.arange(len(tone_y)), tone_y).astype(np.float32)
    prof_x = np.sin(np.pi * x) ** 2  # thread crowns in the warp (vertical threads)
    prof_y = np.sin(np.pi * y) ** 2
    over = np.clip(0.5 + 1.5 * np.sin(np.pi * x + np.pi / 2) * np.sin(np.pi * y + np.pi / 2), 0, 1)
    slub_warp = smooth_noise(h, w, p * 8, p * 0.8, rng)  # varies slowly along the thread
    slub_weft = smooth_noise(h, w, p * 0.8, p * 8, rng)
    warp_v = (0.62 + 0.38 * prof_x) * warp_tone * (0.9 + 0.2 * slub_warp)
    weft_v = (0.62 + 0.38 * prof_y) * weft_tone * (0.9 + 0.2 * slub_weft)
    weave = over * warp_v + (1 - over) * weft_v
    weave = 1.0 - float(np.clip((p - 1.5) / 4.0, 0.35, 1.0)) * (1.0 - weave)  # fine weave blurs out
    # Folds: shade a smooth height field by the light direction.
    hgt = smooth_noise(h, w, unit * 3, unit * 3, rng) + 0.5 * smooth_noise(h, w, unit * 1.2, unit * 1.2, rng)
    gy, gx = np.gradient(hgt * unit * 1.5)
    fold = np.clip(1.0 + 0.5 * (gx * light_xy[0] + gy * light_xy[1]), 0.7, 1.25)
    fuzz = 1.0 + 0.05 * (smooth_noise(h, w, 1.5, 1.5, rng) - 0.5)
    return base[:, None, None] * (weave * fold * fuzz)[None]


# ------------------------------------------------------------------------ lighting
@dataclass
class Lighting:
    kind: str  # daylight | indoor | night
    light: Light
    cast: tuple[float, float, float]  # white-balance error of the camera
    exposure: float
    noise: float  # sensor noise sigma (linear, ~ISO)
    flash: bool
    outdoor: bool
    aim: tuple[float, float] = (0.0, 0.0)  # flash hotspot offset (frame units)


def make_lighting(kind: str, outdoor: bool, angled: bool, rng) -> Lighting:
    az = rng.uniform(0, 2 * math.pi)
    ax, ay = math.cos(az), math.sin(az)
    if kind == "night":
        # On-camera flash: frontal, hard, small shadow just behind the bean.
        off = (rng.uniform(-0.05, 0.05), -0.25 if angled else 0.16)
        light = Light((0.0, -0.25, 1.0), off, 0.08, (0.12, 0.11, 0.11), ambient=0.18)
        aim = (float(rng.uniform(-0.15, 0.15)), float(rng.uniform(-0.12, 0.12)))  # plus the subject
        return Lighting(kind, light, (1.0, 0.98, 1.02), 0.9, 0.02, True, False, aim)
    if kind == "indoor":
        # Warm tungsten lamp; camera left on daylight white balance.
        light = Light((-ax, -ay, 1.0), (0.55 * ax, 0.55 * ay), 0.3, (0.42, 0.38, 0.34), ambient=0.3)
        return Lighting(kind, light, (1.2, 0.98, 0.66), 0.95, 0.014, False, False)
    if outdoor:  # sun: harder, longer shadows with bluish sky fill
        light = Light((-ax, -ay, 0.9), (0.7 * ax, 0.7 * ay), 0.12, (0.33, 0.38, 0.5), ambient=0.35)
        return Lighting(kind, light, (0.96, 1.0, 1.05), 1.1, 0.006, False, True)
    light = Light((-ax, -ay, 1.1), (0.45 * ax, 0.45 * ay), 0.55, (0.46, 0.48, 0.53), ambient=0.35)
    return Lighting(kind, light, (0.98, 1.0, 1.03), 1.05, 0.008, False, False)


def illumination(lt: Lighting, h: int, w: int, zoom: str, cam: Camera, rng) -> np.ndarray:
    """Per-pixel light falloff (H, W): window gradient, lamp pool or flash,
    times broad uneven light (bounce, shade of things outside the frame) that
    also keeps plain-background shots from hashing alike."""
    ys = (np.arange(h, dtype=np.float32)[:, None] - h / 2) / max(h, w)
    xs = (np.arange(w, dtype=np.float32)[None, :] - w / 2) / max(h, w)
    L = lt.light.dir
    if lt.kind == "night":
        # Inverse-square flash: mild on a table seen from above, steep where the
        # table recedes (angled view); a faint warm room light elsewhere.
        r0 = {"macro": 0.9, "medium": 0.48, "wide": 0.4}[zoom]
        d2 = ((xs - lt.aim[0]) ** 2 + (ys - lt.aim[1]) ** 2) / r0 ** 2
        m = 1.0 / (1.0 + d2) ** 1.6
        if cam.angled:
            rows = np.array([cam.scale_squash(float(y))[0] for y in range(h)], np.float32)
            m = m * (rows ** 3)[:, None]
        th = rng.uniform(0, 2 * math.pi)  # dim lamp somewhere off-frame
        room = rng.uniform(0.04, 0.16) * np.clip(1.0 + 2.5 * (xs * math.cos(th) + ys * math.sin(th)), 0.05, 2.5)
        m = m + room
    elif lt.kind == "indoor":
        d2 = (xs + 0.5 * L[0]) ** 2 + (ys + 0.5 * L[1]) ** 2
        m = 1.0 / (1.0 + d2 / 0.5) * 1.25
    else:
        m = 1.0 + (0.05 if lt.outdoor else rng.uniform(0.15, 0.35)) * (xs * L[0] + ys * L[1]) * 2
    uneven = smooth_noise(h, w, h / 1.6, w / 1.6, rng) - 0.5
    m = m * (1.0 + rng.uniform(0.5, 0.8) * uneven)
    return m.astype(np.float32)


# ---------------------------------------------------------------------------- bowl
@dataclass
class Bowl:
    x: float
    y: float
    r_out: float
    squash: float
    colour: tuple[float, float, float]  # linear albedo

    @property
    def r_in(self) -> float:
        return self.r_out * 0.9


def draw_bowl(img: np.ndarray, bowl: Bowl, light: Light) -> None:
    """Ceramic bowl: soft cast shadow, outer wall (angled), lit rim, concave inside."""
    h, w = img.shape[1:]
    R, sq = bowl.r_out, bowl.squash
    drop = R * 0.55 * math.sqrt(max(0.0, 1 - sq * sq))  # visible outer wall height
    L = light.dir
    x0, x1 = max(int(bowl.x - R * 1.5), 0), min(int(bowl.x + R * 1.5), w)
    y0, y1 = max(int(bowl.y - R * sq * 1.5), 0), min(int(bowl.y + R * sq * 1.5 + drop), h)
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - bowl.x
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - bowl.y
    reg = img[:, y0:y1, x0:x1]
    col = np.asarray(bowl.colour, np.float32)[:, None, None]

    # Cast shadow of the whole bowl on the table.
    ox, oy = light.shadow_offset[0] * R * 0.5, light.shadow_offset[1] * R * 0.5 * sq + drop * 0.6
    rs = np.hypot(xs - ox, (ys - oy) / sq) / (R * 0.98)
    soft = 0.08 + light.shadow_soft * 0.4
    t = np.clip((1 + soft - rs) / (2 * soft), 0, 1)[None]
    reg *= 1 - t * (1 - np.asarray(light.shadow_colour, np.float32)[:, None, None])

    # Outer wall (only visible in the angled view): a tapering stack of ellipses.
    if drop > 1:
        wall = np.zeros((y1 - y0, x1 - x0), np.float32)
        for k in range(9):
            f = k / 8
            rr = R * (1 - 0.22 * f)
            e = np.hypot(xs / rr, (ys - drop * f) / (rr * sq))
            wall = np.maximum(wall, np.clip((1 - e) * rr, 0, 1))
        nx = np.clip(xs / R, -1, 1)
        shade = 0.25 + 0.75 * np.clip(nx * L[0] + np.sqrt(1 - nx ** 2) * 0.6, 0, 1)
        shade = shade * (1 - 0.3 * np.clip(ys / (drop + R * sq), 0, 1))
        a = wall[None]
        reg[:] = reg * (1 - a) + (col * shade[None]) * a

    r = np.hypot(xs, ys / sq) / R
    outer = np.clip((1 - r) * R, 0, 1)[None]
    inner = np.clip((bowl.r_in / R - r) * R, 0, 1)[None]
    # Rim: torus cross-section normal; inside: concave, so it faces away from centre.
    ri = bowl.r_in / R
    tr = np.clip((r - ri) / (1 - ri), 0, 1)
    ux, uy = xs / np.maximum(r * R, 1e-3), ys / sq / np.maximum(r * R, 1e-3)
    c = np.cos(np.pi * (tr - 0.5))
    s = np.sin(np.pi * (tr - 0.5))
    rim_n = (ux * s, uy * s, c)
    k = np.clip(r / ri, 0, 1) * 0.8
    in_n = (-ux * k, -uy * k, np.sqrt(1 - k * k))

    def shade(n, ao):
        ndl = np.clip(n[0] * L[0] + n[1] * L[1] + n[2] * L[2], 0, 1)
        hh = L + np.array([0, 0, 1], np.float32)
        hh /= np.linalg.norm(hh)
        spec = np.clip(n[0] * hh[0] + n[1] * hh[1] + n[2] * hh[2], 0, 1) ** 60 * 0.8
        return col * (light.ambient + (1 - light.ambient) * ndl * ao)[None] + spec[None]

    bottom_ao = 0.75 + 0.25 * np.clip(r / ri, 0, 1) ** 2
    reg[:] = reg * (1 - outer) + shade(rim_n, 1.0) * outer
    reg[:] = reg * (1 - inner) + shade(in_n, bottom_ao) * inner


# -------------------------------------------------------------------------- layout
def _scatter(n: int, length: float, rng) -> np.ndarray:
    """Spread-out positions with a minimum spacing (dart throwing)."""
    side = length * (1.6 * math.sqrt(n) + 1.2)
    pts: list[np.ndarray] = []
    for _ in range(n * 60):
        p = rng.uniform([-side * 0.66, -side * 0.5], [side * 0.66, side * 0.5])
        if all(np.hypot(*(p - q)) > length * 1.15 for q in pts):
            pts.append(p)
            if len(pts) == n:
                break
    while len(pts) < n:
        pts.append(rng.uniform(-side, side, 2))
    return np.array(pts)


def layout(arrangement: str, n: int, length: float, cam: Camera, rng,
           margin: float) -> tuple[list[tuple[float, float, float]], Bowl | None]:
    """Bean (x, y, size multiplier) in image px, all fully inside the frame.

    Positions are built around the origin, then scaled down if needed and
    shifted to a random spot so the subject is not always centred.
    """
    if arrangement == "single":
        pos = np.zeros((1, 2))
    elif arrangement == "pile":
        sig = length * 0.42 * math.sqrt(n / 6)
        pos = rng.normal(0, sig, (n, 2)) * [1.2, 1.0]
    elif arrangement == "scattered":
        pos = _scatter(n, length, rng)
    else:  # bowl: beans uniformly inside the bowl's floor
        r_in = length * (0.5 * math.sqrt(n) + 0.7)
        rad = (r_in - 0.6 * length) * np.sqrt(rng.random(n))
        th = rng.uniform(0, 2 * math.pi, n)
        pos = np.stack([rad * np.cos(th), rad * np.sin(th)], 1)
    bowl_r = length * (0.5 * math.sqrt(n) + 0.7) / 0.9 if arrangement == "bowl" else 0.0
    w, h = cam.size
    pos = pos * [1.0, cam.scale_squash(h / 2)[1]]  # table depth is foreshortened
    tx, ty = rng.uniform(0.15, 0.85, 2)

    def measure(centre: np.ndarray, f: float):
        pts = centre + pos * f
        scales = [cam.scale_squash(float(p[1])) for p in pts]
        m = np.array([s[0] for s in scales]) * f
        sqz = np.array([s[1] for s in scales])
        rb = 0.5 * length * 1.15 * m + 3  # conservative bean half-extent
        box = [(pts[:, 0] - rb).min(), (pts[:, 1] - rb * sqz).min(),
               (pts[:, 0] + rb).max(), (pts[:, 1] + rb * sqz).max()]
        if bowl_r:
            bm, bs = cam.scale_squash(float(centre[1]))
            br = bowl_r * f * bm * 1.02
            drop = br * 0.55 * math.sqrt(max(0.0, 1 - bs * bs))
            box = [min(box[0], centre[0] - br), min(box[1], centre[1] - br * bs),
                   max(box[2], centre[0] + br), max(box[3], centre[1] + br * bs + drop)]
        return pts, m, box

    f = 1.0  # layout shrink factor
    centre = np.array([w / 2, h / 2])
    aw, ah = w - 2 * margin, h - 2 * margin
    for _ in range(12):
        pts, m, box = measure(centre, f)
        bw, bh = box[2] - box[0], box[3] - box[1]
        if bw > aw or bh > ah:
            f *= 0.97 * min(aw / bw, ah / bh)
            continue
        shift = np.array([margin + tx * (aw - bw), margin + ty * (ah - bh)]) - np.array(box[:2])
        if np.abs(shift).max() < 0.5:
            break
        centre = centre + shift
    pts, m, box = measure(centre, f)
    out = [(float(p[0]), float(p[1]), float(mm)) for p, mm in zip(pts, m)]
    bowl = None
    if bowl_r:
        bm, bs = cam.scale_squash(float(centre[1]))
        bowl = Bowl(float(centre[0]), float(centre[1]), bowl_r * f * bm, bs, (0, 0, 0))
    return out, bowl


def make_beans(spots, length: float, ratio: float, colours: list[str], speckled: bool,
               gloss: float, cam: Camera, rng, order: str) -> list[Bean]:
    beans = []
    for i, (x, y, m) in enumerate(spots):
        _, sq = cam.scale_squash(y)
        ln = length * m * rng.uniform(0.93, 1.07)
        beans.append(Bean(
            x, y, ln, ln * ratio * rng.uniform(0.95, 1.05), rng.uniform(0, 2 * math.pi),
            rng.uniform(0.15, 0.4), colours[i], speckled, sq, gloss,
            tuple(rng.uniform(0.9, 1.1, 3)), int(rng.integers(1 << 30)),
        ))
    if order == "depth":  # far (top) first so near beans overlap them
        beans.sort(key=lambda b: b.y)
    return beans
