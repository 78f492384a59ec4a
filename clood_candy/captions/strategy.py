"""The caption strategy layer: any captioner's raw output → the training caption.

Applied after every captioner (structured facts or free text alike). The rules, from the
seeds' captioning advice:

- In the caption = the model learns to tell it apart (you can prompt for it later).
  Not in the caption = the model binds it to the trigger (it comes with the trigger).
- So what varies across the set is captioned and what is (nearly) constant is left out,
  decided from the set itself: per concept, the share of its most common value. Colours
  are also weighed one by one: a colour in (nearly) every photo of a mixed set is the
  subject's own (every bag has teal beans) and binds to the trigger; the rest are captioned.
- The LoRA type decides what is never captioned (an object LoRA's own look, a style
  LoRA's lighting, a scene LoRA's setting).
- Trigger first, exactly once; one word per concept (``vocab``); no duplicates, no
  contradictions; within the text encoder's token window (counted with the base
  model's own tokenizer).

Public API::

    apply_strategy(raw, photos, strategy="auto", *, trigger, class_word, lora_type="object",
                   style="auto", base="", family=None, count_tokens=None, token_window=75)
        -> StrategyResult
    apply_for_run(raw, photos, strategy, ctx) -> StrategyResult   # everything from ctx
    resolve_style(style, base="", family=None) -> "tags" | "hybrid" | "natural"
    STRATEGIES: name → one-line description
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from clood_candy.captions import vocab
from clood_candy.captions.parse import facts_from_text
from clood_candy.captions.render import Chosen, render
from clood_candy.captions.tokens import CLIP_WINDOW, approx_tokens, overflow, token_counter
from clood_candy.records import CaptionResult, Photo, PhotoFacts

if TYPE_CHECKING:
    from clood_candy.context import StageContext

CONSTANT_SHARE = 0.9  # a value in this share of the photos binds to the trigger
MIN_PHOTOS = 3  # below this, nothing can be said to vary or not: caption what is known

STRATEGIES: dict[str, str] = {
    "auto": "caption what varies across the set, in the base model's style; shortened to fit its token window",
    "tags": "caption what varies, as comma-separated tags (SD1.5, Pony)",
    "hybrid": "caption what varies, a short phrase plus tags (SDXL)",
    "natural": "caption what varies, as a sentence (Flux, SD3)",
    "short": "trigger, class and the two concepts that vary most",
    "no-context": "trigger, class and the bean colours only",
    "everything": "every fact the captioner found, constant or not (the counter-example)",
}

# LoRA type → (concepts never captioned, leave out subject features, the rule in words)
LORA_RULES: dict[str, tuple[frozenset[str], bool, str]] = {
    "object": (frozenset(), True,
               "object: the jellybean's own look (shape, gloss) binds to the trigger and is never captioned; "
               "context that varies is captioned so it stays controllable"),
    "character": (frozenset({"colours", "speckled"}), True,
                  "character: identity (colours, shape, markings) binds to the trigger; pose, view and context are captioned"),
    "style": (frozenset({"lighting"}), False,
              "style: the look (light, colour grading) is what the LoRA learns, so it is left out; the content is captioned"),
    "concept": (frozenset(), False,
                "concept: the trigger names the idea; everything else that varies, the subject included, is captioned"),
    "scene": (frozenset({"background", "setting", "time_of_day", "lighting"}), False,
              "scene: the place and its light bind to the trigger; what is in it is captioned"),
}


class StrategyResult(BaseModel):
    """One strategy's training captions and why they read as they do (for the report)."""

    model_config = ConfigDict(extra="forbid")

    strategy: str
    style: str  # tags | hybrid | natural
    lora_type: str
    rule: str  # the LoRA type's captioning rule, in words
    captions: dict[str, str] = Field(default_factory=dict)  # photo id → training caption
    errors: dict[str, str] = Field(default_factory=dict)  # photo id → why it has no caption
    warnings: list[str] = Field(default_factory=list)
    decisions: dict[str, str] = Field(default_factory=dict)  # concept → captioned / bound, and why
    captioned: list[str] = Field(default_factory=list)  # concepts this strategy says
    removed: dict[str, int] = Field(default_factory=dict)  # subject-feature word → photos it was cut from
    dropped: dict[str, list[str]] = Field(default_factory=dict)  # photo id → words cut to fit the window
    tokens: dict[str, int] = Field(default_factory=dict)  # photo id → caption tokens
    token_window: int = CLIP_WINDOW
    exact_tokens: bool = True  # False: counted with the rough stand-in, no base model


