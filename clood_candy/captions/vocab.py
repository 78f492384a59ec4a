"""The shared caption vocabulary: one term per concept, and every synonym that maps to it.

Captioners write :class:`~clood_candy.records.PhotoFacts` with the canonical values below;
the strategy layer renders them; the rubric judge checks captions against them. A free-text
caption (a VLM's sentence, a user's tags) is mapped onto the same terms with
:func:`find_terms`, so "closeup", "close-up" and "macro" all become "macro close-up".

Public API (used by other captioners and judges; keep it stable):

- ``CONCEPTS``: the concept names, most important first.
- ``canonical(concept, word) -> str | None``: the canonical value of a synonym.
- ``find_terms(text) -> list[Term]``: every vocabulary term found in a text.
- ``tag(concept, value)`` / ``phrase(concept, value)``: how a value reads in a tag-style /
  natural-language caption.
- ``is_subject_feature(text)``, ``is_generic(text)``: words an object LoRA must not
  caption (they bind to the trigger) and words that say nothing.
- ``conflicts(a, b) -> bool``: two (concept, value) pairs that cannot both be true.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Most important first: a strategy that must shorten a caption drops from the end.
CONCEPTS = ("colours", "speckled", "arrangement", "background", "lighting", "framing", "view",
            "time_of_day", "setting", "brand", "extra")
CONTEXT = ("arrangement", "background", "lighting", "framing", "view", "time_of_day", "setting")

COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "white", "black", "brown")

# canonical value → synonyms (lower case, words separated by single spaces).
SYNONYMS: dict[str, dict[str, tuple[str, ...]]] = {
    "colours": {
        "red": ("red", "crimson", "scarlet", "cherry red", "dark red", "maroon"),
        "orange": ("orange", "tangerine", "amber"),
        "yellow": ("yellow", "lemon yellow", "golden yellow"),
        "green": ("green", "lime green", "lime", "dark green", "light green"),
        "blue": ("blue", "navy", "navy blue", "dark blue", "light blue", "cyan", "turquoise"),
        "purple": ("purple", "violet", "lavender", "plum", "lilac", "mauve"),
        "pink": ("pink", "magenta", "rose", "hot pink", "light pink"),
        "white": ("white", "cream", "off white", "ivory", "cream coloured", "cream colored"),
        "black": ("black", "jet black"),
        "brown": ("brown", "chocolate brown", "tan", "caramel"),
        "grey": ("grey", "gray", "silver"),
    },
    "speckled": {
        "speckled": ("speckled", "spotted", "speckles", "dotted", "flecked", "specks", "freckled"),
    },
    "arrangement": {
        "single": ("single", "one", "a single", "lone", "solo", "single bean", "one bean", "isolated"),
        "few": ("few", "a few", "several", "couple", "a couple", "small group", "handful", "two", "three",
                "four", "five"),
        "pile": ("pile", "heap", "mound", "stack", "pile of", "heaped", "piled"),
        "scattered": ("scattered", "spread out", "strewn", "spread", "scatter", "sprinkled", "spilled"),
        "bowl": ("bowl", "in a bowl", "dish", "in a dish", "cup", "jar", "in a jar"),
    },
    "background": {
        "white": ("white background", "white table", "white surface", "white paper",
                  "plain white background", "white backdrop", "white pad"),
        "grey": ("grey background", "gray background", "grey table", "gray table", "grey surface",
                 "gray surface", "concrete", "grey backdrop", "gray backdrop"),
        "wood": ("wood", "wooden", "wood background", "wooden table", "wood table", "wooden surface",
                 "wood surface", "wood grain", "wooden board", "wooden background"),
        "dark": ("dark background", "black background", "dark surface", "black surface", "dark backdrop",
                 "black backdrop"),
        "textured": ("textured background", "textured surface", "textured"),
        "cloth": ("cloth", "fabric", "tablecloth", "textile", "linen", "cloth background",
                  "fabric background", "towel", "napkin"),
    },
    "lighting": {
        "daylight": ("daylight", "natural light", "sunlight", "sunny", "bright daylight", "window light",
                     "daylight lighting", "natural lighting", "sunlit", "bright light"),
        "warm indoor light": ("warm indoor light", "tungsten", "tungsten light", "lamp light", "lamplight",
                              "warm light", "warm lighting", "incandescent", "warm indoor lighting",
                              "candlelight"),
        "indoor light": ("indoor light", "indoor lighting", "room light", "artificial light", "fluorescent",
                         "fluorescent light", "office light", "ceiling light"),
        "dim light": ("dim light", "low light", "dim", "dim lighting", "low lighting", "dark lighting",
                      "dimly lit", "night lighting", "moody light"),
        "flash": ("flash", "flash photo", "flash photography", "on camera flash", "with flash", "flash lit",
                  "camera flash", "harsh flash"),
    },
    "framing": {
        "macro close-up": ("macro close-up", "macro close up", "close-up", "close up", "closeup", "macro",
                           "extreme close-up", "extreme close up", "macro shot", "macro photo",
                           "close-up shot", "close up shot", "detail shot"),
        "medium shot": ("medium shot", "medium", "mid shot", "medium close-up", "medium view"),
        "wide shot": ("wide shot", "wide", "wide angle", "wide-angle", "full view", "overview", "long shot",
                      "establishing shot", "wide view"),
    },
    "view": {
        "top-down view": ("top-down view", "top down view", "top-down", "top down", "overhead",
                          "overhead view", "from above", "bird's eye view", "birds eye view", "flat lay",
                          "flatlay", "overhead shot"),
        "three quarter view": ("three quarter view", "three-quarter view", "3/4 view", "angled view",
                               "angled", "high angle", "45 degree angle", "at an angle", "from an angle",
                               "oblique view"),
        "side view": ("side view", "from the side", "eye level", "side-on", "side on", "profile view",
                      "low angle"),
    },
    "time_of_day": {
        "day": ("day", "daytime", "day time"),
        "night": ("night", "nighttime", "night time", "evening", "at night"),
    },
    "setting": {
        "indoors": ("indoors", "indoor", "inside", "interior"),
        "outdoors": ("outdoors", "outdoor", "outside", "exterior", "outdoor scene"),
    },
}

# How a canonical value reads in a tag list; natural phrases live in PHRASES.
TAGS: dict[str, dict[str, str]] = {
    "arrangement": {"single": "single", "few": "a few", "pile": "pile", "scattered": "scattered",
                    "bowl": "in a bowl"},
    "background": {"white": "white background", "grey": "grey background", "wood": "wooden surface",
                   "dark": "dark background", "textured": "textured background", "cloth": "cloth background"},
    "lighting": {"daylight": "daylight", "warm indoor light": "warm indoor light", "indoor light": "indoor light",
                 "dim light": "dim light", "flash": "flash photo"},
    "time_of_day": {"day": "daytime", "night": "night"},
}
PHRASES: dict[str, dict[str, str]] = {
    "background": {"white": "on a white background", "grey": "on a grey background",
                   "wood": "on a wooden surface", "dark": "on a dark background",
                   "textured": "on a textured background", "cloth": "on cloth"},
    "lighting": {"daylight": "in daylight", "warm indoor light": "in warm indoor light",
                 "indoor light": "under indoor light",
                 "dim light": "in dim light", "flash": "lit by a camera flash"},
    "time_of_day": {"day": "during the day", "night": "at night"},
    "setting": {"indoors": "indoors", "outdoors": "outdoors"},
}

# Words that describe what every jellybean looks like: for an object LoRA they belong to
# the trigger (captioning them teaches the model they are optional).
SUBJECT_FEATURES = frozenset({
    "glossy", "gloss", "shiny", "shine", "bean-shaped", "bean shaped", "kidney-shaped", "kidney shaped",
    "kidney bean shape", "oval", "oval-shaped", "oval shaped", "oblong", "rounded", "smooth", "sugar-coated",
    "sugar coated", "candy-coated", "candy coated", "candy coating", "hard shell", "chewy", "sugary",
    "translucent", "reflective", "specular highlight", "highlights", "shiny surface", "glossy surface",
    "glossy finish", "shiny finish", "gummy", "legume shaped", "capsule shaped", "pill shaped",
})
# Other names for the class: said once, as the class word, never again.
CLASS_SYNONYMS = frozenset({
    "jellybean", "jellybeans", "jelly bean", "jelly beans", "bean", "beans", "candy", "candies", "sweets",
    "sweet", "confectionery", "confection", "treat", "treats", "jelly",
})
# Words that say nothing a model can learn from.
GENERIC = frozenset({
    "a photo", "photo", "a picture", "picture", "an image", "image", "photograph", "a photograph", "object",
    "an object", "thing", "something", "stuff", "item", "photo of", "picture of", "image of", "stock photo",
    "high quality", "best quality", "masterpiece", "detailed", "4k", "8k", "hd",
})

# (concept, value) pairs that cannot both be true of one photo.
_CONFLICTS = {
    frozenset({("lighting", "daylight"), ("time_of_day", "night")}),
    frozenset({("lighting", "daylight"), ("lighting", "dim light")}),
    frozenset({("lighting", "warm indoor light"), ("setting", "outdoors")}),
    frozenset({("lighting", "indoor light"), ("setting", "outdoors")}),
    frozenset({("lighting", "daylight"), ("lighting", "warm indoor light")}),
}
SINGLE_VALUED = ("speckled", "arrangement", "background", "lighting", "framing", "view", "time_of_day",
                 "setting", "brand")

_CLOTH_WORDS = ("cloth", "fabric", "tablecloth", "textile", "linen", "towel", "napkin")


def normalise(text: str) -> str:
    """Lower case, hyphens/underscores as spaces, no articles, single spaces."""
    text = text.lower().replace("_", " ").replace("colored", "coloured")
    text = re.sub(r"[^\w\s/'-]", " ", text)
    text = re.sub(r"(?<=\w)-(?=\w)", " ", text)  # close-up == close up
    words = [w for w in text.split() if w not in ("a", "an", "the")]
    return " ".join(words)


def _build_index() -> dict[str, tuple[str, str]]:
    index: dict[str, tuple[str, str]] = {}
    for concept, values in SYNONYMS.items():
        for value, words in values.items():
            for word in (value, *words):
                index.setdefault(normalise(word), (concept, value))
    return index


_INDEX = _build_index()
_MAX_WORDS = max(len(k.split()) for k in _INDEX)
_FEATURES = frozenset(normalise(w) for w in SUBJECT_FEATURES)
_GENERIC = frozenset(normalise(w) for w in GENERIC)
_CLASS = frozenset(normalise(w) for w in CLASS_SYNONYMS)


def canonical(concept: str, word: str) -> str | None:
    """The canonical value for ``word`` in ``concept`` ("closeup" → "macro close-up"), or None."""
    if concept == "background":
        cloth = cloth_colour(word)
        if cloth:
            return cloth
    found = _INDEX.get(normalise(word))
    if found and found[0] == concept:
        return found[1]
    return None


def cloth_colour(text: str) -> str | None:
    """"red cloth" / "red fabric background" → "red cloth"; else None."""
    words = normalise(text).split()
    if len(words) >= 2 and words[1] in _CLOTH_WORDS:
        colour = canonical("colours", words[0])
        if colour:
            return f"{colour} cloth"
    return None


@dataclass(frozen=True)
class Term:
    concept: str
    value: str
    text: str  # the words as found
    start: int  # word index in the normalised text


def find_terms(text: str) -> list[Term]:
    """Every vocabulary term in ``text``, longest match first, left to right.

    "a close up of a red jelly bean on white cloth" → framing "macro close-up",
    colours "red", background "white cloth".
    """
    words = normalise(text).split()
    found: list[Term] = []
    i = 0
    while i < len(words):
        # "<colour> cloth" reads as a background, not as a bean colour.
        if i + 1 < len(words) and words[i + 1] in _CLOTH_WORDS and canonical("colours", words[i]):
            found.append(Term("background", f"{canonical('colours', words[i])} cloth", " ".join(words[i:i + 2]), i))
            i += 2
            continue
        for n in range(min(_MAX_WORDS, len(words) - i), 0, -1):
            chunk = " ".join(words[i:i + n])
            hit = _INDEX.get(chunk)
            if hit:
                found.append(Term(hit[0], hit[1], chunk, i))
                i += n
                break
        else:
            i += 1
    return found


def is_subject_feature(text: str) -> bool:
    """True for words that describe the class itself (shape, gloss): "glossy", "bean-shaped"."""
    return normalise(text) in _FEATURES


def subject_features_in(text: str) -> list[str]:
    """The subject-feature words inside a longer text."""
    words = normalise(text).split()
    hits = []
    for n in (3, 2, 1):
        for i in range(len(words) - n + 1):
            chunk = " ".join(words[i:i + n])
            if chunk in _FEATURES and not any(chunk in h for h in hits):
                hits.append(chunk)
    return hits


def is_generic(text: str) -> bool:
    return normalise(text) in _GENERIC


def is_class_word(text: str, class_word: str = "") -> bool:
    """True for the class word, its plural, or a common name for it ("jelly beans", "candy")."""
    norm = normalise(text)
    own = normalise(class_word)
    return norm in _CLASS or (bool(own) and norm in (own, normalise(plural(class_word))))


def conflicts(a: tuple[str, str], b: tuple[str, str]) -> bool:
    """True when two (concept, value) pairs cannot describe the same photo."""
    if a == b:
        return False
    if a[0] == b[0] and a[0] in SINGLE_VALUED:
        return True
    return frozenset({a, b}) in _CONFLICTS


def tag(concept: str, value: str) -> str:
    """The tag-style words for a value: background "wood" → "wooden surface"."""
    if concept == "background" and value.endswith(" cloth"):
        return value
    return TAGS.get(concept, {}).get(value, value)


def phrase(concept: str, value: str) -> str:
    """The natural-language words for a value: background "wood" → "on a wooden surface"."""
    if concept == "background" and value.endswith(" cloth"):
        return f"on {value}"
    return PHRASES.get(concept, {}).get(value, tag(concept, value))


def plural(word: str) -> str:
    if word.endswith(("s", "x", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight",
                9: "nine", 10: "ten"}
