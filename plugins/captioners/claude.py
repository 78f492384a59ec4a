"""The ``claude`` captioner: Claude vision writes a training caption in the asked style
for the LoRA type and fills in the photo's facts, through a tool call (structured
output parsed into :class:`PhotoFacts`, never scraped from prose)."""

from __future__ import annotations

from importlib import resources
from string import Template
from typing import Any

from clood_candy.captions import vocab
from clood_candy.captions.strategy import resolve_style
from clood_candy.fighters import Captioner
from clood_candy.hookspecs import hookimpl
from clood_candy.records import CaptionResult, Photo, PhotoFacts
from clood_candy_plugins import claude_common as cc

TOOL = "record_caption"
SYSTEM = ("You caption photos for training image-generation LoRAs. You look carefully, say only what "
          "you can see, and always answer by calling the record_caption tool exactly once.")

# Descriptions steer the facts towards the shared vocabulary (clood_candy.captions.vocab).
FACT_HINTS = {
    "subject": "the class word as you see it, e.g. 'jellybean', 'candy'",
    "colours": "plain lower-case colour words of the subject(s), e.g. ['red', 'yellow']",
    "speckled": "true when the subject is speckled or spotted",
    "count": "how many subjects are visible (your best count)",
    "arrangement": "how the subjects lie",
    "background": "what they lie on or in front of",
    "lighting": "the kind of light",
    "framing": "how close the shot is",
    "view": "the camera angle",
    "brand": "only when a brand is legible or unmistakable",
    "time_of_day": "day or night, only when it can be told",
    "setting": "indoors or outdoors, only when it can be told",
    "extra": "anything else worth saying, as short phrases",
}


def caption_tool() -> dict[str, Any]:
    """The tool whose input mirrors PhotoFacts plus the caption."""
    facts = PhotoFacts.model_json_schema()["properties"]
    properties: dict[str, Any] = {"caption": {"type": "string", "description": "the training caption, as instructed"}}
    for name, schema in facts.items():
        schema = {k: v for k, v in schema.items() if k not in ("title", "default")}
        canonical = getattr(vocab, "SYNONYMS", {}).get(name)
        hint = f"prefer one of: {', '.join(canonical)}" if canonical and name not in ("speckled", "extra") else ""
        properties[name] = {**schema, "description": "; ".join(filter(None, [FACT_HINTS.get(name, ""), hint]))}
    return {"name": TOOL, "description": "Record the caption and the facts you saw in the photo.",
            "input_schema": cc.tool_schema(properties, ["caption", "subject", "colours"])}


def template_style(ctx) -> str:
    """tags or natural: the run's caption style (``auto`` follows the base model, as the
    strategy layer decides it); hybrid captions start from the natural template."""
    style = resolve_style(ctx.config.caption.style, ctx.config.base, ctx.config.family)
    return "tags" if style == "tags" else "natural"


def load_prompt(name: str) -> Template:
    return Template(resources.files("clood_candy_prompts").joinpath(name).read_text(encoding="utf-8"))


def photo_context(photo: Photo) -> str:
    lines = []
    if photo.folders:
        lines.append("The photo's folder names (they may name the subject, a colour or a flavour; trust the photo "
                     f"over them): {' / '.join(photo.folders)}")
    return "\n".join(lines)


def parse_caption(message: Any) -> tuple[str, PhotoFacts, list[str]]:
    data = dict(cc.tool_input(message, TOOL))
    caption = data.pop("caption", None)
    if not isinstance(caption, str) or not caption.strip():
        raise cc.MalformedReply("the tool call has no caption")
    ignored = sorted(set(data) - set(PhotoFacts.model_fields))
    facts = PhotoFacts.model_validate({k: v for k, v in data.items() if k in PhotoFacts.model_fields})
    # Facts are plain lower-case words (records.PhotoFacts).
    lowered = {name: (value.strip().lower() if isinstance(value, str) else
                      [v.strip().lower() for v in value] if isinstance(value, list) else value)
               for name, value in facts.model_dump().items()}
    return " ".join(caption.split()), PhotoFacts.model_validate(lowered), ignored


class ClaudeCaptioner(Captioner):
    name = "claude"
    description = "Claude vision: a caption for the LoRA type and style, plus structured facts (needs ANTHROPIC_API_KEY)."

    def unavailable(self, ctx) -> str | None:
        return cc.unavailable_reason(ctx)

    def caption(self, photos: list[Photo], ctx) -> dict[str, CaptionResult]:
        opts = cc.load_options(ctx)
        style = template_style(ctx)
        lora_type = ctx.config.caption.lora_type
        prompt_name = f"caption_{lora_type}_{style}.md"
        template = load_prompt(prompt_name)
        tool = caption_tool()
        results: dict[str, CaptionResult] = {}
        requests: list[cc.Request] = []
        for photo in photos:
            try:
                block, digest = cc.image_block(ctx.run.path(photo.image), opts.max_edge)
            except Exception as exc:  # unreadable image: this photo fails, the rest go on
                results[photo.id] = CaptionResult(error=f"cannot read image {photo.image}: {type(exc).__name__}: {exc}"[:300])
                continue
            text = template.substitute(trigger=ctx.config.trigger, class_word=ctx.config.class_word,
                                       context=photo_context(photo)).strip()
            requests.append(cc.Request(id=photo.id, image_hash=digest, params={
                "system": SYSTEM, "tools": [tool],
                "messages": [{"role": "user", "content": [block, {"type": "text", "text": text}]}]}))

        client = cc.ClaudeClient(opts, ctx.run.path("cache", cc.PLUGIN))
        use_batch = opts.batch or len(requests) > opts.batch_threshold
        with ctx.progress.task(f"claude captions ({opts.model}{', batch' if use_batch else ''})", len(requests)) as advance:
            outcomes = (client.run_batch if use_batch else client.run)(requests, parse_caption, advance)

        details = {"model": opts.model, "prompt": prompt_name, "style": style}
        for request in requests:
            outcome = outcomes.get(request.id)
            if outcome is None:  # cannot happen by construction; never lose a photo silently
                results[request.id] = CaptionResult(error="no answer recorded")
            elif outcome.error is not None or outcome.value is None:
                results[request.id] = CaptionResult(error=outcome.error or "no answer", usage=outcome.usage,
                                                    details=details)
            else:
                caption, facts, ignored = outcome.value
                extra = {"ignored_fields": ignored} if ignored else {}
                results[request.id] = CaptionResult(caption=caption, facts=facts, usage=outcome.usage,
                                                    details={**details, **extra})
        failed = sum(1 for r in results.values() if r.error)
        if failed:
            first = next(r.error for r in results.values() if r.error)
            ctx.log.warning("claude: %d of %d photos failed (first: %s)", failed, len(photos), first)
        return results


@hookimpl
def register_captioners(register):
    register(ClaudeCaptioner())
