"""``vision-stats``: a captioner that reads the photo's pixels, no model needed.

Subject from background (``subject_mask``), the candy's colours (``colour_names``), the
table, light, framing and layout (``scene_stats``). It reads the original photo when prep
recorded it (the whole frame tells framing and background best), else the prepared image.

``analyse(path, exif)`` is public: the rubric judge uses it to check colour words against
the image itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, Field

from clood_candy.fighters import Captioner
from clood_candy.hookspecs import hookimpl
from clood_candy.records import CaptionResult, Photo, PhotoFacts
from clood_candy_plugins.captioners import scene_stats
from clood_candy_plugins.captioners.colour_names import name_colour, subject_colours
from clood_candy_plugins.captioners.colour_space import lch, linear_to_oklab
from clood_candy_plugins.captioners.subject_mask import WORK_SIDE, load_small, segment

if TYPE_CHECKING:
    from clood_candy.context import StageContext


class VisionReport(BaseModel):
    """Everything the pixels said about one photo, and the numbers behind it."""

    colours: list[str] = Field(default_factory=list)
    colour_shares: dict[str, float] = Field(default_factory=dict)
    speckled: bool | None = False
    count: int | None = None
    arrangement: str | None = None
    background: str | None = None
    lighting: str | None = None
    framing: str | None = None
    subject_found: bool = False  # False: nothing stood out; colours read from the middle
    numbers: dict[str, float] = Field(default_factory=dict)

    def facts(self, class_word: str) -> PhotoFacts:
        return PhotoFacts(subject=class_word, colours=list(self.colours), speckled=self.speckled, count=self.count,
                          arrangement=self.arrangement, background=self.background, lighting=self.lighting,
                          framing=self.framing)


def analyse(path: Path, exif: dict[str, Any] | None = None) -> VisionReport:
    """Read one photo's pixels. Raises OSError/ValueError for unreadable files."""
    small = load_small(path)
    scene = seg = segment(small)  # the table and the light: judged at the usual size
    if seg.found and float(np.median([c.radius for c in seg.components])) < 7:
        # Candies only a few pixels wide: look at them again at twice the size, where a
        # candy and the shadow beside it are told apart.
        bigger = load_small(path, 2 * WORK_SIDE)
        if max(bigger.shape[:2]) > max(small.shape[:2]):
            seg = segment(bigger)
    exif = exif or {}
    report = VisionReport(subject_found=seg.found)
    colours = subject_colours(seg)
    cast = np.asarray(colours.cast, np.float32)
    if seg.found:
        report.colours, report.colour_shares, report.speckled = colours.colours, colours.shares, colours.speckled
    else:
        # Nothing stands out from the table: the candy is the table's colour (a white bean
        # on white paper). The middle of the frame says which.
        report.colours = [_middle_colour(seg.linear)]
    report.lighting, numbers = scene_stats.lighting(scene, cast, colours.cast_source, exif)
    report.numbers.update(numbers)
    report.background, numbers = scene_stats.background(scene, cast, flash=report.lighting == "flash")
    report.numbers.update(numbers)
    report.count, report.arrangement, numbers = scene_stats.layout(seg)
    report.numbers.update(numbers)
    report.framing, numbers = scene_stats.framing(seg, report.arrangement)
    report.numbers.update(numbers)
    report.numbers.update(speckle_share=round(colours.speckle_share, 3), shadow_share=round(seg.shadow_share, 3),
                          cast_from={"none": 0.0, "table": 1.0, "highlights": 2.0}[colours.cast_source])
    if not seg.found:
        report.count, report.arrangement, report.framing = 1, "single", "macro close-up"
    return report


def _middle_colour(linear: np.ndarray) -> str:
    h, w = linear.shape[:2]
    middle = linear[h // 3: 2 * h // 3, w // 3: 2 * w // 3].reshape(-1, 3)
    lightness, chroma, hue = (float(v) for v in lch(linear_to_oklab(np.median(middle, axis=0))))
    return name_colour(lightness, chroma, hue)


def tags(report: VisionReport, class_word: str) -> str:
    """The captioner's own raw caption: plain tags (the strategy layer rewrites it)."""
    parts = [class_word, *report.colours]
    if report.speckled:
        parts.append("speckled")
    for value in (report.arrangement, report.background, report.lighting, report.framing):
        if value:
            parts.append(value)
    return ", ".join(parts)


def image_for(photo: Photo, ctx: "StageContext") -> Path:
    """The original when it is still there (whole frame), else the prepared image."""
    if photo.original:
        original = Path(photo.original)
        if original.is_file():
            return original
    return ctx.run.path(photo.image)


class VisionStatsCaptioner(Captioner):
    name = "vision-stats"
    description = "colours, count, background, light and framing measured from the pixels (no model)"

    def caption(self, photos: list[Photo], ctx: "StageContext") -> dict[str, CaptionResult]:
        out: dict[str, CaptionResult] = {}
        with ctx.progress.task("vision-stats", total=len(photos)) as advance:
            for photo in photos:
                out[photo.id] = self._one(photo, ctx)
                advance()
        return out

    def _one(self, photo: Photo, ctx: "StageContext") -> CaptionResult:
        path = image_for(photo, ctx)
        try:
            report = analyse(path, photo.exif)
        except Exception as exc:  # one unreadable photo must not stop the others
            return CaptionResult(error=f"could not read {path.name}: {type(exc).__name__}: {exc}")
        facts = report.facts(ctx.config.class_word)
        return CaptionResult(caption=tags(report, ctx.config.class_word), facts=facts,
                             details={"numbers": report.numbers, "colour_shares": report.colour_shares,
                                      "subject_found": report.subject_found, "image": str(path)})


@hookimpl
def register_captioners(register):
    register(VisionStatsCaptioner())
