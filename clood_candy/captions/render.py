"""Chosen facts → caption text, in the style the base model's text encoder was trained on.

- ``tags`` (SD1.5, Pony): "jlybn, jellybean, red, green, pile, white background, daylight"
- ``hybrid`` (SDXL): "jlybn, a pile of red and green jellybeans, white background, daylight"
- ``natural`` (Flux, SD3): "jlybn, a pile of red and green jellybeans on a white background in
  daylight, medium shot, top-down view."

The trigger comes first, exactly once, in every style.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clood_candy.captions import vocab

STYLES = ("tags", "hybrid", "natural")


@dataclass
class Chosen:
    """The facts one caption will say, by concept (values are canonical vocabulary)."""

    colours: list[str] = field(default_factory=list)
    speckled: bool = False
    count: int | None = None
    arrangement: str | None = None
    background: str | None = None
    lighting: str | None = None
    framing: str | None = None
    view: str | None = None
    time_of_day: str | None = None
    setting: str | None = None
    brand: str | None = None
    extra: list[str] = field(default_factory=list)

    def present(self) -> list[str]:
        """Concepts this caption says, most important first."""
        return [c for c in vocab.CONCEPTS if getattr(self, c)]

    def without(self, concept: str) -> "Chosen":
        copy = Chosen(**{k: (list(v) if isinstance(v, list) else v) for k, v in self.__dict__.items()})
        if concept == "extra" and copy.extra:
            copy.extra.pop()  # extras go one at a time, last first
        else:
            setattr(copy, concept, [] if concept == "colours" else (False if concept == "speckled" else None))
        return copy

    def words(self, concept: str) -> str:
        """The caption words a concept contributes (for "dropped: …" messages)."""
        value = getattr(self, concept)
        if concept == "colours":
            return ", ".join(value)
        if concept == "speckled":
            return "speckled"
        if concept == "extra":
            return value[-1]
        return vocab.tag(concept, value) if concept != "arrangement" else _arrangement_tag(self)


def _join(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _arrangement_tag(c: Chosen) -> str:
    if c.arrangement == "few" and c.count and c.count in vocab.NUMBER_WORDS:
        return vocab.NUMBER_WORDS[c.count]
    return vocab.tag("arrangement", c.arrangement or "")


def subject_phrase(c: Chosen, class_word: str) -> str:
    """"a single red jellybean", "three green jellybeans", "a pile of red and green jellybeans"."""
    look = " ".join(w for w in (_join(c.colours), "speckled" if c.speckled else "") if w)
    one = f"{look} {class_word}".strip()
    many = f"{look} {vocab.plural(class_word)}".strip()
    arrangement = c.arrangement
    if arrangement == "single":
        return f"a single {one}"
    if arrangement == "few":
        number = vocab.NUMBER_WORDS.get(c.count or 0, "a few")
        return f"{number} {many}" if c.count != 1 else f"a single {one}"
    if arrangement == "pile":
        return f"a pile of {many}"
    if arrangement == "scattered":
        return f"scattered {many}"
    if arrangement == "bowl":
        return f"a bowl of {many}"
    if c.count == 1 or (c.count is None and len(c.colours) <= 1):
        return f"{'an' if one[:1] in 'aeiou' else 'a'} {one}"
    return many


def render(c: Chosen, style: str, *, trigger: str, class_word: str) -> str:
    if style == "tags":
        return _tags(c, trigger, class_word)
    if style == "hybrid":
        return _hybrid(c, trigger, class_word)
    return _natural(c, trigger, class_word)


def _context_tags(c: Chosen, skip: tuple[str, ...] = ()) -> list[str]:
    out = []
    for concept in ("background", "lighting", "framing", "view", "time_of_day", "setting"):
        value = getattr(c, concept)
        if value and concept not in skip:
            out.append(vocab.tag(concept, value))
    if c.brand:
        out.append(c.brand)
    out.extend(c.extra)
    return out


def _tags(c: Chosen, trigger: str, class_word: str) -> str:
    parts = [trigger, class_word, *c.colours]
    if c.speckled:
        parts.append("speckled")
    if c.arrangement:
        parts.append(_arrangement_tag(c))
    parts.extend(_context_tags(c))
    return ", ".join(_dedupe(parts))


def _hybrid(c: Chosen, trigger: str, class_word: str) -> str:
    return ", ".join(_dedupe([trigger, subject_phrase(c, class_word), *_context_tags(c)]))


def _natural(c: Chosen, trigger: str, class_word: str) -> str:
    clause = subject_phrase(c, class_word)
    for concept in ("background", "lighting", "time_of_day", "setting"):
        value = getattr(c, concept)
        if value:
            clause += " " + vocab.phrase(concept, value)
    rest = [vocab.tag(k, getattr(c, k)) for k in ("framing", "view") if getattr(c, k)]
    if c.brand:
        rest.append(f"{c.brand} brand")
    rest.extend(c.extra)
    return ", ".join(_dedupe([trigger, clause, *rest])) + "."


def _dedupe(parts: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for part in parts:
        key = vocab.normalise(part)
        if part and key not in seen:
            seen.add(key)
            out.append(part)
    return out
