"""``exif-folder``: captions from what the photographer recorded, not from pixels.

Folder names ("jelly-belly/night/indoor") become brand, time of day, setting, framing…
through a keyword table (``clood_candy.captions.metadata``); EXIF says the hour
(DateTimeOriginal → day or night), whether the flash fired, how far the subject was
(SubjectDistance → macro close-up … wide shot) and how bright the scene was.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clood_candy.captions import metadata, vocab
from clood_candy.fighters import Captioner
from clood_candy.hookspecs import hookimpl
from clood_candy.records import CaptionResult, Photo

if TYPE_CHECKING:
    from clood_candy.context import StageContext


class ExifFolderCaptioner(Captioner):
    name = "exif-folder"
    description = "folder names and EXIF (time, flash, distance, light level): what the photographer recorded"

    def caption(self, photos: list[Photo], ctx: "StageContext") -> dict[str, CaptionResult]:
        out: dict[str, CaptionResult] = {}
        for photo in photos:
            try:
                facts = metadata.metadata_facts(photo.exif, photo.folders, class_word=ctx.config.class_word,
                                                trigger=ctx.config.trigger)
            except Exception as exc:  # odd EXIF values must not cost the other photos
                out[photo.id] = CaptionResult(error=f"could not read this photo's metadata: {type(exc).__name__}: {exc}")
                continue
            words = [ctx.config.class_word, *facts.colours]
            for concept in ("arrangement", "background", "lighting", "framing", "view", "time_of_day", "setting"):
                value = getattr(facts, concept)
                if value:
                    words.append(vocab.tag(concept, value))
            if facts.speckled:
                words.append("speckled")
            words.extend(w for w in (facts.brand, *facts.extra) if w)
            out[photo.id] = CaptionResult(caption=", ".join(words), facts=facts,
                                          details={"folders": photo.folders, "exif_used": _used(photo.exif)})
        return out


def _used(exif: dict) -> dict:
    keys = ("DateTimeOriginal", "Flash", "SubjectDistance", "FocalLength", "BrightnessValue", "ExposureTime",
            "ISOSpeedRatings", "FNumber")
    return {k: exif[k] for k in keys if k in exif}


@hookimpl
def register_captioners(register):
    register(ExifFolderCaptioner())
