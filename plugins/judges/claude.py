"""The ``claude`` judge: shows Claude the photo and two candidate captions with a rubric
(prompts/judge_pairwise.md) and records its verdict through a tool call. The engine asks
both orders itself; this judge answers exactly what it is asked.

Verdicts are cached on disk under the run (``cache/claude``), keyed by model, prompt and
image, so re-running a fight costs nothing; usage totals go to ``cache/claude/judge-usage.json``.
A pair whose request failed comes back as ``Comparison(error=...)``: no verdict, not a tie.
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

from clood_candy import fsutil
from clood_candy.fighters import Judge
from clood_candy.hookspecs import hookimpl
from clood_candy.records import Candidate, Comparison, FightItem
from clood_candy_plugins import claude_common as cc
from clood_candy_plugins.captioners.claude import load_prompt, template_style

TOOL = "record_verdict"
PROMPT = "judge_pairwise.md"
SYSTEM = ("You judge training captions for image-generation LoRAs against a rubric. You are fair to "
          "both candidates whatever their order, and always answer by calling the record_verdict tool once.")
def verdict_tool(description: str, thing: str) -> dict:
    """The record_verdict tool: which of two ``thing``s is better (first, second, tie), and why."""
    return {
        "name": TOOL,
        "description": description,
        "input_schema": cc.tool_schema({
            "winner": {"type": "string", "enum": ["first", "second", "tie"],
                       "description": f"the better {thing}: first, second, or tie"},
            "reason": {"type": "string", "description": "one short sentence naming the deciding point"},
        }, ["winner", "reason"]),
    }


VERDICT_TOOL = verdict_tool("Record which caption is better for training, or a tie.", "caption")
_usage_lock = threading.Lock()


def parse_verdict(message: Any) -> Comparison:
    data = cc.tool_input(message, TOOL)
    reason = data.get("reason", "")
    return Comparison(winner=data.get("winner"), reason=" ".join(str(reason).split())[:300])


class ClaudeJudge(Judge):
    name = "claude"
    description = "Claude vision compares two captions against the photo with a rubric (needs ANTHROPIC_API_KEY)."
    pairwise = True

    def unavailable(self, ctx) -> str | None:
        return cc.unavailable_reason(ctx)

    def identity(self, ctx) -> dict[str, Any]:
        """Plus the model that answers and the prompt it is shown (all but the captions)."""
        found = super().identity(ctx)
        if ctx is not None:
            prompt = json.dumps([load_prompt(PROMPT).template, SYSTEM, VERDICT_TOOL], sort_keys=True)
            found.update(model=_options(ctx).model, style=template_style(ctx),
                         prompt=hashlib.sha256(prompt.encode()).hexdigest()[:16])
        return found

    def compare(self, pairs: list[tuple[FightItem, Candidate, Candidate]], ctx) -> list[Comparison]:
        opts = _options(ctx)
        template = load_prompt(PROMPT)
        style_words = "comma-separated tags" if template_style(ctx) == "tags" else "plain natural sentences"
        images: dict[str, tuple[dict[str, Any], str] | str] = {}  # photo image → (block, hash) or error
        requests: list[cc.Request] = []
        for index, (item, first, second) in enumerate(pairs):
            content: list[dict[str, Any]] = []
            digest = ""
            if item.photo is not None:
                if item.photo.image not in images:
                    try:
                        images[item.photo.image] = cc.image_block(ctx.run.path(item.photo.image), opts.max_edge)
                    except Exception as exc:
                        images[item.photo.image] = f"{type(exc).__name__}: {exc}"
                loaded = images[item.photo.image]
                if isinstance(loaded, tuple):
                    content.append(loaded[0])
                    digest = loaded[1]
            text = template.substitute(lora_type=ctx.config.caption.lora_type, trigger=ctx.config.trigger,
                                       class_word=ctx.config.class_word, style=style_words,
                                       first=first.text, second=second.text)
            if not digest:
                text = "(The photo could not be shown: judge the captions on the rubric alone.)\n\n" + text
            content.append({"type": "text", "text": text})
            requests.append(cc.Request(id=str(index), image_hash=digest, params={
                "system": SYSTEM, "tools": [VERDICT_TOOL], "messages": [{"role": "user", "content": content}]}))

        client = cc.ClaudeClient(opts, ctx.run.path("cache", cc.PLUGIN))
        with ctx.progress.task(f"claude judging ({opts.model})", len(requests)) as advance:
            outcomes = client.run(requests, parse_verdict, advance)

        verdicts: list[Comparison] = []
        errors: list[str] = []
        for request in requests:
            outcome = outcomes[request.id]
            if outcome.value is not None:
                verdicts.append(outcome.value)
            else:
                errors.append(outcome.error or "no answer")
                verdicts.append(Comparison(error=errors[-1][:300]))  # the engine counts and reports it
        self._record_usage(ctx, outcomes.values(), len(errors))
        if requests and len(errors) == len(requests):
            raise RuntimeError(f"claude judge: every comparison failed ({errors[0]})")
        return verdicts

    @staticmethod
    def _record_usage(ctx, outcomes, failures: int, file: str = "judge-usage.json") -> None:
        """Adds these requests' tokens, cost and failures to the run's totals in ``file``
        (the sample judge keeps its own file, so each judge's bill reads on its own)."""
        path = ctx.run.path("cache", cc.PLUGIN, file)
        with _usage_lock:
            totals: dict[str, float] = fsutil.read_json(path) if path.is_file() else {}
            for outcome in outcomes:
                totals["comparisons"] = totals.get("comparisons", 0) + 1
                for key, value in outcome.usage.items():
                    totals[key] = round(totals.get(key, 0) + value, 6)
            totals["failures"] = totals.get("failures", 0) + failures
            fsutil.write_json(path, totals)


def _options(ctx) -> cc.ClaudeOptions:
    opts = cc.load_options(ctx)
    return opts.model_copy(update={"model": opts.judge_model}) if opts.judge_model else opts


@hookimpl
def register_judges(register):
    register(ClaudeJudge())
