"""Several concepts (brands) in one LoRA, as seed 004's multi-concept workflow trains them:
each concept's photos get its own trigger beside the run's ("jlybn sunkist, ..."), so one
LoRA answers to "jlybn" for any bean and to "jlybn sunkist" for that brand; a concept with
fewer photos is repeated more, so each weighs about the same in training.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from pathlib import Path

from clood_candy import fsutil
from clood_candy.config import CloodConfig, Concept
from clood_candy.records import ConceptInfo, ConceptSet, Photo

MIN_PHOTOS = 20  # seed 004's multi-concept table: 20–40 photos per concept
MAX_TRIGGER_TOKENS = 3  # a trigger that splits into more pieces is long to learn and easy to misspell


FILE = "concepts.json"  # in the dataset folder: what the caption stage decided


def read(dataset: Path) -> ConceptSet:
    """The caption stage's concepts for a dataset folder (none when it wrote no file)."""
    path = Path(dataset) / FILE
    return ConceptSet.model_validate(fsutil.read_json(path)) if path.is_file() else ConceptSet()


def trigger_of(name: str) -> str:
    """"Jelly Belly" → "jellybelly": one lower-case word, as kohya's folder names write it."""
    return re.sub(r"[^a-z0-9]", "", name.lower()) or "concept"


def _matches(concept: Concept, photo: Photo) -> bool:
    source = photo.source.replace("\\", "/")
    if concept.glob:
        return fnmatch.fnmatch(source, concept.glob) or fnmatch.fnmatch(source.rsplit("/", 1)[-1], concept.glob)
    folder = (concept.folder or concept.name).strip("/")
    return source.startswith(folder + "/")


def _declared(config: CloodConfig, photos: list[Photo]) -> list[Concept]:
    """[[concepts]] first, then (concepts_from = "folders") each first-level folder none of them names."""
    concepts = list(config.concepts)
    if config.concepts_from == "folders":
        named = {(c.folder or c.name).strip("/").split("/")[0] for c in concepts if not c.glob}
        for folder in dict.fromkeys(p.folders[0] for p in photos if p.folders):
            if folder not in named:
                concepts.append(Concept(name=folder, folder=folder))
    return concepts


def resolve(config: CloodConfig, photos: list[Photo],
            tokens: Callable[[str], int] | None = None) -> ConceptSet:
    """Which photo belongs to which concept, each concept's repeats and share, and what to
    warn about: a photo two concepts claim (the first keeps it), a concept with few photos,
    a trigger that is already a word the model knows or splits into many tokens."""
    declared = _declared(config, photos)
    if not declared:
        return ConceptSet()
    warnings: list[str] = []
    members: dict[str, list[str]] = {c.name: [] for c in declared}
    for photo in photos:
        claims = [c for c in declared if _matches(c, photo)]
        if len(claims) > 1:
            warnings.append(f"{photo.source} is in {len(claims)} concepts ({', '.join(c.name for c in claims)}): "
                            f"it trains as {claims[0].name} only; give each concept its own folder or glob")
        if claims:
            members[claims[0].name].append(photo.id)
    concepts = []
    taken: dict[str, str] = {}  # trigger → the concept that has it
    for c in declared:
        trigger = c.trigger or trigger_of(c.name)
        if trigger == config.trigger:
            warnings.append(f"concept {c.name}: its trigger '{trigger}' is the run's own; give it another")
        if trigger in taken:
            # Repeats, export folders and the leak check are keyed by trigger: two concepts on
            # one word would silently train as one.
            clash, n = trigger, 2
            while f"{clash}{n}" in taken:
                n += 1
            trigger = f"{clash}{n}"
            warnings.append(f"concepts {taken[clash]} and {c.name} both make the trigger '{clash}': {c.name} trains "
                            f"as '{trigger}'; set trigger = \"...\" in its [[concepts]] entry to choose the word")
        taken[trigger] = c.name
        concepts.append(ConceptInfo(name=c.name, trigger=trigger, class_word=c.class_word or config.class_word,
                                    photos=members[c.name]))
    for c in [c for c in concepts if not c.photos]:
        warnings.append(f"concept {c.name} matched no photo (folder or glob?): it is left out")
    concepts = [c for c in concepts if c.photos]
    _balance(concepts)
    for c in concepts:
        if len(c.photos) < MIN_PHOTOS:
            warnings.append(f"concept {c.name} has {len(c.photos)} photos; seed 004 asks for {MIN_PHOTOS}–40 per "
                            f"concept: with fewer, '{c.trigger}' learns little of its own (repeats only re-show them)")
        warnings += _trigger_warnings(c, tokens)
    claimed = {i for c in concepts for i in c.photos}
    return ConceptSet(concepts=concepts, unassigned=[p.id for p in photos if p.id not in claimed], warnings=warnings)


def _balance(concepts: list[ConceptInfo]) -> None:
    """Repeats so each concept's photos × repeats come near the largest concept's count."""
    if not concepts:
        return
    most = max(len(c.photos) for c in concepts)
    for c in concepts:
        c.repeats = max(1, round(most / len(c.photos)))
    seen = sum(len(c.photos) * c.repeats for c in concepts)
    for c in concepts:
        c.share = round(len(c.photos) * c.repeats / seen, 4)


def _trigger_warnings(c: ConceptInfo, tokens: Callable[[str], int] | None) -> list[str]:
    """``tokens``: the base's own tokenizer (None when it cannot be loaded): one token for
    the whole trigger means its vocabulary already has the word."""
    from clood_candy.captions import vocab

    out = []
    count = tokens(c.trigger) if tokens is not None else None
    if vocab.find_terms(c.trigger) or count == 1:
        out.append(f"concept {c.name}: its trigger '{c.trigger}' is a word the model already knows, so that meaning "
                   f"leaks into the concept; a made-up word (e.g. '{c.trigger[:3]}x{c.trigger[3:6]}') is cleaner")
    if count is not None and count > MAX_TRIGGER_TOKENS:
        out.append(f"concept {c.name}: its trigger '{c.trigger}' splits into {count} tokens; a shorter one is "
                   "learnt faster and is easier to type")
    return out


def with_trigger(caption: str, run_trigger: str, concept_trigger: str, run_class: str = "",
                 concept_class: str = "") -> str:
    """The caption with the concept's trigger right after the run's (the first tag stays
    the trigger tag, so tag shuffling keeps both in place), and the concept's own class word
    where it names one ("gummy bear" in the place of the run's "jellybean")."""
    if run_class and concept_class and concept_class != run_class:
        caption = re.sub(rf"\b{re.escape(run_class)}\b", concept_class, caption)
    pattern = re.compile(rf"\b{re.escape(run_trigger)}\b")
    if pattern.search(caption):
        return pattern.sub(f"{run_trigger} {concept_trigger}", caption, count=1)
    return f"{run_trigger} {concept_trigger}, {caption}"
