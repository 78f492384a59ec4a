"""Stage 3: training configs race (successive halving on validation loss), then the
winner trains to full length and its LoRA is saved, verified and named in run.json."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from clood_candy import edits, fsutil
from clood_candy.concepts import read as read_concepts
from clood_candy.context import StageContext
from clood_candy.errors import UserError
from clood_candy.pick.fight import pick_lora, record, ship
from clood_candy.pipeline.config_fight import fight_configs, train_winner
from clood_candy.pipeline.planning import planned_recipes
from clood_candy.records import Photo, PrepReport, TrainItem, TrainSet


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
    concepts = read_concepts(dataset)
    for item, row in zip(items, rows):
        item.concept = row.get("concept")
    val = _held_out(items, ctx.config.seed, ctx.config.train.fight.validation_split, bool(concepts.concepts))
    base = ctx.base()
    prep = ctx.config.prep
    if prep.crop == "none" and not prep.buckets:
        ctx.log.warning('prep.crop = "none" without prep.buckets: the whole frames are prepared, but training '
                        "sees each one's centre square; set prep.buckets = true to train on whole frames")
    repeats = {c.trigger: c.repeats for c in concepts.concepts}
    # A concept's repeats are copies in the epoch, as kohya's num_repeats (the latents are cached once).
    train = [item for i, item in enumerate(items) if i not in val for _ in range(repeats.get(item.concept, 1))]
    return TrainSet(train=train,
                    validation=[items[i] for i in val], trigger=ctx.config.trigger,
                    class_word=ctx.config.class_word,
                    resolution=prep.resolution or base.resolution, buckets=prep.buckets)


def _held_out(items: list[TrainItem], seed: int, split: float, by_concept: bool) -> list[int]:
    """A fixed, seeded hold-out: the same photos judge every config and every checkpoint.
    With concepts, each concept gives its share, so every brand is judged."""
    groups: dict[str | None, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(item.concept if by_concept else None, []).append(i)
    held: set[int] = set()
    for members in groups.values():
        order = list(members)
        random.Random(seed).shuffle(order)
        wanted = round(len(members) * split) if by_concept else max(1, round(len(members) * split))
        held.update(order[:min(wanted, len(members) - 1)])
    if not held:  # small concepts each rounded to none: still hold one photo out
        order = list(range(len(items)))
        random.Random(seed).shuffle(order)
        held.add(order[0])
    return sorted(held)


def _prepared_photos(ctx: StageContext) -> dict[str, Photo]:
    """The prep report's kept photos by id (a dataset brought without one has none), as the
    user left them in clood review: a photo brought back or a crop box moved trains with its
    own crop box and original size (SDXL's crop conditioning reads them)."""
    path = ctx.run.path("prep", "report.json")
    if not path.is_file():
        return {}
    photos = PrepReport.model_validate(fsutil.read_json(path)).photos
    return {p.id: p for p in edits.edited_photos(edits.load(ctx.run.root), photos)}


def _item(image: Path, caption: str, photo: Photo | None) -> TrainItem:
    if photo is None or photo.original_size is None:
        return TrainItem(image=str(image), caption=caption)
    return TrainItem(image=str(image), caption=caption, original_size=photo.original_size, crop_box=photo.crop_box)


def run(ctx: StageContext) -> dict[str, Any]:
    data = load_trainset(ctx)
    # The plan's choices for this many photos on this device, where the user set none.
    _, configs, budgets = planned_recipes(ctx, data)
    fight = None
    if len(configs) > 1:
        fight = fight_configs(ctx, data, configs, budgets)
        winner = next(c for c in configs if c.name == fight.winner)
        ctx.progress.say(f"Config fight winner: {winner.name}")
    else:
        winner = configs[0]

    final = train_winner(ctx, data, winner)
    fsutil.write_json(ctx.run.path("train", "outcome.json"), final)
    if final.error or not final.lora:
        raise RuntimeError(f"training {winner.name} did not produce a verified LoRA: {final.error}")
    # Which of its saved LoRAs ships: the sample judges' panel, not the last step by default.
    picked = pick_lora(ctx, data, final)
    record(ctx, fight, winner, picked)
    lora = ship(ctx, picked, final)
    return {"winner": winner.name, "lora": lora, "steps": final.steps_done,
            "picked": picked.winner if picked else "final",
            "final_val_loss": final.final_val_loss, "verification": final.verification}