def resolve_style(style: str, base: str = "", family: str | None = None) -> str:
    """``auto`` → the caption style the base model's text encoder knows: natural language
    for T5-conditioned models (Flux, SD3), tags for SD1.x/2.x and tag-trained SDXL
    derivatives (Pony, Illustrious), hybrid for plain SDXL."""
    if style != "auto":
        return style
    text = f"{family or ''} {base}".lower()
    if any(k in text for k in ("flux", "sd3", "sd-3", "stable-diffusion-3", "auraflow", "pixart", "hunyuan")):
        return "natural"
    if any(k in text for k in ("pony", "illustrious", "noobai", "animagine")):
        return "tags"
    if "xl" in text:
        return "hybrid"
    return "tags"


def _facts_of(result: CaptionResult, class_word: str, trigger: str, leak_filter: bool,
              removed: Counter, notes: list[str], photo_id: str) -> PhotoFacts | None:
    """A captioner's facts in the shared vocabulary, or its text read as facts."""
    if result.facts is not None:
        facts = _standardise(result.facts.model_copy(deep=True))
    elif result.caption and result.caption.strip():
        parsed = facts_from_text(result.caption, class_word=class_word, trigger=trigger,
                                 keep_features=not leak_filter)
        facts = parsed.facts
        for pair in parsed.conflicts:
            notes.append(f"{photo_id}: contradicting words dropped ({pair})")
        if leak_filter:
            removed.update(set(parsed.features))
    else:
        return None
    extras = []
    for word in facts.extra:
        norm = vocab.normalise(word)
        if not norm or norm == vocab.normalise(trigger) or vocab.is_class_word(norm, class_word) or vocab.is_generic(norm):
            continue
        features = vocab.subject_features_in(norm)
        if features and leak_filter:
            removed.update(set(features))
            continue
        terms = vocab.find_terms(norm)
        if len(terms) == 1 and terms[0].text == norm:  # a vocabulary word hiding in extras
            _fill(facts, terms[0].concept, terms[0].value)
            continue
        if norm not in extras:
            extras.append(norm)
    facts.extra = extras
    return facts


def _standardise(facts: PhotoFacts) -> PhotoFacts:
    """Synonyms → the one canonical term ("closeup" → "macro close-up")."""
    facts.colours = list(dict.fromkeys(vocab.canonical("colours", c) or vocab.normalise(c) for c in facts.colours if c))
    for concept in ("arrangement", "background", "lighting", "framing", "view", "time_of_day", "setting"):
        value = getattr(facts, concept)
        if value:
            setattr(facts, concept, vocab.canonical(concept, value) or vocab.normalise(value))
    if facts.brand:
        facts.brand = vocab.normalise(facts.brand)
    return facts


def _fill(facts: PhotoFacts, concept: str, value: str) -> None:
    if concept == "colours":
        if value not in facts.colours:
            facts.colours.append(value)
    elif concept == "speckled":
        facts.speckled = True
    elif not getattr(facts, concept):
        setattr(facts, concept, value)


def _value(facts: PhotoFacts, concept: str) -> str | None:
    """One comparable value per concept, for deciding what varies."""
    if concept == "colours":
        return "+".join(sorted(facts.colours)) or None
    if concept == "speckled":
        return None if facts.speckled is None else ("speckled" if facts.speckled else "plain")
    if concept == "arrangement":
        if facts.arrangement:
            return facts.arrangement
        if facts.count is not None:
            return "single" if facts.count == 1 else ("few" if facts.count <= 5 else None)
        return None
    return getattr(facts, concept)


