"""Ground-truth labels for synthetic studio photos.

Captioners, judges and the prep stage are tested against these, so every
field describes what is actually visible in the rendered (upright) image.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

# Plain colour words only: judges compare captions against these words.
BEAN_COLOURS = (
    "red", "orange", "yellow", "green", "blue",
    "purple", "pink", "white", "black", "brown",
)


class StudioLabels(BaseModel):
    brand: str
    speckled: bool
    colours: list[str] = Field(description="sorted unique colour words of the beans")
    count: int = Field(ge=1, description="number of beans in the shot")
    arrangement: Literal["single", "pile", "scattered", "bowl"]
    background: Literal["white", "wood", "cloth"]
    background_colour: str
    lighting: Literal["daylight", "indoor", "night"]
    flash: bool
    zoom: Literal["macro", "medium", "wide"]
    view: Literal["top-down", "angled"]
    # [x0, y0, x1, y1] (x1/y1 exclusive) of all bean pixels, in the upright
    # image, i.e. after applying the EXIF orientation.
    bean_box: list[int] = Field(min_length=4, max_length=4)
    # EXIF orientation tag the file was saved with (1 = upright, 6/8 = rotated).
    orientation: Literal[1, 6, 8] = 1
    # Imperfect shots, as real folders have them.
    duplicate_of: str | None = None
    defect: str | None = None


class StudioShot(BaseModel):
    path: str = Field(description="posix path relative to the output folder")
    labels: StudioLabels
