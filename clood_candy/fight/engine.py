"""The catfight engine: fighters offer a candidate per item, a weighted panel of judges
decides each pair of candidates, and the aggregate says who won and how sure that is.

Fighter-agnostic: items are photos and candidates captions today, anything tomorrow.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from clood_candy.fight import stats, verdicts
from clood_candy.fight.verdicts import PairKey, PairRequest, Tally
from clood_candy.fighters import Judge
from clood_candy.records import (
    Candidate,
    Comparison,
    FighterStanding,
    FightItem,
    FightResult,
    JudgeFailures,
    JudgeVerdict,
    Score,
)

if TYPE_CHECKING:
    from clood_candy.context import StageContext


@dataclass
class Panel:
    judges: dict[str, tuple[Judge, float]]  # name → (judge, weight)
    problems: dict[str, str]  # judge name → why it sat out


# Below this many photos a fighter's bootstrap interval is too narrow (see _standing_interval).
BOOTSTRAP_MIN_ITEMS = 30


def _pairs(item: FightItem) -> list[tuple[Candidate, Candidate]]:
    return list(itertools.combinations(sorted(item.candidates, key=lambda c: c.fighter), 2))


def resolve_orders(ab: Comparison, ba: Comparison) -> tuple[str, bool]:
    """Both orders asked; a verdict that flips with the order is a tie (position bias)."""
    first = {"first": "a", "second": "b", "tie": "tie"}[ab.winner]
    second = {"first": "b", "second": "a", "tie": "tie"}[ba.winner]
    if first == second:
        return first, False
    flipped = {first, second} == {"a", "b"}
    if flipped:
        return "tie", True
    return "tie", False  # one order undecided: not a preference a user should trust


def run_fight(
    items: list[FightItem],
    panel: Panel,
    ctx: "StageContext | None",
    *,
    forfeits: dict[str, str] | None = None,
    cache: MutableMapping | None = None,
    bootstrap: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> FightResult:
    cache = {} if cache is None else cache
    fighters = sorted({c.fighter for item in items for c in item.candidates})
    scores: dict[str, dict[str, dict[str, Score]]] = {}
    problems = dict(panel.problems)
    tallies = {name: Tally() for name in panel.judges}
    active: dict[str, tuple[Judge, float]] = {}
    for name, (judge, weight) in panel.judges.items():
        if judge.pairwise:
            active[name] = (judge, weight)
            continue
        try:
            scores[name] = verdicts.pointwise(judge, items, ctx, cache, tallies[name])
            active[name] = (judge, weight)
        except Exception as exc:  # a failing judge forfeits its seat, the fight goes on
            problems[name] = f"{type(exc).__name__}: {exc}"

    pair_requests: dict[str, list[PairRequest]] = {}
    for item in items:
        for a, b in _pairs(item):
            if a.text.strip() and b.text.strip():
                for name, (judge, _) in active.items():
                    if judge.pairwise:
                        pair_requests.setdefault(name, []).extend([(item, a, b), (item, b, a)])
    answers: dict[str, dict[PairKey, Comparison]] = {}
    for name, requests in pair_requests.items():
        try:
            answers[name] = verdicts.pairwise(active[name][0], requests, ctx, cache, tallies[name])
        except Exception as exc:
            problems[name] = f"{type(exc).__name__}: {exc}"
            active.pop(name)

    item_verdicts: dict[str, list[JudgeVerdict]] = {}
    matches_by_item: list[list[stats.Match]] = []
    flips: dict[str, list[bool]] = {}
    per_item_points: dict[str, dict[str, float]] = {}
    for item in items:
        found: list[JudgeVerdict] = []
        matches: list[stats.Match] = []
        points = dict.fromkeys((c.fighter for c in item.candidates), 0.0)
        for a, b in _pairs(item):
            pair_verdicts, vote = _decide_pair(item, a, b, active, scores, answers, flips)
            if not pair_verdicts:
                continue  # no judge could say anything about this pair: no match, not a tie
            found.extend(pair_verdicts)
            result = 1.0 if vote > 1e-12 else 0.0 if vote < -1e-12 else 0.5
            matches.append((a.fighter, b.fighter, result))
            points[a.fighter] += result
            points[b.fighter] += 1.0 - result
        item_verdicts[item.id] = found
        matches_by_item.append(matches)
        per_item_points[item.id] = points

    failures = _failures(active, tallies, ctx)
    return _aggregate(fighters, active, problems, scores, item_verdicts, matches_by_item, flips, per_item_points,
                      dict(forfeits or {}), failures, bootstrap, confidence, seed)


def _decide_pair(item: FightItem, a: Candidate, b: Candidate, active: dict[str, tuple[Judge, float]],
                 scores: dict[str, dict[str, dict[str, Score]]], answers: dict[str, dict[PairKey, Comparison]],
                 flips: dict[str, list[bool]]) -> tuple[list[JudgeVerdict], float]:
    """Every judge's verdict on (a, b) for one item and their weighted vote (> 0: a)."""
    if not a.text.strip() or not b.text.strip():
        # No caption is no contest: the fighter that produced nothing loses the pair.
        outcome = "tie" if bool(a.text.strip()) == bool(b.text.strip()) else ("a" if a.text.strip() else "b")
        return ([JudgeVerdict(judge="engine", a=a.fighter, b=b.fighter, outcome=outcome,
                              reason="a fighter produced no caption for this photo")],
                {"a": 1.0, "b": -1.0, "tie": 0.0}[outcome])
    found: list[JudgeVerdict] = []
    vote = 0.0
    for name, (judge, weight) in active.items():
        if judge.pairwise:
            ab = answers[name].get((item.id, a.fighter, b.fighter))
            ba = answers[name].get((item.id, b.fighter, a.fighter))
            if ab is None or ba is None or ab.error or ba.error:
                continue  # a failed comparison: no vote from this judge on this pair
            outcome, flipped = resolve_orders(ab, ba)
            flips.setdefault(name, []).append(flipped)
            reason = ab.reason if not flipped else f"changed its mind when the order was swapped: {ab.reason} / {ba.reason}"
        else:
            sa, sb = scores[name].get(item.id, {}).get(a.fighter), scores[name].get(item.id, {}).get(b.fighter)
            if sa is None or sb is None:
                continue
            outcome = "a" if sa.score > sb.score + 1e-9 else "b" if sb.score > sa.score + 1e-9 else "tie"
            flipped = False
            reason = f"{a.fighter}: {sa.score:.3g} ({sa.reason}); {b.fighter}: {sb.score:.3g} ({sb.reason})"
        vote += weight if outcome == "a" else -weight if outcome == "b" else 0.0
        found.append(JudgeVerdict(judge=name, a=a.fighter, b=b.fighter, outcome=outcome, flipped=flipped,
                                  reason=reason))
    return found, vote


