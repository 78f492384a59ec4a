"""What the photographer recorded: EXIF fields and folder names, read as caption facts.

Shared by the ``exif-folder`` captioner (which captions from it) and the rubric judge
(which checks captions against it). Never reads ``Photo.labels``: that is ground truth.

EXIF keys are the names prep writes (``DateTimeOriginal``, ``Flash``, ``SubjectDistance``,
``FocalLength``, ``BrightnessValue`` …); numeric tag ids are accepted too.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

from clood_candy.captions import vocab
from clood_candy.records import PhotoFacts

_TAG_IDS = {"DateTimeOriginal": 36867, "DateTime": 306, "Flash": 37385, "SubjectDistance": 37382,
            "FocalLength": 37386, "FocalLengthIn35mmFilm": 41989, "BrightnessValue": 37379,
            "ExposureTime": 33434, "ISOSpeedRatings": 34855, "FNumber": 33437}
ASSUMED_F_NUMBER = 2.8  # when EXIF has no FNumber: between a phone's f/1.8 and a zoom's f/4

# Folder words people use, beyond the caption vocabulary itself (which also counts).
FOLDER_WORDS: dict[str, tuple[str, str]] = {
    "day": ("time_of_day", "day"), "daytime": ("time_of_day", "day"), "morning": ("time_of_day", "day"),
    "afternoon": ("time_of_day", "day"), "noon": ("time_of_day", "day"),
    "night": ("time_of_day", "night"), "evening": ("time_of_day", "night"), "nighttime": ("time_of_day", "night"),
    "dark": ("lighting", "dim light"), "lowlight": ("lighting", "dim light"),
    "indoor": ("setting", "indoors"), "indoors": ("setting", "indoors"), "inside": ("setting", "indoors"),
    "kitchen": ("setting", "indoors"), "studio": ("setting", "indoors"),
    "outdoor": ("setting", "outdoors"), "outdoors": ("setting", "outdoors"), "outside": ("setting", "outdoors"),
    "garden": ("setting", "outdoors"), "park": ("setting", "outdoors"),
    "sun": ("lighting", "daylight"), "sunny": ("lighting", "daylight"), "window": ("lighting", "daylight"),
    "lamp": ("lighting", "warm indoor light"), "tungsten": ("lighting", "warm indoor light"),
    "flash": ("lighting", "flash"), "noflash": ("lighting", ""),
    "macro": ("framing", "macro close-up"), "closeup": ("framing", "macro close-up"),
    "close": ("framing", "macro close-up"), "detail": ("framing", "macro close-up"),
    "medium": ("framing", "medium shot"), "wide": ("framing", "wide shot"), "far": ("framing", "wide shot"),
    "overview": ("framing", "wide shot"),
    "overhead": ("view", "top-down view"), "topdown": ("view", "top-down view"), "above": ("view", "top-down view"),
    "side": ("view", "side view"), "angled": ("view", "three quarter view"),
    "single": ("arrangement", "single"), "singles": ("arrangement", "single"), "one": ("arrangement", "single"),
    "pile": ("arrangement", "pile"), "piles": ("arrangement", "pile"), "heap": ("arrangement", "pile"),
    "scattered": ("arrangement", "scattered"), "spread": ("arrangement", "scattered"),
    "bowl": ("arrangement", "bowl"), "bowls": ("arrangement", "bowl"),
    "wood": ("background", "wood"), "wooden": ("background", "wood"), "table": ("", ""),
    "cloth": ("background", "cloth"), "fabric": ("background", "cloth"),
    "speckled": ("speckled", "speckled"),
}
# Folder names that say nothing about the photos in them.
NOISE_WORDS = frozenset({
    "photos", "photo", "pictures", "pics", "images", "img", "dcim", "camera", "raw", "jpg", "jpeg", "export",
    "exports", "edited", "new", "folder", "misc", "other", "others", "test", "tests", "set", "batch", "shoot",
    "session", "copy", "final", "selects", "input", "data", "dataset", "train", "misc", "untitled", "and",
    "of", "the", "with", "no", "without", "shots", "shot", "my", "our", "pictures", "mobile", "phone",
})


def exif_get(exif: dict[str, Any], name: str) -> Any:
    """A field by name, or by its numeric tag id (as int or str)."""
    if name in exif:
        return exif[name]
    tag = _TAG_IDS.get(name)
    if tag is not None:
        return exif.get(tag, exif.get(str(tag)))
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, (list, tuple)) and len(value) == 2:  # an unreduced rational
        try:
            return float(value[0]) / float(value[1]) if float(value[1]) else None
        except (TypeError, ValueError):
            return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def shot_time(exif: dict[str, Any]) -> datetime | None:
    raw = exif_get(exif, "DateTimeOriginal") or exif_get(exif, "DateTime")
    if not isinstance(raw, str):
        return None
    try:
        return datetime.strptime(raw.strip()[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None


def time_of_day(exif: dict[str, Any]) -> str | None:
    """"day" 08–17 h, "night" 20–05 h; the hours around dusk and dawn depend on season
    and place, so they say nothing."""
    when = shot_time(exif)
    if when is None:
        return None
    if 8 <= when.hour < 18:
        return "day"
    if when.hour >= 20 or when.hour < 6:
        return "night"
    return None


def flash_fired(exif: dict[str, Any]) -> bool | None:
    """EXIF Flash: bit 0 says whether it fired (16 = "off, did not fire")."""
    raw = exif_get(exif, "Flash")
    if raw is None:
        return None
    if isinstance(raw, str):
        low = raw.lower()
        if "not fire" in low or "no flash" in low or low.startswith("off"):
            return False
        if "fired" in low or low.startswith("on"):
            return True
        number = _number(raw)
        return None if number is None else bool(int(number) & 1)
    if isinstance(raw, bool):
        return raw
    number = _number(raw)
    return None if number is None else bool(int(number) & 1)


def framing(exif: dict[str, Any]) -> str | None:
    """From SubjectDistance (metres), else from a 35 mm-equivalent focal length."""
    distance = _number(exif_get(exif, "SubjectDistance"))
    if distance is not None and 0 < distance < 100:
        if distance < 0.25:
            return "macro close-up"
        return "medium shot" if distance < 1.0 else "wide shot"
    focal35 = _number(exif_get(exif, "FocalLengthIn35mmFilm"))
    if focal35:
        if focal35 >= 90:
            return "macro close-up"
        if focal35 <= 20:
            return "wide shot"
    return None


def light_level(exif: dict[str, Any]) -> float | None:
    """How bright the scene was, as EV at ISO 100: the camera's own light meter.
    Sun ~15, overcast ~12, a bright room ~8, a living room ~5, candlelight ~2.
    From BrightnessValue (APEX: EV100 = BV + 5) or from shutter, ISO and aperture."""
    brightness = _number(exif_get(exif, "BrightnessValue"))
    if brightness is not None and -10 < brightness < 20:
        return brightness + 5.0
    exposure = _number(exif_get(exif, "ExposureTime"))
    iso = _number(exif_get(exif, "ISOSpeedRatings"))
    if not exposure or not iso or exposure <= 0 or iso <= 0:
        return None
    f_number = _number(exif_get(exif, "FNumber")) or ASSUMED_F_NUMBER
    return math.log2(f_number * f_number / exposure) - math.log2(iso / 100.0)


def lighting(exif: dict[str, Any]) -> str | None:
    """flash when it fired; daylight at EV100 ≥ 10; dim light at EV100 ≤ 3; indoor light
    for a room's level (EV100 3–9); None between 9 and 10 (a bright room or a dull day)."""
    if flash_fired(exif):
        return "flash"
    level = light_level(exif)
    if level is None:
        return None
    if level >= 10:
        return "daylight"
    if level <= 3:
        return "dim light"
    return "indoor light" if level < 9 else None


