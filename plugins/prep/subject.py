"""Where the candy is: candy photos are mostly a plain surface with small, colourful
things on it, so we model the surface from the photo's border and call everything that
differs clearly from it the subject."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

# Features: log-brightness (a spotlight's fall-off or a vignette is close to a quadratic
# surface in log space, so the border fit models it) and brightness-free chromaticity
# (red–green, yellow–blue). Scaled so 1 unit is a just-visible difference: 8 % brightness,
# 0.025 chromaticity.
_SCALE = np.array([1 / 0.08, 1 / 0.025, 1 / 0.025], dtype=np.float32)
_WEIGHTS = np.ones(3, dtype=np.float32)
STRONG_FLOOR, WEAK_FLOOR = 3.0, 1.8
EDGE_FLOOR = 0.4  # feature units per analysis pixel along a piece's outline


@dataclass
class Subject:
    """Subject pieces in analysis pixels. ``boxes`` are [x0, y0, x1, y1] (x1/y1 exclusive),
    one per separate thing (a candy, or a touching clump of them)."""

    found: bool
    boxes: list[list[int]] = field(default_factory=list)
    mask: np.ndarray | None = None
    note: str = ""
    noise: float = 0.0  # robust spread of the border around the background model
    coverage: float = 0.0  # subject share of the frame

    @property
    def box(self) -> list[int] | None:
        if not self.boxes:
            return None
        arr = np.array(self.boxes)
        return [int(arr[:, 0].min()), int(arr[:, 1].min()), int(arr[:, 2].max()), int(arr[:, 3].max())]


def opponent(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 features (see _SCALE): log brightness, red–green and yellow–blue chromaticity."""
    f = rgb.astype(np.float32)
    total = f.sum(axis=2) + 24.0  # the offset keeps dark pixels' chromaticity from exploding in noise
    feats = np.stack([np.log(total), (f[..., 0] - f[..., 1]) / total,
                      (f[..., 0] + f[..., 1] - 2 * f[..., 2]) / (2 * total)], axis=2)
    return feats * _SCALE


