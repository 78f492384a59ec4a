"""The statistics that make a fight believable: win rates with confidence intervals over
items (exact binomial ones where a bootstrap would claim too much), and Bradley–Terry
strengths when more than two fighters meet."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import beta

# One pairwise result on one item: (fighter a, fighter b, points for a in {0, 0.5, 1}).
Match = tuple[str, str, float]


def win_rates(matches_by_item: Sequence[Sequence[Match]], fighters: Sequence[str]) -> dict[str, float]:
    won = dict.fromkeys(fighters, 0.0)
    played = dict.fromkeys(fighters, 0)
    for matches in matches_by_item:
        for a, b, points in matches:
            won[a] += points
            won[b] += 1.0 - points
            played[a] += 1
            played[b] += 1
    return {f: (won[f] / played[f] if played[f] else 0.0) for f in fighters}


def head_to_head(matches_by_item: Sequence[Sequence[Match]], a: str, b: str) -> list[float]:
    """Per item: a's points against b (items where they did not meet are left out)."""
    out = []
    for matches in matches_by_item:
        for x, y, points in matches:
            if (x, y) == (a, b):
                out.append(points)
            elif (x, y) == (b, a):
                out.append(1.0 - points)
    return out


def exact_ci(successes: float, trials: float, confidence: float) -> tuple[float, float]:
    """Clopper–Pearson: the exact binomial interval, honest at any n (3 of 3 is 29%–100% at
    95%, where a bootstrap says 100%–100%). Fractional successes (a tie as half a win) are
    fine: the beta quantiles are defined for them."""
    if trials <= 0:
        return (0.0, 1.0)
    tail = (1.0 - confidence) / 2.0
    low = 0.0 if successes <= 0 else float(beta.ppf(tail, successes, trials - successes + 1))
    high = 1.0 if successes >= trials else float(beta.ppf(1.0 - tail, successes + 1, trials - successes))
    return low, high


def fewest_decided_for_a_clear_result(confidence: float) -> int:
    """The fewest decided items at which even a clean sweep is clear (its exact interval
    excludes 50%): n of n has the lower bound tail^(1/n), above 1/2 once n > log(tail)/log(1/2)."""
    tail = (1.0 - confidence) / 2.0
    return math.floor(math.log(tail) / math.log(0.5)) + 1


def bootstrap_ci(values: Sequence[float], *, rounds: int, confidence: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap of the mean, resampling items (not judgements: items are the
    unit a user would add more of)."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return (0.0, 1.0)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(rounds, data.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def bradley_terry(matches_by_item: Sequence[Sequence[Match]], fighters: Sequence[str], iterations: int = 200) -> dict[str, float]:
    """Strengths by the MM algorithm (Hunter 2004); ties count half a win each way.

    A small prior (one tie against a virtual average fighter) keeps a fighter that
    won or lost everything finite. Strengths are normalised to sum to 1.
    """
    index = {f: i for i, f in enumerate(fighters)}
    n = len(fighters)
    wins = np.full((n, n), 0.0)
    for matches in matches_by_item:
        for a, b, points in matches:
            wins[index[a], index[b]] += points
            wins[index[b], index[a]] += 1.0 - points
    games = wins + wins.T
    strength = np.ones(n) / n
    for _ in range(iterations):
        total_wins = wins.sum(axis=1) + 0.5  # prior: half a win against the average
        denom = (games / (strength[:, None] + strength[None, :] + 1e-12)).sum(axis=1) + 1.0 / (strength + 1.0 / n)
        updated = total_wins / denom
        updated /= updated.sum()
        if np.allclose(updated, strength, atol=1e-10):
            strength = updated
            break
        strength = updated
    return {f: float(strength[index[f]]) for f in fighters}