def _decide(all_facts: dict[str, PhotoFacts], never: frozenset[str]) -> tuple[dict[str, str], dict[str, float]]:
    """concept → decision text, and concept → share of its most common value (for `short`)."""
    decisions: dict[str, str] = {}
    shares: dict[str, float] = {}
    total = len(all_facts)
    concepts = [c for c in vocab.CONCEPTS if c != "extra"]
    extras = Counter(e for f in all_facts.values() for e in set(f.extra))
    for concept in [*concepts, *(f"extra: {e}" for e in extras)]:
        if concept.startswith("extra: "):
            n = extras[concept[7:]]
            values = Counter({"yes": n})
            known = total  # an extra is there or not: absence is a value too
            if n < total:
                values["no"] = total - n
        else:
            values = Counter(v for f in all_facts.values() if (v := _value(f, concept)) is not None)
            known = sum(values.values())
        if not known:
            continue
        top, top_n = values.most_common(1)[0]
        share = top_n / known
        shares[concept] = share
        shown = {"yes": concept[7:], "no": "absent"}.get(top, top.replace("+", " and "))
        base = concept.split(":")[0]
        if base in never:
            decisions[concept] = "bound to trigger (the LoRA type's own subject)"
        elif total < MIN_PHOTOS:
            decisions[concept] = f"captioned (only {total} photo(s): too few to tell what varies)"
        elif known < 0.5 * total:
            decisions[concept] = f"captioned (known for {known} of {total} photos)"
        elif share >= CONSTANT_SHARE:
            decisions[concept] = f"bound to trigger (constant: {shown} in {share:.0%})"
        else:
            decisions[concept] = f"captioned (varies: {len(values)} values, most common {shown} in {share:.0%})"
            if concept == "colours":
                decisions.update(_constant_colours(all_facts))
    return decisions, shares


def _constant_colours(all_facts: dict[str, PhotoFacts]) -> dict[str, str]:
    """``colours: <word>`` → why it binds, for each colour in (nearly) every photo whose
    colours are known while the sets of colours vary: left in, it would teach the base
    model's idea of that word instead of the photos' own shade."""
    known = [f for f in all_facts.values() if f.colours]
    counts = Counter(c for f in known for c in set(f.colours))
    return {f"colours: {c}": f"bound to trigger (in {n / len(known):.0%} of the photos: the subject's own colour)"
            for c, n in counts.most_common() if n / len(known) >= CONSTANT_SHARE}


def _choose(facts: PhotoFacts, include: set[str], bound: set[str]) -> Chosen:
    chosen = Chosen(count=facts.count)
    if "colours" in include:
        chosen.colours = [c for c in facts.colours if f"colours: {c}" not in bound]
    if "speckled" in include:
        chosen.speckled = bool(facts.speckled)
    if "arrangement" in include:
        chosen.arrangement = _value(facts, "arrangement")
    for concept in ("background", "lighting", "framing", "view", "time_of_day", "setting", "brand"):
        if concept in include:
            setattr(chosen, concept, getattr(facts, concept))
    chosen.extra = [e for e in facts.extra if f"extra: {e}" in include]
    return chosen


def _drop_conflicts(chosen: Chosen, photo_id: str, notes: list[str]) -> Chosen:
    pairs = [(c, getattr(chosen, c)) for c in vocab.SINGLE_VALUED if isinstance(getattr(chosen, c), str)]
    for i, a in enumerate(pairs):
        for b in pairs[i + 1:]:
            if vocab.conflicts(a, b) and getattr(chosen, a[0]) and getattr(chosen, b[0]):
                notes.append(f"{photo_id}: '{vocab.tag(*a)}' contradicts '{vocab.tag(*b)}': both left out")
                chosen = chosen.without(a[0]).without(b[0])
    return chosen


