"""``rubric``: the seeds' captioning rules as checks, each with a reason.

Pointwise: every caption gets a score in [0, 1] and a short list of what passed (✓) and
what failed (✗). The evidence it checks against is what any user has — the photo's
pixels (through the ``vision-stats`` analysis), its EXIF and its folder names — never the
ground-truth ``labels`` of demo photos.

Checks (weight):
- trigger first, exactly once (2)
- says something: not empty, not generic ("a photo", the bare class word) (2)
- no subject features for an object/character LoRA: shape, gloss bind to the trigger (1.5)
- covers the context that varies across the set (2); colours count when they vary
- agrees with the evidence: colours and background seen in the pixels; lighting, time,
  setting, framing recorded in EXIF and folder names; and with itself (3)
- one word per concept, the same word across the set (0.5)
- fits the text encoder's token window, counted by the base model's tokenizer (1)

Known bias: colour and background evidence comes from the same analysis ``vision-stats``
captions with, so that captioner cannot contradict it. The other judges (diffusion
likelihood, Claude) are independent of it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from clood_candy.captions import metadata, vocab
from clood_candy.captions.tokens import token_counter
from clood_candy.fighters import Judge
from clood_candy.hookspecs import hookimpl
from clood_candy.records import FightItem, Photo, Score
from clood_candy_plugins.captioners.vision_stats import VisionReport, analyse, image_for

if TYPE_CHECKING:
    from clood_candy.context import StageContext

WEIGHTS = {"trigger": 2.0, "specific": 2.0, "no_leak": 1.5, "context": 2.0, "agrees": 3.0, "vocabulary": 0.5,
           "budget": 1.0}
CONTEXT = ("colours", "arrangement", "background", "lighting", "framing", "time_of_day", "setting")
VARIES_BELOW = 0.9  # a concept whose most common value covers less of the set than this varies
FRAMING_ORDER = ["macro close-up", "medium shot", "wide shot"]
_LEADING = ("on a ", "on ", "in ", "lit by a ", "lit by ", "under ", "during the ", "at ", "a ")


def _canonical_forms() -> set[str]:
    """Every way the shared vocabulary writes a value itself (tags, phrases)."""
    forms: set[str] = set()
    for concept, values in vocab.SYNONYMS.items():
        for value in values:
            for text in (value, vocab.tag(concept, value), vocab.phrase(concept, value)):
                norm = vocab.normalise(text)
                forms.add(norm)
                for lead in _LEADING:
                    if norm.startswith(vocab.normalise(lead) + " "):
                        forms.add(norm[len(vocab.normalise(lead)) + 1:])
    # the natural-language subject phrase's own words ("a pile of", "scattered", "three")
    forms.update({"single", "pile of", "pile", "scattered", "bowl", "few", "speckled"})
    forms.update(f"{colour} cloth" for colour in vocab.SYNONYMS["colours"])
    forms.update(vocab.NUMBER_WORDS.values())
    return forms


CANONICAL = _canonical_forms()


class Evidence:
    """What the judge knows about one photo without ground truth."""

    def __init__(self, photo: Photo | None, vision: VisionReport | None, class_word: str, trigger: str):
        self.vision = vision
        exif = photo.exif if photo else {}
        self.meta = metadata.metadata_facts(exif, photo.folders if photo else [], class_word=class_word,
                                            trigger=trigger)
        self.flash = metadata.flash_fired(exif)

    def observed(self) -> dict[str, str | None]:
        """Per concept, what the evidence says (for deciding what varies across the set)."""
        v = self.vision
        return {
            "colours": "+".join(sorted(v.colours)) if v and v.subject_found and v.colours else None,
            "arrangement": v.arrangement if v else None,
            "background": v.background if v else None,
            "lighting": (v.lighting if v else None) or self.meta.lighting,
            "framing": (v.framing if v else None) or self.meta.framing,
            "time_of_day": self.meta.time_of_day,
            "setting": self.meta.setting,
        }


def _terms(caption: str) -> dict[str, list[vocab.Term]]:
    found: dict[str, list[vocab.Term]] = defaultdict(list)
    for term in vocab.find_terms(caption):
        found[term.concept].append(term)
    return found


def _kind(background: str) -> str:
    return "cloth" if background.endswith("cloth") else background


class RubricJudge(Judge):
    name = "rubric"
    description = "the seeds' captioning rules as checks: trigger, specificity, no subject features, context, " \
                  "evidence from pixels/EXIF/folders, vocabulary, token budget"

    def score(self, items: list[FightItem], ctx: "StageContext") -> dict[str, dict[str, Score]]:
        trigger, class_word = ctx.config.trigger, ctx.config.class_word
        leak_matters = ctx.config.caption.lora_type in ("object", "character")
        count, window, exact = self._counter(ctx)
        evidence = {item.id: Evidence(item.photo, self._look(item.photo, ctx), class_word, trigger) for item in items}
        expected = self._varying(evidence)
        forms = self._forms_by_fighter(items)
        out: dict[str, dict[str, Score]] = {}
        for item in items:
            for cand in item.candidates:
                if not (cand.text or "").strip():  # nothing to check: nothing earned
                    out.setdefault(item.id, {})[cand.fighter] = Score(score=0.0, reason="✗ empty caption")
                    continue
                checks = self._checks(cand.text, evidence[item.id], expected, forms.get(cand.fighter, {}),
                                      trigger=trigger, class_word=class_word, leak_matters=leak_matters,
                                      count=count, window=window, exact=exact)
                total = sum(WEIGHTS[k] * v for k, (v, _) in checks.items()) / sum(WEIGHTS[k] for k in checks)
                reason = "; ".join(text for _, text in checks.values() if text)
                out.setdefault(item.id, {})[cand.fighter] = Score(score=round(total, 4), reason=reason)
        return out

    def _counter(self, ctx: "StageContext"):
        """The base model's tokenizer, asked for once per run (a base that cannot load
        here costs seconds to fail; the stand-in count is used instead)."""
        cached = getattr(self, "_tokens", None)
        if cached is None or cached[0] is not ctx:
            self._tokens = (ctx, *token_counter(ctx))
        return self._tokens[1:]

    # --- evidence ---------------------------------------------------------------

    def _look(self, photo: Photo | None, ctx: "StageContext") -> VisionReport | None:
        if photo is None:
            return None
        path: Path = image_for(photo, ctx)
        try:
            return analyse(path, photo.exif)
        except Exception as exc:  # an unreadable image: judge on text and metadata alone
            ctx.log.warning("rubric: cannot read %s (%s); pixel checks skipped", path.name, exc)
            return None

    def _varying(self, evidence: dict[str, Evidence]) -> set[str]:
        """Concepts the set's evidence shows varying: those a caption should say."""
        if len(evidence) < 3:
            return {"arrangement", "background", "lighting", "framing"}
        varying = set()
        for concept in CONTEXT:
            values = [v for e in evidence.values() if (v := e.observed()[concept]) is not None]
            if len(values) >= 0.5 * len(evidence) and Counter(values).most_common(1)[0][1] < VARIES_BELOW * len(values):
                varying.add(concept)
        return varying

    def _forms_by_fighter(self, items: list[FightItem]) -> dict[str, dict[tuple[str, str], Counter]]:
        """fighter → (concept, value) → surface forms used across the set."""
        forms: dict[str, dict[tuple[str, str], Counter]] = defaultdict(lambda: defaultdict(Counter))
        for item in items:
            for cand in item.candidates:
                for term in vocab.find_terms(cand.text):
                    forms[cand.fighter][(term.concept, term.value)][term.text] += 1
        return forms

    # --- checks -------------------------------------------------------------------

    def _checks(self, caption: str, ev: Evidence, expected: set[str], forms: dict[tuple[str, str], Counter], *,
                trigger: str, class_word: str, leak_matters: bool, count, window: int,
                exact: bool) -> dict[str, tuple[float, str]]:
        text = (caption or "").strip()
        checks: dict[str, tuple[float, str]] = {}
        parts = [p.strip() for p in text.replace(".", ",").split(",") if p.strip()]
        words = vocab.normalise(text).split()
        hits = sum(1 for i in range(len(words)) if words[i:i + len(trigger.split())] == vocab.normalise(trigger).split())
        if not parts or not trigger:
            checks["trigger"] = (0.0, "✗ no trigger")
        elif vocab.normalise(parts[0].split()[0] if parts[0].split() else "") == vocab.normalise(trigger) and hits == 1:
            checks["trigger"] = (1.0, "✓ trigger first, once")
        elif hits == 0:
            checks["trigger"] = (0.0, f"✗ trigger '{trigger}' missing")
        else:
            checks["trigger"] = (0.4, f"✗ trigger {'not first' if hits == 1 else f'{hits} times'}")

        terms = _terms(text)
        informative = [p for p in parts if vocab.normalise(p) not in (vocab.normalise(trigger), "")
                       and not vocab.is_class_word(p, class_word) and not vocab.is_generic(p)]
        if not text:
            checks["specific"] = (0.0, "✗ empty")
        elif not terms and not any(not vocab.subject_features_in(p) for p in informative):
            checks["specific"] = (0.0, "✗ generic: says nothing beyond the class")
        else:
            checks["specific"] = (1.0, "")

        if leak_matters:
            leaked = vocab.subject_features_in(text)
            checks["no_leak"] = (0.0, f"✗ subject features ({', '.join(leaked)}) belong to the trigger") if leaked \
                else (1.0, "")

        if expected:
            covered = sorted(c for c in expected if terms.get(c) or (c == "colours" and terms.get("colours")))
            missing = sorted(expected - set(covered))
            share = len(covered) / len(expected)
            checks["context"] = (share, f"{'✓' if not missing else '✗'} context {len(covered)}/{len(expected)}"
                                        + (f" (missing {', '.join(missing)})" if missing else ""))

        checks["agrees"] = self._agreement(terms, ev)

        odd = sorted({t.text for ts in terms.values() for t in ts if t.text not in CANONICAL
                      or (len(forms.get((t.concept, t.value), {})) > 1
                          and forms[(t.concept, t.value)].most_common(1)[0][0] != t.text)})
        checks["vocabulary"] = (0.0, f"✗ non-standard words: {', '.join(odd)}") if odd else (1.0, "")

        tokens = count(text) if text else 0
        if tokens > window:
            checks["budget"] = (max(0.0, 1 - (tokens - window) / window), f"✗ {tokens} tokens > {window}"
                                + ("" if exact else " (approx.)"))
        else:
            checks["budget"] = (1.0, "")
        return checks

    def _agreement(self, terms: dict[str, list[vocab.Term]], ev: Evidence) -> tuple[float, str]:
        """Share of the caption's claims the evidence does not contradict, and what it does."""
        claims = [(t.concept, t.value) for ts in terms.values() for t in ts]
        if not claims:
            return 1.0, ""
        wrong: list[str] = []
        # with itself: "daylight" and "night" cannot both hold
        for i, a in enumerate(claims):
            for b in claims[i + 1:]:
                if vocab.conflicts(a, b) and a[0] not in ("colours",):
                    wrong.append(f"'{a[1]}' vs '{b[1]}'")
        vision = ev.vision
        said_colours = list(dict.fromkeys(v for c, v in claims if c == "colours"))
        colour_penalty = 0.0
        if vision and vision.subject_found and said_colours:
            seen = {c for c, share in vision.colour_shares.items() if share >= 0.03} | set(vision.colours)
            unseen = [c for c in said_colours if c not in seen]
            if unseen:
                # in proportion: one odd word among four colours of a pile is not a wrong caption
                colour_penalty = len(unseen) / len(said_colours)
                wrong_colours = f"colour {', '.join(repr(c) for c in unseen)} not seen " \
                                f"(saw {', '.join(vision.colours) or 'none'})"
            else:
                wrong_colours = ""
        if vision and vision.background:
            for concept, value in claims:
                if concept == "background" and _kind(value) != _kind(vision.background):
                    wrong.append(f"background '{value}' (looks {vision.background})")
        meta = ev.meta
        recorded: list[tuple[str, str]] = [(c, getattr(meta, c)) for c in ("time_of_day", "setting", "lighting")
                                           if getattr(meta, c)]
        if ev.flash:
            recorded.append(("lighting", "flash"))
        for claim in claims:
            for fact in recorded:
                if claim[0] in ("lighting", "time_of_day", "setting") and vocab.conflicts(claim, fact) \
                        and not (claim[0] == "lighting" and fact == ("lighting", "indoor light")
                                 and claim[1] == "warm indoor light"):
                    wrong.append(f"'{claim[1]}' but {fact[1]} recorded")
        if meta.framing:
            for concept, value in claims:
                if concept == "framing" and value in FRAMING_ORDER and \
                        abs(FRAMING_ORDER.index(value) - FRAMING_ORDER.index(meta.framing)) > 1:
                    wrong.append(f"'{value}' but shot from {meta.framing} distance")
        if colour_penalty:
            wrong.insert(0, wrong_colours)
        if not wrong:
            return 1.0, "✓ agrees with photo"
        wrong = list(dict.fromkeys(wrong))
        # A wrong word teaches the model something false: one halves the credit, and every
        # further one still counts (no floor, so two mistakes stay worse than one).
        penalty = colour_penalty + 0.5 * (len(wrong) - (1 if colour_penalty else 0))
        return 1 / (1 + 2 * penalty), "✗ " + "; ".join(wrong)


@hookimpl
def register_judges(register):
    register(RubricJudge())
