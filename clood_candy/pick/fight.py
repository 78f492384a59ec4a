"""The pick fight (issue 15): the winning config's saved LoRAs are sampled on held-out and
novel prompts, the sample judges score them, and the panel's choice becomes
``train/<trigger>.safetensors``. Validation loss alone falls while a LoRA starts to copy
its photos, and says nothing about whether the trigger still obeys a new prompt."""

from __future__ import annotations

from clood_candy import fsutil
from clood_candy.context import StageContext
from clood_candy.errors import UserError
from clood_candy.pick.panel import decide, judge_sheet, sample_judges
from clood_candy.pick.sheet import candidates, make_sheet
from clood_candy.pick.votes import add_vote, load_votes
from clood_candy.records import ConfigFightResult, PickResult, TrainConfig, TrainOutcome, TrainSet

USER = "user"


def pick_lora(ctx: StageContext, data: TrainSet, outcome: TrainOutcome) -> PickResult | None:
    """None when ``[train.pick] enabled = false`` or training saved one LoRA: the last step ships."""
    settings = ctx.config.train.pick
    if not settings.enabled:
        return None
    sample_judges(ctx, settings.judges)  # an unknown or caption judge is named before any sampling
    found = candidates(ctx, outcome, settings)
    if len(found) < 2:  # nothing to choose between: no sampling
        ctx.progress.say("Pick: training saved one LoRA, so it ships (more checkpoints: a lower checkpoint_every)")
        return None
    sheet = make_sheet(ctx, data, outcome, settings, found)
    for line in sheet.failures:
        ctx.progress.say(f"  sample failed: {line}")
    result = judge_sheet(ctx, sheet, settings.judges, load_votes(ctx.run.root))
    for name, why in result.sat_out.items():
        ctx.progress.say(f"  sample judge {name} sits out: {why}")
    ctx.progress.say(f"Pick: {result.why}")
    for cand, lines in result.flags.items():
        for line in lines:
            ctx.progress.say(f"  {cand}: {line}")
    return result


def ship(ctx: StageContext, result: PickResult | None, outcome: TrainOutcome) -> str:
    """Copy the chosen file to train/<trigger>.safetensors; return its run-relative path."""
    chosen = outcome.lora
    if result is not None:
        chosen = next(c.lora for c in result.sheet.candidates if c.name == result.winner)
    lora = ctx.run.path("train", f"{ctx.config.trigger}.safetensors")
    fsutil.write_bytes(lora, ctx.run.path(chosen).read_bytes())  # atomic: never half a LoRA in its place
    ctx.run.state.outputs["lora"] = ctx.run.rel(lora)
    ctx.run.state.outputs["picked"] = result.winner if result is not None else "final"
    ctx.run.save()
    return ctx.run.rel(lora)


def record(ctx: StageContext, fight: ConfigFightResult | None, winner: TrainConfig,
           result: PickResult | None) -> ConfigFightResult:
    """train/fight.json with the pick beside the config fight (a run of one config has only the pick)."""
    fight = fight or ConfigFightResult(configs=[winner], rounds=[], winner=winner.name)
    fight.pick = result
    fsutil.write_json(ctx.run.path("train", "fight.json"), fight)
    return fight


def vote(ctx: StageContext, candidate: str, why: str = "") -> PickResult:
    """``clood pick``: record the person's vote, decide again with it, ship the new choice.
    The other judges' scores are kept: only the user judge is asked again."""
    path = ctx.run.path("train", "fight.json")
    if not path.is_file():
        raise UserError(f"{ctx.run.root} has no pick fight yet: run the train stage first")
    fight = ConfigFightResult.model_validate(fsutil.read_json(path))
    if fight.pick is None:
        raise UserError(f"{ctx.run.root} shipped its last step without a pick fight ([train.pick] enabled = false, "
                        "or training saved only one LoRA)")
    old = fight.pick
    names = [c.name for c in old.sheet.candidates]
    if candidate not in names:
        raise UserError(f"no candidate '{candidate}' (have: {', '.join(names)})")
    wanted = dict(old.judges)
    if USER not in wanted:
        raise UserError(f"the user judge is not on this run's panel ([train.pick] judges: {', '.join(wanted)})")
    ctx.registry.get("judge", USER)  # before the vote is kept: a run without the user judge keeps nothing
    add_vote(ctx.run.root, candidate, why)
    votes = load_votes(ctx.run.root)
    judges, _ = sample_judges(ctx, {USER: wanted[USER]})
    scores = {k: v for k, v in old.scores.items() if k != USER}
    sat_out = {k: v for k, v in old.sat_out.items() if k != USER}
    if USER in judges:
        scores[USER] = judges[USER][0].score_samples(old.sheet, ctx)
    result = decide(old.sheet, wanted, scores, sat_out, old.flags, votes)
    result.seconds = old.seconds
    outcome = TrainOutcome.model_validate(fsutil.read_json(ctx.run.path("train", "outcome.json")))
    ship(ctx, result, outcome)
    fight.pick = result
    fsutil.write_json(path, fight)
    return result
