"""The train stage's config fight: successive halving over the configs, each round trained
by the executor ``[fight]`` names (local: one config after another in this process; ray:
all at once on a Ray instance or cluster), recorded in RUN/train/fight.json."""

from __future__ import annotations

from clood_candy import fsutil
from clood_candy.context import StageContext
from clood_candy.fight.halving import AllConfigsFailed, TrainRound, one_after_another, successive_halving
from clood_candy.records import ConfigFightResult, HalvingRound, TrainConfig, TrainOutcome, TrainSet


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

    def train_to(config: TrainConfig, steps: int) -> float:
        with ctx.progress.task(f"Config fight: {config.name} → {steps} steps", total=steps) as advance:
            outcome = family.train(base, data, config, fight_dir / config.name, ctx, max_steps=steps,
                                   on_step=step_counter(advance))
        if outcome.error:
            raise RuntimeError(outcome.error)
        return outcome.final_val_loss if outcome.final_val_loss is not None else float("inf")

    return one_after_another(train_to)


def _say_round(ctx: StageContext, r: HalvingRound) -> None:
    ctx.progress.say(f"  round at {r.budget} steps: " + ", ".join(
        f"{n} {s:.4f}" if s is not None else f"{n} failed" for n, s in r.scores.items())
        + (f" → {', '.join(r.survivors)} go on" if r.survivors else " → none left"))


def fight_configs(ctx: StageContext, data: TrainSet, configs: list[TrainConfig],
                  budgets: list[int]) -> ConfigFightResult:
    """Run the fight and write fight.json (also when every config failed: then raise)."""
    executor = ctx.config.fight.executor
    if executor == "ray":
        from clood_candy.fight.ray_rounds import RayRounds

        with RayRounds(ctx, data) as rounds:
            return _fight(ctx, configs, budgets, rounds.train_round, executor)
    return _fight(ctx, configs, budgets, local_rounds(ctx, data), executor)


def _fight(ctx: StageContext, configs: list[TrainConfig], budgets: list[int], train_round: TrainRound,
           executor: str) -> ConfigFightResult:
    try:
        fight = successive_halving(configs, budgets, ctx.config.train.fight.reduction,
                                   on_round=lambda r: _say_round(ctx, r), train_round=train_round)
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
