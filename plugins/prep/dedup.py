"""Near-duplicates: burst shots and re-saved, re-encoded, slightly cropped or brightened
copies of one photo, but not different shots of candies on the same plain table.

Two stages, because one perceptual hash cannot do both jobs:

1. Candidates (imagehash): the mean of pHash (DCT low frequencies, immune to re-encoding
   and brightness) and dHash (gradient signs) over six views of each photo: the whole frame,
   its four 95 % corners and its 95 % centre. A copy cropped a few percent on one side
   matches one of the other's views closely, so crops do not push the distance up.
2. Verification: a 64-bit hash only sees the layout, and two shots of one bean on one pad
   share the layout. Copies share the *fine detail* too (table grain, paper fibre, sensor
   pattern): the best normalised correlation of the matched views' fine band-pass, over
   small shifts and ±4 % scale, separates them (copies ≥ 0.76, different shots ≤ 0.36 on
   the real photos; see BENCHMARKS.md).
   A colour-layout gate comes first: fine edges of two flat synthetic shapes can match, but
   a red candy and a grey one are never copies of each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image
from scipy import ndimage

VIEW_FRACTION = 0.95
DETAIL_SIDE = 128
MIN_DETAIL_MATCH = 0.6
MAX_COLOUR_CHANGE = 0.35  # chroma layout difference relative to its strength (+15 % brightness ≈ 0.1)
COLOUR_GRID = 8
_BAND = (0.6, 1.5)  # fine band-pass (pixels at DETAIL_SIDE)
_SHIFT = 5
_SCALES = (0.96, 1.0, 1.04)


def view_boxes(width: int, height: int) -> list[tuple[int, int, int, int]]:
    cw, ch = max(1, int(width * VIEW_FRACTION)), max(1, int(height * VIEW_FRACTION))
    mx, my = (width - cw) // 2, (height - ch) // 2
    return [(0, 0, width, height), (0, 0, cw, ch), (width - cw, 0, width, ch), (0, height - ch, cw, height),
            (width - cw, height - ch, width, height), (mx, my, mx + cw, my + ch)]


def _bits(h: imagehash.ImageHash) -> np.uint64:
    return np.uint64(int(str(h), 16))


def view_hashes(image: Image.Image) -> np.ndarray:
    """(6, 2) uint64: pHash and dHash of each view of ``image`` (a small upright RGB copy)."""
    out = np.zeros((6, 2), dtype=np.uint64)
    for i, box in enumerate(view_boxes(*image.size)):
        view = image.crop(box)
        out[i] = (_bits(imagehash.phash(view)), _bits(imagehash.dhash(view)))
    return out


def colour_layout(rgb: np.ndarray) -> np.ndarray:
    """(COLOUR_GRID, COLOUR_GRID, 2) mean red–green and yellow–blue chroma per cell."""
    image = Image.fromarray(rgb).resize((COLOUR_GRID, COLOUR_GRID), Image.Resampling.BOX)
    f = np.asarray(image, dtype=np.float32)
    return np.stack([(f[..., 0] - f[..., 1]) / 2, (f[..., 0] + f[..., 1]) / 4 - f[..., 2] / 2], axis=-1)


def colour_change(a: np.ndarray, b: np.ndarray) -> float:
    diff = np.abs(a - b).sum(axis=-1).mean()
    strength = (np.abs(a).sum(axis=-1).mean() + np.abs(b).sum(axis=-1).mean()) / 2
    return float(diff / (strength + 4.0))  # +4: near-grey photos differ by noise, not colour


def hash_distance(a: np.ndarray, b: np.ndarray) -> tuple[float, int, int]:
    """Smallest mean pHash/dHash Hamming distance over all view pairs, and the views."""
    x = np.bitwise_count(a[:, None, :] ^ b[None, :, :]).astype(np.float32).mean(axis=2)
    i, j = np.unravel_index(int(np.argmin(x)), x.shape)
    return float(x[i, j]), int(i), int(j)


def _band(grey: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    h, w = grey.shape
    box = (max(0.0, box[0]), max(0.0, box[1]), min(float(w), box[2]), min(float(h), box[3]))
    view = Image.fromarray(grey).resize((DETAIL_SIDE, DETAIL_SIDE), Image.Resampling.BILINEAR, box=box)
    g = np.asarray(view, dtype=np.float32)
    return ndimage.gaussian_filter(g, _BAND[0]) - ndimage.gaussian_filter(g, _BAND[1])


def _scaled(box: tuple[int, int, int, int], factor: float) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * factor / 2, (y1 - y0) * factor / 2
    return cx - hw, cy - hh, cx + hw, cy + hh


def _best_correlation(a: np.ndarray, b: np.ndarray) -> float:
    m, n = _SHIFT, DETAIL_SIDE
    core = b[m:n - m, m:n - m]
    core = core - core.mean()
    core_norm = float(np.sqrt((core * core).sum())) + 1e-6
    best = -1.0
    for dy in range(-m, m + 1):
        for dx in range(-m, m + 1):
            win = a[m + dy:n - m + dy, m + dx:n - m + dx]
            win = win - win.mean()
            best = max(best, float((win * core).sum()) / (float(np.sqrt((win * win).sum())) * core_norm + 1e-6))
    return best


def detail_match(grey_a: np.ndarray, view_a: int, grey_b: np.ndarray, view_b: int) -> float:
    """Fine-detail correlation of view ``view_a`` of A and ``view_b`` of B (grey thumbnails)."""
    box_a = view_boxes(grey_a.shape[1], grey_a.shape[0])[view_a]
    box_b = view_boxes(grey_b.shape[1], grey_b.shape[0])[view_b]
    band_a = _band(grey_a, tuple(float(v) for v in box_a))
    return max(_best_correlation(band_a, _band(grey_b, _scaled(box_b, f))) for f in _SCALES)


@dataclass
class Match:
    a: int
    b: int
    distance: float
    detail: float


def find_duplicates(hashes: list[np.ndarray], greys: list[np.ndarray], colours: list[np.ndarray],
                    max_distance: float) -> list[Match]:
    """Verified near-duplicate pairs among the photos (indices into the lists)."""
    n = len(hashes)
    if n < 2:
        return []
    stacked = np.stack(hashes)  # (n, 6, 2)
    matches = []
    for a in range(n - 1):
        rest = stacked[a + 1:]
        dist = np.bitwise_count(stacked[a][None, :, None, :] ^ rest[:, None, :, :]).astype(np.float32).mean(axis=3)
        best = dist.reshape(len(rest), -1).min(axis=1)
        for offset in np.flatnonzero(best <= max_distance):
            b = a + 1 + int(offset)
            if colour_change(colours[a], colours[b]) > MAX_COLOUR_CHANGE:
                continue
            d, i, j = hash_distance(stacked[a], stacked[b])
            detail = detail_match(greys[a], i, greys[b], j)
            if detail >= MIN_DETAIL_MATCH:
                matches.append(Match(a, b, d, detail))
    return matches


def group(n: int, matches: list[Match]) -> list[list[int]]:
    """Connected groups (union–find) of size ≥ 2."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for m in matches:
        ra, rb = root(m.a), root(m.b)
        if ra != rb:
            parent[rb] = ra
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]