def folder_facts(folders: list[str], class_word: str = "", trigger: str = "") -> tuple[dict[str, str | list[str]], list[str]]:
    """(facts found in the folder names, unknown folder words outermost first).

    Each folder name is read whole first ("wooden table", "close-up"), then word by word
    ("night-flash" → night, flash). Colour words become bean colours.
    """
    facts: dict[str, str | list[str]] = {}
    unknown: list[str] = []
    for folder in folders:
        whole = vocab.normalise(folder)
        hits = _folder_terms(whole)
        if hits is None:
            leftovers = []
            hits = []
            for word in re.split(r"[\s/]+", whole):
                found = _folder_terms(word)
                if found:
                    hits.extend(found)
                elif _meaningful(word, class_word, trigger):
                    leftovers.append(word)
            if (not hits and _meaningful(whole, class_word, trigger)) or \
                    (leftovers and all(len(w) <= 3 for w in leftovers)):
                leftovers = [whole]  # nothing known, or only a stub left: the name as a whole ("speckled co")
            if leftovers:
                unknown.append(" ".join(leftovers))
        for concept, value in hits:
            if not concept or not value:
                continue
            if concept == "colours":
                colours = facts.setdefault("colours", [])
                if isinstance(colours, list) and value not in colours:
                    colours.append(value)
            else:
                facts[concept] = value  # an inner folder is more specific: it wins
    return facts, unknown


def _folder_terms(text: str) -> list[tuple[str, str]] | None:
    if not text:
        return None
    if text in FOLDER_WORDS or text.replace(" ", "") in FOLDER_WORDS:
        return [FOLDER_WORDS.get(text) or FOLDER_WORDS[text.replace(" ", "")]]
    terms = vocab.find_terms(text)
    if terms and sum(len(t.text.split()) for t in terms) == len(text.split()):
        return [(t.concept, t.value) for t in terms]
    return None


def _meaningful(word: str, class_word: str, trigger: str) -> bool:
    if not word or word in NOISE_WORDS or re.fullmatch(r"[\d\W_]+", word) or len(word) < 2:
        return False
    if trigger and word == trigger.lower():
        return False
    return not vocab.is_class_word(word, class_word)


def metadata_facts(exif: dict[str, Any], folders: list[str], *, class_word: str = "",
                   trigger: str = "") -> PhotoFacts:
    """Everything EXIF and folder names say about one photo. Folder names win over EXIF
    guesses (the photographer sorted them on purpose); the outermost unknown folder name is
    taken as the brand, other unknown words become extras."""
    from_folders, unknown = folder_facts(folders, class_word, trigger)
    facts = PhotoFacts(subject=class_word)
    facts.time_of_day = time_of_day(exif)
    facts.lighting = lighting(exif)
    facts.framing = framing(exif)
    for concept, value in from_folders.items():
        setattr(facts, concept, value if concept != "speckled" else True)
    if facts.lighting == "daylight" and facts.time_of_day == "night":
        facts.lighting = None  # a bright reading at night is a lit room, not daylight
    if unknown:
        facts.brand = unknown[0]
        facts.extra = unknown[1:]
    return facts