def apply_strategy(raw: dict[str, CaptionResult], photos: list[Photo], strategy: str = "auto", *,
                   trigger: str, class_word: str, lora_type: str = "object", style: str = "auto",
                   base: str = "", family: str | None = None,
                   count_tokens: Callable[[str], int] | None = None,
                   token_window: int = CLIP_WINDOW) -> StrategyResult:
    """Turn one captioner's raw results into training captions under a named strategy.

    ``raw`` maps photo id → CaptionResult (facts and/or text); photos without a usable
    result land in ``errors``. ``count_tokens`` should be the base model's tokenizer
    (``LoadedBase.count_tokens``); without it a rough stand-in counts and
    ``exact_tokens`` is False. ``base``/``family`` pick the style when ``style`` is auto.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown caption strategy '{strategy}' (known: {', '.join(STRATEGIES)})")
    if lora_type not in LORA_RULES:
        raise ValueError(f"unknown LoRA type '{lora_type}' (known: {', '.join(LORA_RULES)})")
    never, leak_filter, rule = LORA_RULES[lora_type]
    chosen_style = strategy if strategy in ("tags", "hybrid", "natural") else resolve_style(style, base, family)
    result = StrategyResult(strategy=strategy, style=chosen_style, lora_type=lora_type, rule=rule,
                            token_window=token_window, exact_tokens=count_tokens is not None)
    count = count_tokens or approx_tokens

    removed: Counter = Counter()
    all_facts: dict[str, PhotoFacts] = {}
    for photo in photos:
        got = raw.get(photo.id)
        if got is None or got.error:
            result.errors[photo.id] = (got.error if got else None) or "the captioner returned nothing"
            continue
        facts = _facts_of(got, class_word, trigger, leak_filter, removed, result.warnings, photo.id)
        if facts is None:
            result.errors[photo.id] = "empty caption"
            continue
        all_facts[photo.id] = facts
    result.removed = dict(removed)

    decisions, shares = _decide(all_facts, never)
    result.decisions = decisions
    known = [c for c in decisions if c.split(":")[0] not in never]
    varying = [c for c in known if decisions[c].startswith("captioned")]
    if strategy == "everything":
        include = set(known)
    elif strategy == "no-context":
        include = {"colours"} - never
    elif strategy == "short":
        ranked = sorted(varying, key=lambda c: (shares.get(c, 1.0), _priority(c)))
        include = set(ranked[:2])
    else:
        include = set(varying)
    result.captioned = [c for c in decisions if c in include]
    bound = set() if strategy == "everything" else {c for c in decisions if c.startswith("colours: ")}

    shorten = strategy in ("auto", "short", "no-context")
    for photo_id, facts in all_facts.items():
        chosen = _drop_conflicts(_choose(facts, include, bound), photo_id, result.warnings)
        text = render(chosen, chosen_style, trigger=trigger, class_word=class_word)
        total, tail = overflow(text, count, token_window)
        if tail and shorten:
            cut: list[str] = []
            while total > token_window and chosen.present():
                concept = chosen.present()[-1]
                cut.append(chosen.words(concept))
                chosen = chosen.without(concept)
                text = render(chosen, chosen_style, trigger=trigger, class_word=class_word)
                total = count(text)
            result.dropped[photo_id] = cut
            result.warnings.append(f"{photo_id}: over the {token_window}-token window; dropped: {', '.join(cut)}")
        elif tail:
            result.warnings.append(f"{photo_id}: {total} tokens, over the {token_window}-token window; "
                                   f"the text encoder never sees: '{tail}'")
        result.captions[photo_id] = text
        result.tokens[photo_id] = total
    return result


def _priority(concept: str) -> int:
    base = concept.split(":")[0]
    return vocab.CONCEPTS.index(base) if base in vocab.CONCEPTS else len(vocab.CONCEPTS)


def apply_for_run(raw: dict[str, CaptionResult], photos: list[Photo], strategy: str,
                  ctx: "StageContext") -> StrategyResult:
    """:func:`apply_strategy` with trigger, class, LoRA type, style and the base model's
    tokenizer taken from the run (the base model is loaded if it can be)."""
    count, window, exact = token_counter(ctx)
    return apply_strategy(raw, photos, strategy, trigger=ctx.config.trigger, class_word=ctx.config.class_word,
                          lora_type=ctx.config.caption.lora_type, style=ctx.config.caption.style,
                          base=ctx.config.base, family=ctx.config.family,
                          count_tokens=count if exact else None, token_window=window)
