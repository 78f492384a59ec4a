"""Stage 2: the caption catfight. Every captioner × strategy is a fighter; a weighted
panel of judges decides each photo; the winner's captions become the dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from clood_candy import edits, fsutil
from clood_candy.captions.strategy import apply_for_run
from clood_candy.captions.tokens import token_counter
from clood_candy.concepts import FILE as CONCEPTS, resolve, with_trigger
from clood_candy.context import StageContext
from clood_candy.errors import UserError
from clood_candy.fight.engine import Panel, run_fight
from clood_candy.fight.ray_captions import RemoteCaptioners, remote_captioners
from clood_candy.fighters import SampleJudge
from clood_candy.pipeline import prep_stage
from clood_candy.records import CaptionResult, Candidate, ConceptSet, FightItem, FightResult, Photo



def fighter_name(captioner: str, strategy: str, strategies: list[str]) -> str:
    return captioner if len(strategies) == 1 else f"{captioner}+{strategy}"


def _run_captioner(ctx: StageContext, name: str, photos: list[Photo],
                   remote: RemoteCaptioners) -> tuple[dict[str, CaptionResult] | None, str | None]:
    if name in remote:  # it ran on a Ray worker meanwhile
        results, why = remote.result(name)
    else:
        results, why = _caption_here(ctx, name, photos)
    if results is None:
        return None, why
    unasked = sorted(set(results) - {p.id for p in photos})
    if unasked:  # ignored, but a captioner that mixes up ids may have mislabelled the rest too
        what = f"{len(unasked)} photo id{'s' * (len(unasked) != 1)} it was not given (e.g. {unasked[0]!r}); ignored"
        ctx.log.warning("captioner %s returned captions for %s", name, what)
        ctx.progress.say(f"  {name} returned captions for {what}")
    # Every photo ends captioned or marked failed, never silently missing.
    return {p.id: results.get(p.id) or CaptionResult(error="the captioner returned nothing for this photo")
            for p in photos}, None


def _caption_here(ctx: StageContext, name: str, photos: list[Photo]) -> tuple[dict[str, CaptionResult] | None, str | None]:
    captioner = ctx.registry.get("captioner", name)
    why = captioner.unavailable(ctx)
    if why:
        return None, why
    try:
        return captioner.caption(photos, ctx), None
    except Exception as exc:  # a failing fighter forfeits its fight, the run goes on
        ctx.log.exception("captioner %s failed", name)
        return None, f"{type(exc).__name__}: {exc}"


def run(ctx: StageContext, *, force: bool = False) -> dict[str, Any]:
    """``force``: ask every judge afresh instead of reusing the verdicts on file."""
    settings = ctx.config.caption
    photos = prep_stage.load(ctx).photos
    out = ctx.run.path("caption")
    by_file = {p.id: Path(p.image).name for p in photos}

    forfeits: dict[str, str] = {}
    finals: dict[str, dict[str, str]] = {}
    strategy_notes: dict[str, Any] = {}
    with remote_captioners(ctx, settings.captioners) as remote, \
            ctx.progress.task("Captioning", total=len(settings.captioners)) as advance:
        remote.start(settings.captioners, photos)
        for name in settings.captioners:
            raw, why = _run_captioner(ctx, name, photos, remote)
            advance(note=name)
            fighters = [fighter_name(name, s, settings.strategies) for s in settings.strategies]
            if raw is None:
                for fighter in fighters:
                    forfeits[fighter] = why or "unavailable"
                ctx.progress.say(f"  {name} sits this fight out: {why}")
                continue
            fsutil.write_json(out / name / "captions.json", {by_file[i]: r.caption for i, r in raw.items()})
            fsutil.write_json(out / name / "results.json", {by_file[i]: r.model_dump(mode="json") for i, r in raw.items()})
            for strategy, fighter in zip(settings.strategies, fighters):
                ok = {i: r for i, r in raw.items() if r.caption or r.facts}
                result = apply_for_run(ok, photos, strategy, ctx)
                finals[fighter] = result.captions
                strategy_notes[fighter] = result.model_dump(mode="json", exclude={"captions"})
                fsutil.write_json(out / fighter / "training_captions.json",
                                  {by_file[i]: c for i, c in result.captions.items()})

    items = [FightItem(id=p.id, photo=p, candidates=[Candidate(fighter=f, text=c.get(p.id, "")) for f, c in finals.items()])
             for p in photos]
    panel = _panel(ctx)
    cache_path = out / "verdict_cache.json"
    cache = fsutil.read_json(cache_path) if cache_path.is_file() and not force else {}
    ctx.progress.say(f"Caption fight: {len(finals)} fighters × {len(photos)} photos, judges: {', '.join(panel.judges) or 'none'}")
    result = run_fight(items, panel, ctx, forfeits=forfeits, cache=cache, bootstrap=settings.bootstrap,
                       confidence=settings.confidence, seed=ctx.config.seed)
    fsutil.write_json(cache_path, cache)
    result.placements = remote.placements
    fsutil.write_json(out / "fight.json", result)
    fsutil.write_json(out / "strategy.json", strategy_notes)
    for failures in result.judge_failures.values():
        ctx.progress.say(f"  {failures.note}")
    ctx.progress.say(f"  {result.verdict}")

    written = _write_dataset(ctx, photos, finals, result)
    hand = _keep_hand_edits(ctx, photos)
    return {"winner": result.winner, "clear": result.clear, "fighters": result.fighters,
            "forfeits": result.forfeits, "dataset_images": written - hand["culled"] + hand["restored"],
            "hand_edits": hand}


def _keep_hand_edits(ctx: StageContext, photos: list[Photo]) -> dict[str, int]:
    """What the user changed in ``clood review`` outlives this stage: the dataset was just
    rewritten from the fight, so their captions and culls are laid over it again."""
    done = edits.apply_to_dataset(ctx.run.root, edits.load(ctx.run.root), photos)
    if any(done.values()):
        ctx.progress.say(f"  kept your hand edits ({edits.EDITS}): {done['captions']} caption(s), "
                         f"{done['culled']} photo(s) culled, {done['restored']} brought back, "
                         f"{done['cropped']} crop box(es) moved")
    return done


def _panel(ctx: StageContext) -> Panel:
    judges, problems = {}, {}
    for name, weight in ctx.config.caption.judges.items():
        judge = ctx.registry.get("judge", name)
        if isinstance(judge, SampleJudge):
            raise UserError(f"judge '{name}' scores LoRA samples, not captions: name it in [train.pick] judges")
        why = judge.unavailable(ctx)
        if why:
            problems[name] = why
            ctx.progress.say(f"  judge {name} sits out: {why}")
        else:
            judges[name] = (judge, weight)
    return Panel(judges=judges, problems=problems)


def _concepts(ctx: StageContext, photos: list[Photo]) -> ConceptSet:
    """Which photos are which concept (brand), said and kept in dataset/concepts.json."""
    if ctx.config.concepts_from == "none" and not ctx.config.concepts:
        return ConceptSet()
    count, _, exact = token_counter(ctx)
    found = resolve(ctx.config, photos, count if exact else None)
    for c in found.concepts:
        ctx.progress.say(f"  concept {c.name}: '{ctx.config.trigger} {c.trigger}', {len(c.photos)} photos × "
                         f"{c.repeats} repeats = {c.share:.0%} of training")
    if found.unassigned:
        ctx.progress.say(f"  {len(found.unassigned)} photos in no concept: '{ctx.config.trigger}' only")
    for warning in found.warnings:
        ctx.log.warning("%s", warning)
        ctx.progress.say(f"  Warning: {warning}", style="yellow")
    return found


def _write_dataset(ctx: StageContext, photos: list[Photo], finals: dict[str, dict[str, str]], fight: FightResult) -> int:
    """The winner's captions (or, with ``merge``, the best caption per photo) next to
    their images, plus ``metadata.jsonl`` for HF imagefolder readers."""
    dataset = ctx.run.path("dataset")
    if dataset.exists():
        shutil.rmtree(dataset)
    dataset.mkdir(parents=True)
    concepts = _concepts(ctx, photos)
    if concepts.concepts:
        fsutil.write_json(dataset / CONCEPTS, concepts)
    lines = []
    for photo in photos:
        chosen = fight.per_item_winners.get(photo.id) if ctx.config.caption.merge else fight.winner
        caption = finals.get(chosen or "", {}).get(photo.id)
        if not caption:  # the winner had nothing for this photo: take the photo's own best
            caption = finals.get(fight.per_item_winners.get(photo.id, ""), {}).get(photo.id)
        if not caption:
            continue
        concept = concepts.of(photo.id)
        row = {"file_name": Path(photo.image).name, "id": photo.id, "source": photo.source}
        if concept is not None:
            caption = with_trigger(caption, ctx.config.trigger, concept.trigger, ctx.config.class_word,
                                   concept.class_word)
            row["concept"] = concept.trigger
        image = row["file_name"]
        shutil.copyfile(ctx.run.path(photo.image), dataset / image)
        fsutil.write_text(dataset / f"{Path(image).stem}.txt", caption + "\n")
        lines.append(json.dumps({**row, "text": caption}))
    fsutil.write_text(dataset / "metadata.jsonl", "\n".join(lines) + "\n")
    return len(lines)
