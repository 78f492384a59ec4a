"""The catfight engine: fighters offer a candidate per item, a weighted panel of judges
decides each pair of candidates, and the aggregate says who won and how sure that is.

Fighter-agnostic: items are photos and candidates captions today, anything tomorrow.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from clood_candy.fight import stats
from clood_candy.fighters import Judge
from clood_candy.records import (
    Candidate,
    Comparison,
    FighterStanding,
    FightItem,
    FightResult,
    JudgeVerdict,
    Score,
)

if TYPE_CHECKING:
    from clood_candy.context import StageContext


@dataclass
class Panel:
    judges: dict[str, tuple[Judge, float]]  # name → (judge, weight)
    problems: dict[str, str]  # judge name → why it sat out


def _key(*parts: str) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


def _pointwise(judge: Judge, items: list[FightItem], ctx: "StageContext", cache: MutableMapping) -> dict[str, dict[str, Score]]:
    """Scores for every candidate; the judge is asked only when something is new, and then
    about the whole set (a judge may weigh a caption against the rest of the set)."""
    result: dict[str, dict[str, Score]] = {}
    if any(_key("score", judge.name, i.id, c.text) not in cache for i in items for c in i.candidates):
        fresh = judge.score(items, ctx)
        for item in items:
            for cand in item.candidates:
                got = fresh.get(item.id, {}).get(cand.fighter)
                if got is not None:
                    cache[_key("score", judge.name, item.id, cand.text)] = got.model_dump()
    for item in items:
        for cand in item.candidates:
            raw = cache.get(_key("score", judge.name, item.id, cand.text))
            if raw is not None:
                result.setdefault(item.id, {})[cand.fighter] = Score.model_validate(raw)
    return result


def _pairwise(judge: Judge, requests: list[tuple[FightItem, Candidate, Candidate]], ctx: "StageContext",
              cache: MutableMapping) -> list[Comparison]:
    keys = [_key("compare", judge.name, item.id, first.text, second.text) for item, first, second in requests]
    todo = [(k, r) for k, r in zip(keys, requests) if k not in cache]
    if todo:
        answers = judge.compare([r for _, r in todo], ctx)
        for (k, _), answer in zip(todo, answers):
            cache[k] = answer.model_dump()
    return [Comparison.model_validate(cache[k]) for k in keys]


def _resolve_orders(ab: Comparison, ba: Comparison) -> tuple[str, bool]:
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
    ctx: "StageContext",
    *,
    forfeits: dict[str, str] | None = None,
    cache: MutableMapping | None = None,
    bootstrap: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> FightResult:
    cache = {} if cache is None else cache
    forfeits = dict(forfeits or {})
    fighters = sorted({c.fighter for item in items for c in item.candidates})
    scores: dict[str, dict[str, dict[str, Score]]] = {}
    problems = dict(panel.problems)
    active: dict[str, tuple[Judge, float]] = {}
    for name, (judge, weight) in panel.judges.items():
        if judge.pairwise:
            active[name] = (judge, weight)
            continue
        try:
            scores[name] = _pointwise(judge, items, ctx, cache)
            active[name] = (judge, weight)
        except Exception as exc:  # a failing judge forfeits its seat, the fight goes on
            problems[name] = f"{type(exc).__name__}: {exc}"

    pair_requests: dict[str, list[tuple[FightItem, Candidate, Candidate]]] = {}
    for item in items:
        for a, b in itertools.combinations(sorted(item.candidates, key=lambda c: c.fighter), 2):
            for name, (judge, _) in active.items():
                if judge.pairwise and a.text.strip() and b.text.strip():
                    pair_requests.setdefault(name, []).extend([(item, a, b), (item, b, a)])
    pair_answers: dict[str, list[Comparison]] = {}
    for name, requests in pair_requests.items():
        try:
            pair_answers[name] = _pairwise(active[name][0], requests, ctx, cache)
        except Exception as exc:
            problems[name] = f"{type(exc).__name__}: {exc}"
            active.pop(name)
    cursor = dict.fromkeys(pair_answers, 0)

    verdicts: dict[str, list[JudgeVerdict]] = {}
    matches_by_item: list[list[stats.Match]] = []
    flips: dict[str, list[bool]] = {}
    per_item_points: dict[str, dict[str, float]] = {}
    for item in items:
        item_verdicts: list[JudgeVerdict] = []
        item_matches: list[stats.Match] = []
        points = dict.fromkeys((c.fighter for c in item.candidates), 0.0)
        for a, b in itertools.combinations(sorted(item.candidates, key=lambda c: c.fighter), 2):
            vote = 0.0
            judging = active.items()
            if not a.text.strip() or not b.text.strip():
                # No caption is no contest: the fighter that produced nothing loses the pair.
                outcome = "tie" if bool(a.text.strip()) == bool(b.text.strip()) else ("a" if a.text.strip() else "b")
                item_verdicts.append(JudgeVerdict(judge="engine", a=a.fighter, b=b.fighter, outcome=outcome,
                                                  reason="a fighter produced no caption for this photo"))
                vote = {"a": 1.0, "b": -1.0, "tie": 0.0}[outcome]
                judging = []
            for name, (judge, weight) in judging:
                if judge.pairwise:
                    i = cursor[name]
                    ab, ba = pair_answers[name][i], pair_answers[name][i + 1]
                    cursor[name] = i + 2
                    outcome, flipped = _resolve_orders(ab, ba)
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
                item_verdicts.append(JudgeVerdict(judge=name, a=a.fighter, b=b.fighter, outcome=outcome,
                                                  flipped=flipped, reason=reason))
            result = 1.0 if vote > 1e-12 else 0.0 if vote < -1e-12 else 0.5
            item_matches.append((a.fighter, b.fighter, result))
            points[a.fighter] += result
            points[b.fighter] += 1.0 - result
        verdicts[item.id] = item_verdicts
        matches_by_item.append(item_matches)
        per_item_points[item.id] = points

    return _aggregate(items, fighters, active, problems, scores, verdicts, matches_by_item, flips,
                      per_item_points, forfeits, bootstrap, confidence, seed)


def _aggregate(items, fighters, active, problems, scores, verdicts, matches_by_item, flips, per_item_points,
               forfeits, bootstrap, confidence, seed) -> FightResult:
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
        low, high = stats.bootstrap_ci(per_item, rounds=bootstrap, confidence=confidence, seed=seed + i)
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
        top, runner = order[0], order[1]
        h2h = stats.head_to_head(matches_by_item, top, runner)
        low, high = stats.bootstrap_ci(h2h, rounds=bootstrap, confidence=confidence, seed=seed)
        share = sum(h2h) / len(h2h) if h2h else 0.5
        winner = top
        clear = low > 0.5
        pct = int(round(confidence * 100))
        if clear:
            verdict = (f"{top} wins: it beat {runner} on {share:.0%} of photos "
                       f"({pct}% interval {low:.0%}–{high:.0%}, above a coin toss).")
        else:
            verdict = (f"No clear winner: {top} leads {runner} on {share:.0%} of photos, but the {pct}% interval "
                       f"{low:.0%}–{high:.0%} includes 50%. {top} is used; more photos would settle it.")
    per_item_winners = {
        item_id: max(sorted(points), key=lambda f: (points[f], -order.index(f)))
        for item_id, points in per_item_points.items() if points
    }
    return FightResult(
        fighters=fighters,
        judges={name: weight for name, (_, weight) in active.items()},
        items=verdicts,
        scores=scores,
        standings=standings,
        flip_rates={name: (sum(v) / len(v) if v else 0.0) for name, v in flips.items()},
        forfeits={**forfeits, **{f"judge:{k}": v for k, v in problems.items()}},
        winner=winner,
        clear=clear,
        verdict=verdict,
        per_item_winners=per_item_winners,
    )
