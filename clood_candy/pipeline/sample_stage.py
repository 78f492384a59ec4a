"""Stage 4: sample images from the trained LoRA: prompts × LoRA weights (0 = the base
alone), and checkpoints × weights when training saved several."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from clood_candy import fsutil
from clood_candy.concepts import read as read_concepts
from clood_candy.context import StageContext
from clood_candy.errors import UserError
from clood_candy.records import TrainOutcome


def default_prompts(ctx: StageContext, limit: int = 2) -> list[str]:
    """The trigger alone, then the set's own most typical captions: the user sees the
    LoRA on the kind of scene he photographed."""
    prompts = [f"{ctx.config.trigger}, {ctx.config.class_word}"]
    found = read_concepts(ctx.run.path("dataset")).concepts
    if found:  # a row per concept's trigger: does each brand answer to its own word?
        prompts += [f"{ctx.config.trigger} {c.trigger}, {c.class_word}" for c in found]
        limit = 1
    first = len(prompts)
    meta = ctx.run.path("dataset", "metadata.jsonl")
    if meta.is_file():
        captions = [json.loads(line)["text"] for line in meta.read_text(encoding="utf-8").splitlines() if line.strip()]
        words = Counter(w.strip() for c in captions for w in c.split(",") if w.strip())
        typical = sorted(captions, key=lambda c: -sum(words[w.strip()] for w in c.split(",")) / max(1, len(c.split(","))))
        for caption in typical:
            if caption not in prompts and len(prompts) < limit + first:
                prompts.append(caption)
    return prompts


def loras(ctx: StageContext, checkpoint: str | None = None) -> dict[str, Path]:
    """'final' plus every saved checkpoint of the winning config, oldest first."""
    outcome_path = ctx.run.path("train", "outcome.json")
    if not outcome_path.is_file():
        raise UserError(f"{ctx.run.root} has no trained LoRA yet: run the train stage first")
    outcome = TrainOutcome.model_validate(fsutil.read_json(outcome_path))
    # Checkpoints are saved as .../step-N/lora.safetensors: the folder says which one.
    found = {(Path(c).parent.name if Path(c).stem == "lora" else Path(c).stem): ctx.run.path(c)
             for c in outcome.checkpoints}
    found["final"] = ctx.run.path(ctx.run.state.outputs.get("lora") or outcome.lora or "")
    if checkpoint:
        if checkpoint not in found:
            raise UserError(f"no checkpoint '{checkpoint}' (have: {', '.join(found)})")
        return {checkpoint: found[checkpoint]}
    return found


def run(ctx: StageContext, prompts: list[str] | None = None, weights: list[float] | None = None,
        checkpoint: str | None = None, out_name: str = "samples") -> dict[str, Any]:
    settings = ctx.config.sample
    sampler = ctx.registry.get("sampler", settings.sampler)
    chosen = prompts or (settings.prompts + default_prompts(ctx))
    result = sampler.sample(ctx.family(), ctx.base(), loras(ctx, checkpoint), chosen, ctx.run.path(out_name), ctx,
                            weights=weights or settings.weights, seeds=settings.seeds,
                            negative_prompt=settings.negative_prompt)
    fsutil.write_json(ctx.run.path(out_name, "samples.json"), result)
    return {"images": len(result.images), "grids": result.grids}
