"""Asking the judges, through the verdict cache.

A recorded verdict is reused only for the same judge identity (name, version, options,
base…: ``Judge.identity``), the same photo id and the same captions. A failed comparison
or a non-finite score is never recorded, so the next run asks again; it is counted
against the judge instead, and costs it only its vote on that pair.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clood_candy.fighters import Judge
from clood_candy.records import Candidate, Comparison, FightItem, JudgeFailures, Score

if TYPE_CHECKING:
    from clood_candy.context import StageContext

PairRequest = tuple[FightItem, Candidate, Candidate]  # (item, shown first, shown second)
PairKey = tuple[str, str, str]  # (item id, first fighter, second fighter): names the order too


def cache_key(*parts: str) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


def identity_key(judge: Judge, ctx: "StageContext | None") -> str:
    return cache_key(json.dumps(judge.identity(ctx), sort_keys=True, default=str))


def pair_key(request: PairRequest) -> PairKey:
    item, first, second = request
    return (item.id, first.fighter, second.fighter)


@dataclass
class Tally:
    """What one judge answered that the fight could not use."""

    failed: int = 0
    non_finite: int = 0
    first_failure: str = ""
    first_non_finite: str = ""

    def fail(self, why: str) -> None:
        self.failed += 1
        self.first_failure = self.first_failure or why

    def reject(self, where: str) -> None:
        self.non_finite += 1
        self.first_non_finite = self.first_non_finite or where

    def record(self, judge: Judge) -> JudgeFailures | None:
        if not self.failed and not self.non_finite:
            return None
        parts = []
        if self.failed:
            plural = "s" if self.failed != 1 else ""
            what = f"comparison{plural} failed" if judge.pairwise else f"caption{plural} left unscored"
            parts.append(f"{self.failed} {what} (first: {self.first_failure})")
        if self.non_finite:
            noun = "score was" if self.non_finite == 1 else "scores were"
            parts.append(f"{self.non_finite} {noun} not finite and dropped (first: {self.first_non_finite})")
        note = f"judge {judge.name}: {'; '.join(parts)}; each costs it only its vote on that pair"
        return JudgeFailures(failed=self.failed, non_finite=self.non_finite, note=note)


def pointwise(judge: Judge, items: list[FightItem], ctx: "StageContext | None", cache: MutableMapping,
              tally: Tally) -> dict[str, dict[str, Score]]:
    """Scores for every candidate; the judge is asked only when something is new, and then
    about the whole set (a judge may weigh a caption against the rest of the set)."""
    ident = identity_key(judge, ctx)
    keys = {(i.id, c.fighter): cache_key("score", ident, i.id, c.text) for i in items for c in i.candidates}
    if any(k not in cache for k in keys.values()):
        fresh = judge.score(items, ctx)
        for item in items:
            for cand in item.candidates:
                key, got = keys[(item.id, cand.fighter)], fresh.get(item.id, {}).get(cand.fighter)
                if got is not None and math.isfinite(got.score):
                    cache[key] = got.model_dump()
                    continue
                cache.pop(key, None)  # its answer now is what counts, not an older one on file
                if got is not None:
                    tally.reject(f"{cand.fighter} on {item.id}: {got.score}")
                elif cand.text.strip():  # an empty caption loses without the judges anyway
                    tally.fail(f"no score for {cand.fighter} on {item.id}")
    result: dict[str, dict[str, Score]] = {}
    for (item_id, fighter), key in keys.items():
        raw = cache.get(key)
        if raw is not None:
            result.setdefault(item_id, {})[fighter] = Score.model_validate(raw)
    return result


def pairwise(judge: Judge, requests: list[PairRequest], ctx: "StageContext | None", cache: MutableMapping,
             tally: Tally) -> dict[PairKey, Comparison]:
    """Every request's answer under its own pair key; failures are answers with ``error``."""
    ident = identity_key(judge, ctx)
    keys = {pair_key(r): cache_key("compare", ident, r[0].id, r[1].text, r[2].text) for r in requests}
    todo = [r for r in requests if keys[pair_key(r)] not in cache]
    fresh = _by_pair(judge.compare(todo, ctx), todo) if todo else {}
    asked = {pair_key(r) for r in todo}
    out: dict[PairKey, Comparison] = {}
    for pk, key in keys.items():
        if pk not in asked:
            out[pk] = Comparison.model_validate(cache[key])
            continue
        answer = fresh.get(pk) or Comparison(error="the judge gave no answer for this pair")
        if answer.error is None:
            cache[key] = answer.model_dump()
        else:
            tally.fail(answer.error)
        out[pk] = answer
    return out


def _by_pair(answers: Any, asked: list[PairRequest]) -> dict[PairKey, Comparison]:
    if isinstance(answers, Mapping):
        return {tuple(k): v for k, v in answers.items()}
    answers = list(answers)
    if len(answers) != len(asked):  # positions cannot be trusted: no answer lands anywhere
        raise ValueError(f"answered {len(answers)} of {len(asked)} pairs (a list answers every pair, in order)")
    return {pair_key(r): a for r, a in zip(asked, answers)}
