"""The train stage's config fight: successive halving over the configs, each round trained
by the executor ``[fight]`` names (local: one config after another in this process; ray:
all at once on a Ray instance or cluster), recorded in RUN/train/fight.json. From the second
round on, the pick's sample judges decide who goes on ([train.fight] judge = "panel"):
validation loss differs by noise between sensible recipes, and favours whichever learns
fastest over a short round, not whichever draws the subject and obeys a new prompt."""

from __future__ import annotations

from clood_candy import fsutil
from clood_candy.context import StageContext
from clood_candy.fight.halving import AllConfigsFailed, RankRound, Trained, TrainRound, one_after_another
from clood_candy.fight.halving import successive_halving
from clood_candy.pick.fight import USER
from clood_candy.pick.panel import judge_sheet, sample_judges, standing
from clood_candy.pick.sheet import make_sheet, slug
from clood_candy.records import ConfigFightResult, HalvingRound, PickCandidate, PickResult, TrainConfig, TrainOutcome
from clood_candy.records import TrainSet


def step_counter(advance):
    """on_step reports absolute steps; a continued run starts past 0, so move the bar by the gap."""
    last = 0

    def on_step(step: int, loss: float) -> None:
        nonlocal last
        advance(step - last, note=f"loss {loss:.4f}")
        last = step

    return on_step


def local_rounds(ctx: StageContext, data: TrainSet) -> TrainRound:
    """Each config in turn on the base this process loaded."""
    family, base = ctx.family(), ctx.base()
    fight_dir = ctx.run.path("train", "fight")

    def train_to(config: TrainConfig, steps: int) -> Trained:
        with ctx.progress.task(f"Config fight: {config.name} → {steps} steps", total=steps) as advance:
            outcome = family.train(base, data, config, fight_dir / config.name, ctx, max_steps=steps,
                                   on_step=step_counter(advance))
        if outcome.error:
            raise RuntimeError(outcome.error)
        return Trained(loss=outcome.final_val_loss if outcome.final_val_loss is not None else float("inf"),
                       outcome=outcome)

    return one_after_another(train_to)


def panel_rounds(ctx: StageContext, data: TrainSet) -> RankRound | None:
    """The sample judges on each config's LoRA at the end of a round (the pick's prompts,
    seeds and judges, weight 1), or None when [train.fight] judge or [train.pick] says not.
    Your vote sits out: it names a checkpoint of the finished run, not a round's recipe."""
    settings = ctx.config.train.pick
    if ctx.config.train.fight.judge != "panel" or not settings.enabled:
        return None
    wanted = {name: weight for name, weight in settings.judges.items() if name != USER}
    sample_judges(ctx, wanted)  # an unknown or caption judge is named before any training

    def rank_round(budget: int, trained: dict[str, Trained]) -> tuple[list[str], PickResult] | None:
        found = []
        for name, result in trained.items():
            outcome = result.outcome
            if outcome is not None and outcome.lora and ctx.run.path(outcome.lora).is_file():
                found.append(PickCandidate(name=f"{slug(name)}-step{outcome.steps_done}", config=name,
                                           step=outcome.steps_done, lora=outcome.lora, val_loss=outcome.final_val_loss))
        if len(found) < 2:
            ctx.progress.say(f"  round at {budget} steps: the panel has under two LoRAs to compare; validation loss decides")
            return None
        sheet = make_sheet(ctx, data, None, settings, found, out=ctx.run.path("train", "fight", f"samples-{budget}"))
        result = judge_sheet(ctx, sheet, wanted)
        if not result.panel:
            ctx.progress.say(f"  round at {budget} steps: no sample judge could vote; validation loss decides")
            return None
        config_of = {c.name: c.config for c in found}
        order = [config_of[c] for c in standing(result.sheet, result.panel, result.flags)]
        by_loss = next(iter(trained))
        if order[0] != by_loss:
            result.why += f"; validation loss alone would have put {by_loss} first"
        return order, result

    return rank_round


def _say_round(ctx: StageContext, r: HalvingRound) -> None:
    ctx.progress.say(f"  round at {r.budget} steps: " + ", ".join(
        f"{n} {s:.4f}" if s is not None else f"{n} failed" for n, s in r.scores.items())
        + (f" → {', '.join(r.survivors)} go on" if r.survivors else " → none left"))
    if r.panel is not None:
        ctx.progress.say(f"    the sample judges decided: {r.panel.why}")


def fight_configs(ctx: StageContext, data: TrainSet, configs: list[TrainConfig],
                  budgets: list[int]) -> ConfigFightResult:
    """Run the fight and write fight.json (also when every config failed: then raise)."""
    executor = ctx.config.fight.executor
    if executor == "ray":
        from clood_candy.fight.ray_rounds import RayRounds

        with RayRounds(ctx, data) as rounds:
            return _fight(ctx, configs, budgets, rounds.train_round, panel_rounds(ctx, data), executor)
    return _fight(ctx, configs, budgets, local_rounds(ctx, data), panel_rounds(ctx, data), executor)


def _fight(ctx: StageContext, configs: list[TrainConfig], budgets: list[int], train_round: TrainRound,
           rank_round: RankRound | None, executor: str) -> ConfigFightResult:
    try:
        fight = successive_halving(configs, budgets, ctx.config.train.fight.reduction,
                                   on_round=lambda r: _say_round(ctx, r), train_round=train_round,
                                   rank_round=rank_round)
    except AllConfigsFailed as failed:  # the record says why each failed; the stage fails with it
        fsutil.write_json(ctx.run.path("train", "fight.json"),
                          ConfigFightResult(configs=configs, rounds=failed.rounds, winner=None,
                                            failures=failed.failures, executor=executor))
        raise
    fight.executor = executor
    fsutil.write_json(ctx.run.path("train", "fight.json"), fight)
    return fight


def train_winner(ctx: StageContext, data: TrainSet, winner: TrainConfig) -> TrainOutcome:
    """The winner to full length, continuing from its fight checkpoints, in this process."""
    family, base = ctx.family(), ctx.base()
    with ctx.progress.task(f"Training {winner.name}", total=winner.steps) as advance:
        return family.train(base, data, winner, ctx.run.path("train", "fight", winner.name), ctx,
                            on_step=step_counter(advance))
