"""Free text → :class:`PhotoFacts`, through the shared vocabulary.

For captioners whose only output is text (a BLIP sentence, a VLM's tag list): the
strategy layer reads their words as facts, so every captioner's output is rendered,
standardised and budgeted the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from clood_candy.captions import vocab
from clood_candy.records import PhotoFacts


@dataclass
class ParsedText:
    facts: PhotoFacts
    features: list[str] = field(default_factory=list)  # subject-feature words seen ("glossy")
    conflicts: list[str] = field(default_factory=list)  # "daylight / night": both dropped


def _split_parts(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"[,;\n]+", text) if p.strip()]


def facts_from_text(text: str, *, class_word: str = "", trigger: str = "", keep_features: bool = False) -> ParsedText:
    """Every vocabulary term in ``text`` becomes a fact. In a tag list (comma-separated),
    a tag the vocabulary does not know is kept as an extra unless it is the trigger, the
    class, generic, or a subject feature (kept with ``keep_features``, for LoRA types that
    caption the subject's look); a sentence's other words are not (a sentence
    cannot be cut into tags safely). Terms that contradict each other are all dropped:
    a missing word costs less than a wrong one."""
    found: dict[str, list[str]] = {}
    colours: list[str] = []
    trigger_norm = vocab.normalise(trigger) if trigger else ""
    for term in vocab.find_terms(text):
        if term.concept == "colours":
            if term.value not in colours:
                colours.append(term.value)
            continue
        values = found.setdefault(term.concept, [])
        if term.value not in values:
            values.append(term.value)

    parsed = ParsedText(facts=PhotoFacts(subject=class_word, colours=colours))
    parsed.features = vocab.subject_features_in(text)

    chosen: dict[str, str] = {}
    for concept, values in found.items():
        if len(values) > 1:
            parsed.conflicts.append(" / ".join(values))
            continue
        chosen[concept] = values[0]
    pairs = list(chosen.items())
    drop: set[str] = set()
    for i, a in enumerate(pairs):
        for b in pairs[i + 1:]:
            if vocab.conflicts(a, b):
                parsed.conflicts.append(f"{vocab.tag(*a)} / {vocab.tag(*b)}")
                drop |= {a[0], b[0]}
    for concept in drop:
        chosen.pop(concept)

    for concept, value in chosen.items():
        if concept == "speckled":
            parsed.facts.speckled = True
        else:
            setattr(parsed.facts, concept, value)
    count = _count(text)
    if count is not None:
        parsed.facts.count = count

    parts = _split_parts(text)
    if len(parts) >= 2:  # a tag list: unknown tags are worth keeping
        for part in parts:
            norm = vocab.normalise(part)
            if not norm or norm == trigger_norm or vocab.is_class_word(norm, class_word):
                continue
            if vocab.is_generic(norm):
                continue
            if not keep_features and (vocab.is_subject_feature(norm) or vocab.subject_features_in(norm)):
                continue
            terms = vocab.find_terms(part)
            covered = sum(len(t.text.split()) for t in terms)
            rest = [w for w in norm.split()
                    if w not in _FILLER and not vocab.is_class_word(w, class_word) and w != trigger_norm]
            if covered >= len(rest):
                continue
            if norm not in parsed.facts.extra:
                parsed.facts.extra.append(norm)
    return parsed


# Little words around a known term that do not make a tag worth keeping on their own.
_FILLER = frozenset({"on", "in", "of", "with", "at", "and", "by", "from", "lit", "under", "against", "photo",
                     "shot", "view", "light", "lighting", "background", "surface", "is", "are", "some"})
_NUMBER = {v: k for k, v in vocab.NUMBER_WORDS.items()}


def _count(text: str) -> int | None:
    """"three jellybeans" / "3 beans" → 3; "a single bean" → 1."""
    norm = vocab.normalise(text)
    match = re.search(r"\b(\d{1,3}|one|two|three|four|five|six|seven|eight|nine|ten)\s+(?:\w+\s+){0,3}?"
                      r"(?:jelly ?beans?|beans?|cand(?:y|ies)|sweets?|pieces?)\b", norm)
    if match:
        word = match.group(1)
        return int(word) if word.isdigit() else _NUMBER[word]
    if re.search(r"\b(single|lone|solo)\b", norm):
        return 1
    return None
