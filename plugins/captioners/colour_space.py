"""sRGB ↔ linear light ↔ CIELAB / OKLab, vectorised over (..., 3) arrays.

CIELAB measures how far apart two colours look (background separation); OKLab keeps
hue steady where CIELAB bends blue towards purple, so colour names use it.
"""

from __future__ import annotations

import numpy as np

_SRGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                         [0.2126729, 0.7151522, 0.0721750],
                         [0.0193339, 0.1191920, 0.9503041]], np.float32)
_D65 = np.array([0.95047, 1.0, 1.08883], np.float32)
_OK_M1 = np.array([[0.4122214708, 0.5363325363, 0.0514459929],
                   [0.2119034982, 0.6806995451, 0.1073969566],
                   [0.0883024619, 0.2817188376, 0.6299787005]], np.float32)
_OK_M2 = np.array([[0.2104542553, 0.7936177850, -0.0040720468],
                   [1.9779984951, -2.4285922050, 0.4505937099],
                   [0.0259040371, 0.7827717662, -0.8086757660]], np.float32)


def to_linear(srgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] → linear light."""
    srgb = np.asarray(srgb, np.float32)
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4).astype(np.float32)


def to_srgb(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(np.asarray(linear, np.float32), 0.0, 1.0)
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055).astype(np.float32)


def linear_to_lab(linear: np.ndarray) -> np.ndarray:
    """Linear sRGB → CIELAB (D65): L in [0, 100]."""
    xyz = np.asarray(linear, np.float32) @ _SRGB_TO_XYZ.T / _D65
    f = np.where(xyz > 216 / 24389, np.cbrt(np.maximum(xyz, 0)), (24389 / 27 * xyz + 16) / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def linear_to_oklab(linear: np.ndarray) -> np.ndarray:
    """Linear sRGB → OKLab: L in [0, 1], a/b about ±0.3."""
    lms = np.cbrt(np.maximum(np.asarray(linear, np.float32) @ _OK_M1.T, 0))
    return lms @ _OK_M2.T


def lch(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lightness, chroma, hue in degrees) of Lab-like triples."""
    lab = np.asarray(lab, np.float32)
    return lab[..., 0], np.hypot(lab[..., 1], lab[..., 2]), np.degrees(np.arctan2(lab[..., 2], lab[..., 1])) % 360


def lab_to_linear(lab: np.ndarray) -> np.ndarray:
    """CIELAB (D65) → linear sRGB, clipped at 0."""
    fy = (lab[..., 0] + 16) / 116
    fx = fy + lab[..., 1] / 500
    fz = fy - lab[..., 2] / 200

    def inv(f):
        return np.where(f ** 3 > 216 / 24389, f ** 3, (116 * f - 16) / (24389 / 27))

    xyz = np.stack([inv(fx) * 0.95047, inv(fy), inv(fz) * 1.08883], -1)
    m = np.array([[3.2404542, -1.5371385, -0.4985314],
                  [-0.9692660, 1.8760108, 0.0415560],
                  [0.0556434, -0.2040259, 1.0572252]], np.float32)
    return np.clip(xyz @ m.T, 0, None).astype(np.float32)
