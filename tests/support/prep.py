"""Synthetic candy photos and a helper that runs the default preparer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CANDY_COLOURS = [(200, 30, 40), (240, 200, 30), (60, 160, 50), (110, 40, 120), (230, 120, 20)]


def candy_photo(size=(800, 600), blobs=((300, 250, 60, 40),), background=(150, 150, 148), seed=0,
                texture=6.0) -> Image.Image:
    """A grey table with a little grain and coloured candies: (cx, cy, rx, ry) ellipses."""
    rng = np.random.default_rng(seed)
    w, h = size
    grain = rng.normal(0, texture, (h // 2 + 1, w // 2 + 1, 1))
    grain = np.repeat(np.repeat(grain, 2, 0), 2, 1)[:h, :w]
    yy = np.linspace(-1, 1, h)[:, None, None]
    base = np.array(background, np.float32)[None, None, :] * (1 - 0.05 * yy ** 2) + grain
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for i, (cx, cy, rx, ry) in enumerate(blobs):
        colour = CANDY_COLOURS[i % len(CANDY_COLOURS)]
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=colour)
        draw.ellipse([cx - rx * 0.4, cy - ry * 0.6, cx - rx * 0.1, cy - ry * 0.3], fill=tuple(min(255, c + 60) for c in colour))
    return img.filter(ImageFilter.GaussianBlur(0.6))


def blob_boxes(blobs) -> list[list[int]]:
    return [[cx - rx, cy - ry, cx + rx, cy + ry] for cx, cy, rx, ry in blobs]


def inside(inner, outer) -> bool:
    return inner[0] >= outer[0] and inner[1] >= outer[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def prepare(make_ctx, source: Path, **prep):
    """Run the registered default preparer; returns (report, ctx, entries by source)."""
    settings = {"resolution": 256, **prep}
    ctx = make_ctx(prep=settings)
    preparer = ctx.registry.get("preparer", "default")
    report = preparer.prepare(source, ctx.run.path("prep"), ctx.config.prep, ctx)
    return report, ctx, {e.source: e for e in report.entries}
