"""Stage 3: training configs race (successive halving on validation loss), then the
winner trains to full length and its LoRA is saved, verified and named in run.json."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

from clood_candy import fsutil
from clood_candy.context import StageContext
from clood_candy.errors import UserError
from clood_candy.fight.halving import AllConfigsFailed, successive_halving
from clood_candy.pipeline.planning import planned_recipes
from clood_candy.records import ConfigFightResult, Photo, PrepReport, TrainConfig, TrainItem, TrainOutcome, TrainSet


def load_trainset(ctx: StageContext) -> TrainSet:
    dataset = ctx.run.path("dataset")
    meta = dataset / "metadata.jsonl"
    if not meta.is_file():
        raise UserError(f"{ctx.run.root} has no dataset yet: run the caption stage first")
    rows = [json.loads(line) for line in meta.read_text(encoding="utf-8").splitlines() if line.strip()]
    photos = _prepared_photos(ctx)
    items = [_item(dataset / r["file_name"], r["text"], photos.get(r.get("id", ""))) for r in rows]
    if len(items) < 2:
        raise UserError(f"the dataset has {len(items)} captioned photo(s); training needs at least 2")
    # A fixed, seeded hold-out: the same photos judge every config and every checkpoint.
    order = list(range(len(items)))
    random.Random(ctx.config.seed).shuffle(order)
    n_val = max(1, round(len(items) * ctx.config.train.fight.validation_split))
    n_val = min(n_val, len(items) - 1)
    val = sorted(order[:n_val])
    base = ctx.base()
    prep = ctx.config.prep
    if prep.crop == "none" and not prep.buckets:
        ctx.log.warning('prep.crop = "none" without prep.buckets: the whole frames are prepared, but training '
                        "sees each one's centre square; set prep.buckets = true to train on whole frames")
    return TrainSet(train=[items[i] for i in range(len(items)) if i not in val],
                    validation=[items[i] for i in val], trigger=ctx.config.trigger,
                    class_word=ctx.config.class_word,
                    resolution=prep.resolution or base.resolution, buckets=prep.buckets)


def _prepared_photos(ctx: StageContext) -> dict[str, Photo]:
    """The prep report's kept photos by id (a dataset brought without one has none)."""
    path = ctx.run.path("prep", "report.json")
    if not path.is_file():
        return {}
    return {p.id: p for p in PrepReport.model_validate(fsutil.read_json(path)).photos}


def _item(image: Path, caption: str, photo: Photo | None) -> TrainItem:
    if photo is None or photo.original_size is None:
        return TrainItem(image=str(image), caption=caption)
    return TrainItem(image=str(image), caption=caption, original_size=photo.original_size, crop_box=photo.crop_box)


def step_counter(advance):
    """on_step reports absolute steps; a continued run starts past 0, so move the bar by the gap."""
    last = 0

    def on_step(step: int, loss: float) -> None:
        nonlocal last
        advance(step - last, note=f"loss {loss:.4f}")
        last = step

    return on_step


def run(ctx: StageContext) -> dict[str, Any]:
    data = load_trainset(ctx)
    family, base = ctx.family(), ctx.base()
    fight_dir = ctx.run.path("train", "fight")
    # The plan's choices for this many photos on this device, where the user set none.
    _, configs, budgets = planned_recipes(ctx, data)
    outcomes: dict[str, TrainOutcome] = {}

    def train_to(config: TrainConfig, steps: int) -> float:
        with ctx.progress.task(f"Config fight: {config.name} → {steps} steps", total=steps) as advance:
            outcome = family.train(base, data, config, fight_dir / config.name, ctx, max_steps=steps,
                                   on_step=step_counter(advance))
        outcomes[config.name] = outcome
        if outcome.error:
            raise RuntimeError(outcome.error)
        return outcome.final_val_loss if outcome.final_val_loss is not None else float("inf")

    if len(configs) > 1:
        try:
            fight = successive_halving(configs, budgets, ctx.config.train.fight.reduction,
                                       train_to, on_round=lambda r: ctx.progress.say(
                                           f"  round at {r.budget} steps: " + ", ".join(
                                               f"{n} {s:.4f}" if s is not None else f"{n} failed"
                                               for n, s in r.scores.items())
                                           + (f" → {', '.join(r.survivors)} go on" if r.survivors else " → none left")))
        except AllConfigsFailed as failed:  # the record says why each failed; the stage fails with it
            fsutil.write_json(ctx.run.path("train", "fight.json"),
                              ConfigFightResult(configs=configs, rounds=failed.rounds, winner=None,
                                                failures=failed.failures))
            raise
        fsutil.write_json(ctx.run.path("train", "fight.json"), fight)
        winner = next(c for c in configs if c.name == fight.winner)
        ctx.progress.say(f"Config fight winner: {winner.name}")
    else:
        winner = configs[0]

    with ctx.progress.task(f"Training {winner.name}", total=winner.steps) as advance:
        final = family.train(base, data, winner, fight_dir / winner.name, ctx, on_step=step_counter(advance))
    fsutil.write_json(ctx.run.path("train", "outcome.json"), final)
    if final.error or not final.lora:
        raise RuntimeError(f"training {winner.name} did not produce a verified LoRA: {final.error}")
    lora = ctx.run.path("train", f"{ctx.config.trigger}.safetensors")
    shutil.copyfile(ctx.run.path(final.lora), lora)
    ctx.run.state.outputs["lora"] = ctx.run.rel(lora)
    ctx.run.save()
    return {"winner": winner.name, "lora": ctx.run.rel(lora), "steps": final.steps_done,
            "final_val_loss": final.final_val_loss, "verification": final.verification}
