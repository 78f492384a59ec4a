"""Procedural jellybean photo studio: deterministic synthetic photos with labels.

Used by the offline demo and as ground truth for captioners, judges and prep.
"""

from .labels import StudioLabels, StudioShot
from .render import render_studio

__all__ = ["StudioLabels", "StudioShot", "render_studio"]
