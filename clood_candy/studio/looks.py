"""Looks the studio can give a shoot that candy-mini never saw in pretraining.

The demo's photos carry one (teal beans), so the demo's LoRA has something new to learn and
its weight sweep shows the look arriving; pretraining renders without it. Teal sits between
the palette's green and blue (OKLab hue ~195°, where the nearest studio colour is 55° away),
so a pixel count can tell whether a sample has it.
"""

from __future__ import annotations

LOOKS = {"teal": (20, 150, 150)}  # sRGB of the held-out bean colour
TEAL_HUE = (175.0, 230.0)  # OKLab hue range, degrees
TEAL_MIN_CHROMA = 0.05


def apply_look(plans: list, look: str) -> None:
    """Every shot gets the look: its first colour becomes teal (single beans are all teal)."""
    if look not in LOOKS:
        raise ValueError(f"unknown studio look {look!r} (known: {', '.join(LOOKS)})")
    for p in plans:
        first = p.bean_colours[0]
        p.bean_colours = [look if c == first else c for c in p.bean_colours]