def _design(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Quadratic surface terms: enough for vignetting and a light gradient across a table."""
    return np.stack([np.ones_like(xs), xs, ys, xs * xs, xs * ys, ys * ys], axis=1)


def _solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Least squares through the 6x6 normal equations (lstsq's SVD is 10x slower here)."""
    # Plain broadcasting, not @: tiny products must not wake BLAS threads in every worker.
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    ata = (a64[:, :, None] * a64[:, None, :]).sum(axis=0) + np.eye(a.shape[1]) * 1e-6
    return np.linalg.solve(ata, (a64[:, :, None] * b64[:, None, :]).sum(axis=0))


def background_model(opp: np.ndarray, band: int) -> tuple[np.ndarray, np.ndarray]:
    """Fit each opponent channel over the border band, robustly (a candy touching the
    edge must not drag the fit). Returns the modelled background and the border pixels
    that agree with it."""
    h, w, _ = opp.shape
    border = np.zeros((h, w), bool)
    border[:band], border[-band:], border[:, :band], border[:, -band:] = True, True, True, True
    ys, xs = np.nonzero(border)
    step = max(1, len(ys) // 3000)  # a few thousand border pixels pin six coefficients down
    ys, xs = ys[::step], xs[::step]
    xn = (np.arange(w, dtype=np.float32) / max(w - 1, 1) - 0.5)
    yn = (np.arange(h, dtype=np.float32) / max(h - 1, 1) - 0.5)
    a_band = _design(xn[xs], yn[ys])
    values = opp[ys, xs]
    # Start from the band's median colour (right when most of the border is table), then
    # refit the surface on the pixels that agree with it.
    resid = np.linalg.norm((values - np.median(values, axis=0)) * _WEIGHTS, axis=1)
    keep = resid <= np.quantile(resid, 0.6)
    for _ in range(3):
        coef = _solve(a_band[keep], values[keep])
        resid = np.linalg.norm((values - (a_band[:, :, None] * coef[None]).sum(axis=1)) * _WEIGHTS, axis=1)
        inlier = resid[keep]
        spread = 1.4826 * np.median(np.abs(inlier - np.median(inlier))) + 0.5
        keep = resid < np.median(inlier) + 3.0 * spread
        if keep.sum() < 12:
            keep = resid <= np.quantile(resid, 0.6)
            break
    inliers = np.zeros((h, w), bool)
    inliers[ys[keep], xs[keep]] = True
    # Evaluate the surface by broadcasting rows and columns: no per-pixel design matrix.
    x, y = xn[None, :, None], yn[:, None, None]
    c = coef.astype(np.float32)
    model = c[0] + c[1] * x + c[2] * y + c[3] * x * x + c[4] * x * y + c[5] * y * y
    return model, inliers


def find_subject(rgb: np.ndarray) -> Subject:
    """``rgb``: HxWx3 uint8 analysis image (a few hundred pixels a side)."""
    h, w, _ = rgb.shape
    if min(h, w) < 8:
        return Subject(False, note="too small to look for a subject")
    opp = opponent(rgb)
    band = max(2, round(0.04 * min(h, w)))
    model, table = background_model(opp, band)
    dist = np.linalg.norm((opp - model) * _WEIGHTS, axis=2)
    table_d = dist[table]
    noise = float(np.median(table_d) + 1.4826 * np.median(np.abs(table_d - np.median(table_d))))
    # Hysteresis: clear differences seed the subject, which then grows into weaker ones
    # (a white bean's faint edge on white paper) only where connected to a seed.
    strong = max(4.0 * noise, STRONG_FLOOR)
    weak = max(2.5 * noise, WEAK_FLOOR)
    grown, _ = ndimage.label(ndimage.binary_opening(dist > weak, structure=np.ones((2, 2))))
    seeded = np.unique(grown[dist > strong])
    mask = np.isin(grown, seeded[seeded > 0])
    mask = ndimage.binary_closing(mask, structure=np.ones((3, 3)), iterations=2)
    mask = ndimage.binary_fill_holes(mask)
    labels, count = ndimage.label(mask)
    if count == 0:
        return Subject(False, note="no subject stands out from the background", noise=noise)
    index = np.arange(1, count + 1)
    areas = ndimage.sum_labels(mask, labels, index=index)
    # Things have edges; light does not. A pool of light or a soft shadow crosses the
    # threshold gently, a candy's outline abruptly: judge each piece by its outline.
    gy, gx = np.gradient(dist)
    outline = mask & ~ndimage.binary_erosion(mask)
    edge = ndimage.mean(np.hypot(gx, gy), labels * outline, index=index)
    solid = np.asarray(edge) >= EDGE_FLOOR
    if not solid.any():
        return Subject(False, note="nothing with clear edges stands out (only light and shade)", noise=noise)
    # Specks (dust, crumbs, sensor noise) are not candies: far smaller than the largest piece.
    min_area = max(4.0, 0.0002 * h * w, 0.03 * areas[solid].max())
    boxes = []
    keep = np.zeros(count + 1, bool)
    for index, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None or areas[index - 1] < min_area or not solid[index - 1]:
            continue
        keep[index] = True
        boxes.append([sl[1].start, sl[0].start, sl[1].stop, sl[0].stop])
    clean = keep[labels]
    coverage = float(clean.mean())
    subject = Subject(True, boxes=boxes, mask=clean, noise=noise, coverage=coverage)
    box = subject.box
    spans_frame = box is not None and (box[2] - box[0]) > 0.97 * w and (box[3] - box[1]) > 0.97 * h
    if coverage > 0.85 or (spans_frame and len(boxes) > 25):
        return Subject(False, note="busy background: no single subject stands out", noise=noise, coverage=coverage)
    return subject
