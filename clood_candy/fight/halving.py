"""The training-config fight: successive halving.

Every config trains a short budget; the better 1/reduction continue to the next,
larger budget; the last one standing wins. Cheap configs are judged early, so the
compute goes to the promising ones (Jamieson & Talwalkar 2016). Held-out validation
loss ranks a round unless ``rank_round`` (the sample judges' panel) ranks it: from the
second round on, where the survivors have trained long enough to draw something.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from clood_candy.records import ConfigFightResult, HalvingRound, PickResult, TrainConfig, TrainOutcome, TrialRun

# Trains ``config`` up to ``steps`` (continuing earlier rounds) and returns validation loss
# (or a Trained, with the outcome: what it saved).
TrainTo = Callable[[TrainConfig, int], "float | Trained"]


@dataclass
class Trained:
    """One config's round: its validation loss, or why it failed, and where it ran."""

    loss: float  # inf or nan when it failed
    error: str | None = None
    trial: TrialRun | None = None  # set by an executor that ran it elsewhere (Ray)
    outcome: TrainOutcome | None = None  # what the round saved (its LoRA), when the executor says


# Orders a round's finished configs (given best validation loss first, with what each
# trained) by another judge, best first, with that judge's record; None when it could not.
RankRound = Callable[[int, dict[str, Trained]], "tuple[list[str], PickResult] | None"]

# Trains each (config, steps) of a round — one after another, or all at once on a cluster —
# and returns every config's result by name. The rungs and survivors stay this module's.
TrainRound = Callable[[list[tuple[TrainConfig, int]]], dict[str, Trained]]


def one_after_another(train_to: TrainTo) -> TrainRound:
    """The local executor: each config in turn, in this process."""

    def train_round(entries: list[tuple[TrainConfig, int]]) -> dict[str, Trained]:
        results = {}
        for config, steps in entries:
            try:
                got = train_to(config, steps)
                results[config.name] = got if isinstance(got, Trained) else Trained(loss=got)
            except Exception as exc:  # a config that crashes loses, the fight goes on
                results[config.name] = Trained(loss=math.inf, error=f"{type(exc).__name__}: {exc}")
        return results

    return train_round


class AllConfigsFailed(RuntimeError):
    """No config finished a round: there is no winner to train, only reasons."""

    def __init__(self, failures: dict[str, str], rounds: list[HalvingRound]):
        self.failures, self.rounds = failures, rounds
        super().__init__("every training config failed: " + "; ".join(f"{n}: {why}" for n, why in failures.items()))


def default_grid(defaults: TrainConfig) -> list[TrainConfig]:
    """A small grid around the defaults: the knobs that matter most for a first LoRA."""
    lr = defaults.learning_rate
    return [
        defaults.model_copy(update={"name": "default"}),
        defaults.model_copy(update={"name": "lr-x3", "learning_rate": lr * 3}),
        defaults.model_copy(update={"name": "lr-div3", "learning_rate": lr / 3}),
        defaults.model_copy(update={"name": "rank-x2", "rank": defaults.rank * 2, "alpha": defaults.alpha * 2}),
    ]


def successive_halving(configs: list[TrainConfig], budgets: list[int], reduction: int,
                       train_to: TrainTo | None = None, on_round: Callable[[HalvingRound], None] | None = None, *,
                       train_round: TrainRound | None = None, rank_round: RankRound | None = None) -> ConfigFightResult:
    """Give ``train_to`` (one config at a time, here) or ``train_round`` (a whole round, as
    the executor places it); the same losses give the same rounds either way. ``rank_round``
    decides the rounds after the first that leave someone out."""
    if train_round is None:
        if train_to is None:
            raise TypeError("successive_halving needs train_to or train_round")
        train_round = one_after_another(train_to)
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ValueError(f"config names must be unique: {names}")
    by_name = {c.name: c for c in configs}
    survivors = list(names)
    rounds: list[HalvingRound] = []
    failures: dict[str, str] = {}
    for budget in budgets:
        scores: dict[str, float] = {}
        results = train_round([(by_name[n], min(budget, by_name[n].steps)) for n in survivors])
        for name in survivors:
            result = results.get(name) or Trained(loss=math.inf, error="the executor returned no result")
            loss = result.loss
            if result.error:
                failures[name] = result.error
            if not math.isfinite(loss):
                failures.setdefault(name, f"validation loss was {loss}")
            scores[name] = loss if math.isfinite(loss) else math.inf
        # A config that failed never goes on, however few places the round has to fill.
        ranked = sorted((n for n in survivors if math.isfinite(scores[n])), key=lambda n: (scores[n], names.index(n)))
        keep = max(1, math.ceil(len(survivors) / reduction))
        verdict = (rank_round(budget, {n: results[n] for n in ranked})
                   if rank_round and rounds and len(ranked) > keep else None)
        if verdict is not None:
            order, panel = verdict
            ranked = [n for n in order if n in ranked] + [n for n in ranked if n not in order]
        survivors = ranked[:keep]
        round_ = HalvingRound(budget=budget, scores={n: (s if math.isfinite(s) else None) for n, s in scores.items()},
                              survivors=survivors,
                              trials={n: r.trial for n, r in results.items() if r.trial is not None},
                              decided_by="panel" if verdict else "validation-loss",
                              panel=verdict[1] if verdict else None)
        rounds.append(round_)
        if on_round:
            on_round(round_)
        if not survivors:
            raise AllConfigsFailed(failures, rounds)
        if len(survivors) == 1:
            break
    return ConfigFightResult(configs=configs, rounds=rounds, winner=survivors[0], failures=failures,
                             judge="panel" if rank_round else "validation-loss")
