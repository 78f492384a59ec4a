"""The ``claude-samples`` sample judge: Claude looks at two LoRA candidates' samples beside
photos of the user's candy and says which shows it better (prompts/judge_samples.md).

For every pair of candidates it asks twice, once in each order: the held-out reference
photos, the first candidate's samples (each labelled with its prompt, held-out or novel),
the second's, then the rubric; Claude answers through the ``record_verdict`` tool. A verdict
that changes with the order is a tie (position bias, the caption fight's rule), and the flip
is counted. A pair whose request failed after the retries gets no vote — not a tie — and is
not cached, so the next run asks it again. A candidate's score is its win share over the
pairs it was judged in; one never judged is left out.

Verdicts are cached under the run (``cache/claude``) keyed by model, prompt and the hashes
of the image bytes sent, so a rerun asks nothing again; usage totals go to
``cache/claude/sample-judge-usage.json``. It is not a default judge (every pair is two paid
requests): name it in ``[train.pick] judges``.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clood_candy.fight.engine import resolve_orders
from clood_candy.fighters import SampleJudge
from clood_candy.hookspecs import hookimpl
from clood_candy.records import Comparison, PickImage, PickSheet, Score
from clood_candy_plugins import claude_common as cc
from clood_candy_plugins.captioners.claude import load_prompt
from clood_candy_plugins.judges.claude import ClaudeJudge, _options, parse_verdict, verdict_tool

PROMPT = "judge_samples.md"
SYSTEM = ("You judge the samples of image-generation LoRA checkpoints against photos of the subject they were "
          "trained on. You are fair to both candidates whatever their order, and always answer by calling the "
          "record_verdict tool once.")
VERDICT_TOOL = verdict_tool("Record which candidate's samples better show the user's candy, or a tie.", "candidate")
USAGE_FILE = "sample-judge-usage.json"  # apart from the caption judge's, so each bill reads on its own
REFERENCES = 4  # held-out photos shown: enough to see the candy's range of colours, few enough to stay cheap
MAX_SAMPLES = 12  # per candidate: the API takes at most 100 images a request, and each costs tokens
# Long edges sent. Colour, shape and gloss read well at the resolution SD1.5 samples at;
# the photos get a little more, since they are what the samples are held against.
REFERENCE_EDGE = 768
SAMPLE_EDGE = 512

Block = tuple[dict[str, Any], str]  # an image block and the sha256 of the bytes it carries


def parse_sample_verdict(message: Any) -> Comparison:
    """The caption judge's parser, stricter: a verdict without a winner is re-asked, since
    reading it as a tie would count a non-answer as a vote."""
    verdict = parse_verdict(message)
    if verdict.winner is None:
        raise cc.MalformedReply("the verdict names no winner")
    return verdict


@dataclass
class _Tally:
    wins: int = 0
    ties: int = 0
    flips: int = 0
    judged: int = 0
    unvoted: int = 0
    against: dict[str, str] = field(default_factory=dict)  # opponent → what was decided, and why

    def score(self) -> Score:
        value = (self.wins + 0.5 * self.ties) / self.judged
        reason = f"won {self.wins} of {self.judged} comparison{'s' * (self.judged != 1)}"
        if self.ties:
            reason += f", tied {self.ties}"
        if self.flips:
            reason += f" ({self.flips} flip{'s' * (self.flips != 1)} counted as a tie)"
        if self.unvoted:
            reason += f"; {self.unvoted} pair{'s' * (self.unvoted != 1)} not judged (the request failed)"
        evidence: dict[str, str | float] = {"wins": self.wins, "ties": self.ties, "flips": self.flips,
                                            "judged": self.judged, "unvoted": self.unvoted}
        evidence.update({f"vs {other}": line for other, line in self.against.items()})
        return Score(score=value, reason=reason, evidence=evidence)


class ClaudeSampleJudge(SampleJudge):
    name = "claude-samples"
    description = ("Claude vision compares two candidates' samples against the held-out photos, in both orders "
                   "(needs ANTHROPIC_API_KEY; two requests per pair of candidates).")

    def unavailable(self, ctx) -> str | None:
        return cc.unavailable_reason(ctx)

    def score_samples(self, sheet: PickSheet, ctx) -> dict[str, Score]:
        opts = _options(ctx)
        blocks: dict[tuple[str, int], Block | None] = {}

        def load(path: Path, edge: int) -> Block | None:
            """Each file is encoded once per run, however many pairs show it."""
            key = (str(path), edge)
            if key not in blocks:
                try:
                    blocks[key] = cc.image_block(path, min(edge, opts.max_edge))
                except Exception as exc:
                    ctx.log.warning("claude-samples: cannot show %s (%s: %s)", path, type(exc).__name__, exc)
                    blocks[key] = None
            return blocks[key]

        references: list[tuple[str, Block]] = []
        for path in _reference_photos(sheet):  # an unreadable photo gives its place to the next
            if len(references) < REFERENCES and (block := load(Path(path), REFERENCE_EDGE)) is not None:
                references.append((path, block))
        reference_no = {path: k for k, (path, _) in enumerate(references, 1)}
        shown = _shown_samples(sheet)
        sheets: dict[str, list[tuple[str, Block]]] = {}
        for cand in sheet.candidates:
            images = {(i.prompt, i.seed): i for i in sheet.of(cand.name)}
            found = []
            for n, key in enumerate(shown, 1):
                if key in images:
                    block = load(ctx.run.path(images[key].image), SAMPLE_EDGE)
                    if block is None:
                        break  # judged on fewer samples than its rival would be unfair: left out
                    found.append((_label(n, sheet, images[key], reference_no), block))
            else:  # every sample shown (the loop did not break)
                if found:
                    sheets[cand.name] = found

        template = load_prompt(PROMPT)
        rubric = template.substitute(trigger=sheet.trigger, class_word=sheet.class_word or "candy")
        pairs = list(itertools.combinations([c.name for c in sheet.candidates if c.name in sheets], 2))
        requests: list[cc.Request] = []
        asked: dict[str, tuple[str, str]] = {}
        for a, b in pairs:
            for first, second in ((a, b), (b, a)):
                asked[str(len(requests))] = (first, second)
                requests.append(_request(str(len(requests)), references, sheets[first], sheets[second], rubric))
        if not requests:
            return {}

        client = cc.ClaudeClient(opts, ctx.run.path("cache", cc.PLUGIN))
        with ctx.progress.task(f"claude judging samples ({opts.model})", len(requests)) as advance:
            outcomes = client.run(requests, parse_sample_verdict, advance)
        errors = [o.error or "no answer" for o in outcomes.values() if o.value is None]
        ClaudeJudge._record_usage(ctx, outcomes.values(), len(errors), USAGE_FILE)
        if len(errors) == len(requests):
            raise RuntimeError(f"claude-samples: every comparison failed ({errors[0]})")
        verdicts = {asked[rid]: outcome.value for rid, outcome in outcomes.items() if outcome.value is not None}
        return _scores(pairs, verdicts)


def _reference_photos(sheet: PickSheet) -> list[str]:
    """The held-out photos whose captions were sampled first (their samples can be held
    against them), then the other held-out photos."""
    wanted = [p.photo for p in sheet.prompts if p.kind == "held-out" and p.photo] + list(sheet.held_out)
    return list(dict.fromkeys(wanted))


def _shown_samples(sheet: PickSheet) -> list[tuple[int, int]]:
    """The (prompt, seed) cells shown for every candidate, the same for all so that sample
    N of one sheet and of the other differ only by the checkpoint. The first seed of every
    prompt comes before a second seed of any, so a cut at MAX_SAMPLES keeps every prompt."""
    order = {seed: k for k, seed in enumerate(sheet.seeds)}
    cells = {(i.prompt, i.seed) for i in sheet.images}
    return sorted(cells, key=lambda c: (order.get(c[1], len(order)), c[1], c[0]))[:MAX_SAMPLES]


def _label(n: int, sheet: PickSheet, image: PickImage, reference_no: dict[str, int]) -> str:
    prompt = sheet.prompts[image.prompt]
    label = f"Sample {n}: {prompt.kind} prompt \u201c{prompt.text}\u201d, seed {image.seed}"
    if prompt.kind == "held-out" and prompt.photo in reference_no:
        label += f" (the caption of reference photo {reference_no[prompt.photo]})"
    elif prompt.kind == "novel" and prompt.change:
        label += f" (new: {prompt.change})"
    return label


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _request(rid: str, references: list[tuple[str, Block]], first: list[tuple[str, Block]],
             second: list[tuple[str, Block]], rubric: str) -> cc.Request:
    if references:
        count = f"{len(references)} reference photo{'s' * (len(references) != 1)}"
        content = [_text(f"<reference_photos>\n{count} of the user's candy, which training never saw:")]
    else:
        content = [_text("<reference_photos>\n(No reference photo could be shown: judge the samples on the rest "
                         "of the rubric.)")]
    for k, (_, (block, _)) in enumerate(references, 1):
        content += [_text(f"Reference photo {k}"), block]
    content.append(_text("</reference_photos>"))
    for tag, samples in (("first", first), ("second", second)):
        content.append(_text(f"<{tag}_samples>\nThe {tag} candidate's samples:"))
        for label, (block, _) in samples:
            content += [_text(label), block]
        content.append(_text(f"</{tag}_samples>"))
    content.append(_text(rubric))
    # The client's cache key covers everything sent but the image bytes; these hashes, in
    # the order shown, stand for them (the same photos in another order are another question).
    digests = [digest for _, (_, digest) in references + first + second]
    return cc.Request(id=rid, image_hash=hashlib.sha256("\n".join(digests).encode()).hexdigest(), params={
        "system": SYSTEM, "tools": [VERDICT_TOOL], "messages": [{"role": "user", "content": content}]})


def _scores(pairs: list[tuple[str, str]], verdicts: dict[tuple[str, str], Comparison]) -> dict[str, Score]:
    tallies: dict[str, _Tally] = {}
    for a, b in pairs:
        ta, tb = tallies.setdefault(a, _Tally()), tallies.setdefault(b, _Tally())
        ab, ba = verdicts.get((a, b)), verdicts.get((b, a))
        if ab is None or ba is None:  # without both orders a flip cannot be seen: no vote
            ta.unvoted += 1
            tb.unvoted += 1
            continue
        # The caption fight's rule, so both fights read an order-dependent answer alike.
        outcome, flipped = resolve_orders(ab, ba)
        ta.judged += 1
        tb.judged += 1
        if outcome == "tie":
            ta.ties += 1
            tb.ties += 1
            ta.flips += int(flipped)
            tb.flips += int(flipped)
            line = f"{'flip, a tie' if flipped else 'tie'}: {ab.reason} / {ba.reason}"[:300]
            ta.against[b] = tb.against[a] = line
        else:
            win, lose = (a, b) if outcome == "a" else (b, a)
            tallies[win].wins += 1
            tallies[win].against[lose] = f"won: {ab.reason}"[:300]
            tallies[lose].against[win] = f"lost: {ab.reason}"[:300]
    return {cand: tally.score() for cand, tally in tallies.items() if tally.judged}


@hookimpl
def register_judges(register):
    register(ClaudeSampleJudge())
