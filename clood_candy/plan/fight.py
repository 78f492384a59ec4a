"""The config fight's rungs, proportional to the run they choose a recipe for.

A rung of 20 steps says nothing about a 1100-step run: at real scale the validation losses
of such short runs differ by noise, and a short horizon always favours the highest
learning rate. So the rungs are shares of the planned steps (1/8, 1/4, 1/2 by default),
survivors continue from their checkpoints, and the whole fight costs at most
``max_cost`` × the final run's steps (default: once more the run itself).
"""

from __future__ import annotations

import math

from clood_candy.plan.records import FightPlan


def rounds(configs: int, budgets: list[int], reduction: int) -> list[tuple[int, int]]:
    """(configs in the round, rung) for the rounds successive halving will run: it stops
    when one config is left, so later rungs may never be reached."""
    out, alive = [], configs
    for budget in budgets:
        if alive <= 1:
            break
        out.append((alive, budget))
        alive = max(1, math.ceil(alive / reduction))
    return out


def cost(played: list[tuple[int, int]]) -> int:
    """Steps trained in the fight: each round's configs continue from the previous rung."""
    total, before = 0, 0
    for alive, budget in played:
        total += alive * (budget - before)
        before = budget
    return total


def plan_fight(steps: int, configs: int, reduction: int, rungs: list[float], max_cost: float,
               budgets: list[int] | None) -> FightPlan | None:
    """The rungs in steps and what the fight costs; ``budgets``: the user's own rungs."""
    if configs <= 1:
        return None
    limit = int(max_cost * steps)
    if budgets is not None:
        played = rounds(configs, budgets, reduction)
        spent = cost(played)
        over = f"; more than {max_cost:g} × the run's {steps} steps" if spent > limit else ""
        return FightPlan(budgets=budgets, rounds=played, cost=spent, limit=limit, set_by_user=True,
                         reason=f"you set train.fight.budgets{over}")
    shares = sorted(r for r in rungs if 0 < r < 1)
    wanted = [max(1, round(r * steps)) for r in shares]
    played = rounds(configs, wanted, reduction)
    spent = cost(played)
    shares_text = ", ".join(_fraction(r) for r in shares)
    reason = f"rungs at {shares_text} of the {steps} planned steps"
    scale = 1.0
    if spent > limit > 0:  # too many configs for the budget: every rung shrinks alike
        scale = limit / spent
        wanted = [max(1, int(w * scale)) for w in wanted]
        played = rounds(configs, wanted, reduction)
        spent = cost(played)
        reason += (f", scaled by {scale:.2f} so that {configs} configs cost at most {max_cost:g} × the run "
                   "(train.fight.max_cost)")
    unused = len(wanted) - len(played)
    if unused:
        reason += f"; {configs} configs need {len(played)} round(s), so the last {unused} rung(s) go unused"
    return FightPlan(budgets=[w for _, w in played] or wanted[:1], rounds=played, cost=spent, limit=limit,
                     reason=reason)


def _fraction(share: float) -> str:
    inverse = 1 / share
    return f"1/{round(inverse)}" if abs(inverse - round(inverse)) < 1e-6 else f"{share:g}"


def plan_pick(settings, steps: int, checkpoint_every: int, batch: int, sampler_steps: int, fight_cost: int,
              held_out: int, judged_rounds: list[tuple[int, int]] = ()) -> "PickPlan":
    """What sampling the candidates costs, in training steps, beside the fight and the run.
    ``judged_rounds``: the fight's rounds the sample judges decide, (configs, rung) each:
    every config in one draws the pick's prompts too."""
    from clood_candy.plan.records import PickPlan

    saved = max(1, steps // max(1, checkpoint_every)) + (0 if steps % max(1, checkpoint_every) == 0 else 1)
    candidates = min(settings.max_candidates, saved) * len(settings.weights)
    prompts = min(settings.held_out_prompts, held_out) + settings.novel_prompts
    per_candidate = prompts * len(settings.seeds)
    rung_samples = sum(n for n, _ in judged_rounds) * per_candidate if settings.enabled else 0
    samples = candidates * per_candidate
    equivalents = round((samples + rung_samples) * sampler_steps * 2 / (3 * max(1, batch)))
    total = fight_cost + steps + equivalents
    return PickPlan(candidates=candidates, samples=samples, rung_samples=rung_samples, sampler_steps=sampler_steps,
                    step_equivalents=equivalents, share=round(equivalents / max(1, total), 3), enabled=settings.enabled)