def _failures(active: dict[str, tuple[Judge, float]], tallies: dict[str, Tally],
              ctx: "StageContext | None") -> dict[str, JudgeFailures]:
    """Per seated judge, what it answered unusably; said once per judge in the log."""
    log = ctx.log if ctx is not None else logging.getLogger("clood_candy")
    out: dict[str, JudgeFailures] = {}
    for name, (judge, _) in active.items():
        record = tallies[name].record(judge)
        if record is not None:
            log.warning("%s", record.note)
            out[name] = record
    return out


def _standing_interval(per_item: list[float], bootstrap: int, confidence: float, seed: int) -> tuple[float, float]:
    """The bootstrap sees how much a fighter's per-photo share really varies and is right
    once there are enough photos; with few photos, or when every photo went the same way,
    it collapses toward a point (3 of 3 gives [1, 1]). There the exact binomial interval
    on points (a tie as half a win) stands in: wider, never overconfident."""
    if len(per_item) >= BOOTSTRAP_MIN_ITEMS and len(set(per_item)) > 1:
        return stats.bootstrap_ci(per_item, rounds=bootstrap, confidence=confidence, seed=seed)
    return stats.exact_ci(sum(per_item), len(per_item), confidence)


def _head_to_head_verdict(matches_by_item: list[list[stats.Match]], top: str, runner: str,
                          confidence: float) -> tuple[bool, str]:
    """(clear, sentence): does ``top`` beat ``runner`` on more photos than a coin toss would?

    Ties are left out, as in a sign test: a photo the judges could not split is evidence
    for neither, and counting it as half a win would narrow the interval around 50% with
    photos that say nothing. The exact (Clopper–Pearson) interval stays honest at small n.
    """
    h2h = stats.head_to_head(matches_by_item, top, runner)
    wins, losses = sum(p == 1.0 for p in h2h), sum(p == 0.0 for p in h2h)
    ties, decided = len(h2h) - wins - losses, wins + losses
    low, high = stats.exact_ci(wins, decided, confidence)
    clear = low > 0.5
    pct, needed = int(round(confidence * 100)), stats.fewest_decided_for_a_clear_result(confidence)
    record = f"{wins} of {decided} photos the judges decided" + (f" ({ties} ties left out)" if ties else "")
    if clear:
        return True, (f"{top} wins: it beat {runner} on {record} "
                      f"({pct}% interval {low:.0%}–{high:.0%}, above a coin toss).")
    if decided == 0:
        return False, (f"No clear winner: the judges could not split {top} and {runner} on any of "
                       f"{len(h2h)} photos. {top} is used.")
    if decided < needed:
        return False, (f"No clear winner, too few photos to tell: {top} beat {runner} on {record}; at {pct}% "
                       f"confidence no result is clear on fewer than {needed} decided photos. "
                       f"{top} is used; more photos would settle it.")
    return False, (f"No clear winner: {top} beat {runner} on {record}, but the {pct}% interval "
                   f"{low:.0%}–{high:.0%} includes 50%. {top} is used; more photos would settle it.")


