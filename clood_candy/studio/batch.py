"""shoot_many: studio shots as images in memory, for datasets far larger than a photo folder.

render_studio makes a photographer's folder (JPEGs with EXIF, defects, look-alike checks);
a pretraining set wants tens of thousands of clean, labelled shots and no files. Both draw
from the same plans and renderer, so the pretraining set and the demo's photos are one world.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from .labels import StudioLabels
from .render import _plan, _shoot


def shoot_many(count: int, seed: int, size: tuple[int, int] = (128, 128)) -> Iterator[tuple[Image.Image, StudioLabels]]:
    """Yield (upright RGB image, labels) for the clean shots among ``count`` planned ones.

    The planner's deliberate defects (a dark shot, a blurred burst copy) are left out and
    rotated shots are stored upright, so every image shows exactly what its labels say.
    """
    plans = [p for p in _plan(count, seed) if p.defect is None]
    for p in plans:
        p.orientation = 1
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:  # shots have their own RNGs: order-independent
        for image, labels, _light in pool.map(lambda p: _shoot(p, plans, seed, size), plans):
            yield image, labels
