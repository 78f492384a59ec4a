"""How good is a crop for training: sharp enough, well exposed, big enough.

Sharpness is measured as blur *width*: on strong edges the gradient's peak over the local
step height falls as 1/σ, and re-blurring by a known amount tells σ apart from contrast
(Hu & de Haan's re-blur idea). Measured on the crop brought down to at most 256 px, so a
150 px crop and a 12 MP photo are judged by the blur a training image would show."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image
from scipy import ndimage

MEASURE_SIDE = 256  # crops are judged at this short side (never upscaled to it)
# Edges whose blur σ (at MEASURE_SIDE) reaches BLUR_CUT_SIGMA score 0.35, the default
# prep.min_sharpness. Calibrated: real 150 px jellybean crops measure σ≈0.3–1.6, 12 MP crops
# ≈0.0–0.4; a 12 MP crop blurred by σ=2 px at 256 (≈4 px at 512) measures ≈1.8–2.1.
BLUR_CUT_SIGMA = 1.75
_SIGMA_REF = BLUR_CUT_SIGMA * math.sqrt(0.35)
_S0, _S1 = 1.0, 2.0  # measuring kernel and re-blur (pixels)
DARK_TOP, BRIGHT_BOTTOM = 64.0, 225.0


def measure_image(image: Image.Image, box: list[float] | None = None) -> np.ndarray:
    """``box`` of ``image`` in grey, brought down to MEASURE_SIDE (never up)."""
    box = box or [0, 0, image.width, image.height]
    width, height = box[2] - box[0], box[3] - box[1]
    factor = max(1.0, min(width, height) / MEASURE_SIDE)
    size = (max(1, round(width / factor)), max(1, round(height / factor)))
    small = image.resize(size, Image.Resampling.LANCZOS, box=tuple(box), reducing_gap=2.0)
    return np.asarray(small.convert("L"), dtype=np.float32)


def _gradient(grey: np.ndarray, sigma: float) -> np.ndarray:
    return np.hypot(ndimage.gaussian_filter(grey, sigma, order=(0, 1)), ndimage.gaussian_filter(grey, sigma, order=(1, 0)))


def blur_sigma(grey: np.ndarray) -> tuple[float, int]:
    """Estimated blur σ in pixels of ``grey`` on its sharper edges, and how many edge pixels
    it rests on (NaN when the image has no clear edges at all)."""
    if min(grey.shape) < 12:
        return math.nan, 0
    g0 = _gradient(grey, _S0)
    g1 = _gradient(grey, math.hypot(_S0, _S1))
    lap = 4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    noise = 1.4826 * float(np.median(np.abs(lap))) / math.sqrt(20)
    span = float(np.percentile(grey, 99.5) - np.percentile(grey, 0.5))
    ridge = g0 >= ndimage.maximum_filter(g0, 3)
    for factor in (3.0, 2.0):  # strong edges only; relax once for faint, low-contrast photos
        edges = ridge & (g1 >= max(factor * noise, 1.0, 0.02 * span))
        if edges.sum() >= 8:
            break
    else:
        return math.nan, int(edges.sum())
    ratio = np.clip(ndimage.maximum_filter(g1, 3)[edges] / g0[edges], 1e-3, 0.999)
    total = _S1 * ratio / np.sqrt(1 - ratio * ratio)  # σ of edge ⊛ measuring kernel
    sigma = np.sqrt(np.maximum(total * total - _S0 * _S0, 0.0))
    # The sharper quarter: a macro shot's out-of-focus background must not count against it.
    return float(np.percentile(sigma, 25)), int(edges.sum())


def sharpness(image: Image.Image, box: list[float] | None = None) -> tuple[float, float]:
    """(score 0..1, blur σ in pixels at the measuring size) of ``box`` in ``image``. The score
    is the edges' Laplacian response normalised by their contrast, relative to a crisp
    edge: (σ_ref/σ)²."""
    sigma, _ = blur_sigma(measure_image(image, box))
    if math.isnan(sigma):
        return 0.0, math.nan
    return min(1.0, (_SIGMA_REF / max(sigma, 1e-3)) ** 2), sigma


def clipped_shares(rgb: np.ndarray, mask: np.ndarray | None = None, colour: bool = False) -> tuple[float, float]:
    """Shares of pixels blown to white (every channel ≥ 250) and crushed to black (every
    channel ≤ 5), over ``mask`` when given. ``colour``: a highlight counts as blown when any
    one channel hits the ceiling (a red candy gone flat 255-red is blown too)."""
    if mask is not None and mask.any():
        rgb = rgb[mask]
    else:
        rgb = rgb.reshape(-1, 3)
    if rgb.size == 0:
        return 0.0, 0.0
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]  # per channel: min/max over a length-3 axis is slow
    if colour:
        white = float(((r >= 254) | (g >= 254) | (b >= 254)).mean())
    else:
        white = float(((r >= 250) & (g >= 250) & (b >= 250)).mean())
    black = float(((r <= 5) & (g <= 5) & (b <= 5)).mean())
    return white, black

def exposure_level(rgb: np.ndarray) -> str | None:
    """A whole photo far too dark or too bright, even where nothing is clipped (sensor
    noise keeps a dark frame off zero): the brightest 1 % still dim, or the darkest 1 %
    still near white."""
    flat = rgb.reshape(-1, 3)
    luma = (flat[:, 0].astype(np.uint16) + flat[:, 1] + flat[:, 2]) / 3.0
    if luma.size == 0:
        return None
    top, bottom = float(np.percentile(luma, 99)), float(np.percentile(luma, 1))
    if top < DARK_TOP:
        return f"underexposed: even the brightest pixels reach only {top:.0f}/255 (brighten it or reshoot)"
    if bottom > BRIGHT_BOTTOM:
        return f"overexposed: even the darkest pixels are {bottom:.0f}/255 (washed out)"
    return None