def _aggregate(fighters, active, problems, scores, item_verdicts, matches_by_item, flips, per_item_points,
               forfeits, failures, bootstrap, confidence, seed) -> FightResult:
    rates = stats.win_rates(matches_by_item, fighters)
    strengths = stats.bradley_terry(matches_by_item, fighters) if len(fighters) > 2 else {}
    order = sorted(fighters, key=lambda f: (strengths.get(f, rates[f]), rates[f]), reverse=True)
    standings = []
    for i, fighter in enumerate(fighters):
        per_item = []
        for matches in matches_by_item:
            got = [p if a == fighter else 1 - p for a, b, p in matches if fighter in (a, b)]
            if got:
                per_item.append(sum(got) / len(got))
        low, high = _standing_interval(per_item, bootstrap, confidence, seed + i)
        means = {}
        for judge_name, by_item in scores.items():
            vals = [by_item[it][fighter].score for it in by_item if fighter in by_item[it]]
            if vals:
                means[judge_name] = sum(vals) / len(vals)
        standings.append(FighterStanding(fighter=fighter, win_rate=rates[fighter], ci_low=low, ci_high=high,
                                         strength=strengths.get(fighter), mean_scores=means))
    standings.sort(key=lambda s: order.index(s.fighter))

    winner, clear, verdict = None, False, "no fighters took part"
    if len(order) == 1:
        winner, clear, verdict = order[0], True, f"{order[0]} fought alone and wins by default"
    elif len(order) >= 2:
        winner = order[0]
        clear, verdict = _head_to_head_verdict(matches_by_item, order[0], order[1], confidence)
    per_item_winners = {
        item_id: max(sorted(points), key=lambda f: (points[f], -order.index(f)))
        for item_id, points in per_item_points.items() if points
    }
    return FightResult(
        fighters=fighters,
        judges={name: weight for name, (_, weight) in active.items()},
        items=item_verdicts,
        scores=scores,
        standings=standings,
        flip_rates={name: (sum(v) / len(v) if v else 0.0) for name, v in flips.items()},
        forfeits={**forfeits, **{f"judge:{k}": v for k, v in problems.items()}},
        judge_failures=failures,
        winner=winner,
        clear=clear,
        verdict=verdict,
        per_item_winners=per_item_winners,
    )
