"""The pick fight's panel: every sample judge scores every candidate, and the weighted
mean of their ranks decides. Ranks, not raw scores: a colour distance, a similarity and a
validation loss share no scale, and one judge's wide range must not outvote the rest."""

from __future__ import annotations

import math
import time

from clood_candy.context import StageContext
from clood_candy.errors import UserError
from clood_candy.fighters import SampleJudge
from clood_candy.records import PickResult, PickSheet, PickVote
from clood_candy.records import Score


def sample_judges(ctx: StageContext, wanted: dict[str, float]) -> tuple[dict[str, tuple[SampleJudge, float]], dict[str, str]]:
    """The judges that can vote here, and why each other one sits out."""
    judges, sat_out = {}, {}
    for name, weight in wanted.items():
        judge = ctx.registry.get("judge", name)
        if not isinstance(judge, SampleJudge):
            raise UserError(f"judge '{name}' scores captions, not samples: name it in [caption] judges, "
                            "not [train.pick] judges")
        why = judge.unavailable(ctx) if weight > 0 else "its weight is 0"
        if why:
            sat_out[name] = why
        else:
            judges[name] = (judge, weight)
    return judges, sat_out


def ranks(scores: dict[str, Score]) -> dict[str, float]:
    """0 for the worst score, 1 for the best, ties share the mean of their places."""
    finite = {c: s.score for c, s in scores.items() if math.isfinite(s.score)}
    if len(finite) < 2:
        return {c: 0.5 for c in finite}
    order = sorted(finite, key=lambda c: finite[c])
    found, i = {}, 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and finite[order[j + 1]] == finite[order[i]]:
            j += 1
        for c in order[i:j + 1]:
            found[c] = (i + j) / 2 / (len(order) - 1)
        i = j + 1
    return found


def judge_sheet(ctx: StageContext, sheet: PickSheet, wanted: dict[str, float],
                votes: list[PickVote] | None = None) -> PickResult:
    """Ask every judge named in ``wanted`` about ``sheet`` and decide."""
    judges, sat_out = sample_judges(ctx, wanted)
    started = time.perf_counter()
    scores: dict[str, dict[str, Score]] = {}
    flags: dict[str, list[str]] = {}
    names = {c.name for c in sheet.candidates}
    for name, (judge, _) in judges.items():
        try:
            got = {c: s for c, s in judge.score_samples(sheet, ctx).items() if c in names}
            if got:
                for cand, line in judge.flags(sheet, got, ctx).items():
                    flags.setdefault(cand, []).append(f"{name}: {line}")
        except Exception as exc:  # a failing judge loses its vote, the pick goes on
            ctx.log.exception("sample judge %s failed", name)
            sat_out[name] = f"failed: {type(exc).__name__}: {str(exc).strip()[:200]}"
            continue
        if got:
            scores[name] = got
        else:
            sat_out[name] = "it scored no candidate"
    result = decide(sheet, wanted, scores, sat_out, flags, votes or [])
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def decide(sheet: PickSheet, wanted: dict[str, float], scores: dict[str, dict[str, Score]],
           sat_out: dict[str, str], flags: dict[str, list[str]], votes: list[PickVote]) -> PickResult:
    """The panel's verdict from the judges' scores: weighted mean of each judge's ranks."""
    ranked = {name: ranks(s) for name, s in scores.items()}
    panel = {}
    for cand in (c.name for c in sheet.candidates):
        voted = [(wanted[j], r[cand]) for j, r in ranked.items() if cand in r]
        if voted:
            panel[cand] = round(sum(w * r for w, r in voted) / sum(w for w, _ in voted), 6)
    # A person who picked a flagged candidate has seen the warning: it does not hold that one back.
    held_back = {c: f for c, f in flags.items() if not (votes and votes[-1].candidate == c)}
    winner, why, disagreements = _verdict(sheet, panel, ranked, scores, held_back)
    return PickResult(sheet=sheet, judges=dict(wanted), scores=scores, ranks=ranked, sat_out=sat_out, panel=panel,
                      flags=flags, winner=winner, why=why, disagreements=disagreements, votes=list(votes))


def _sole_best(ranked: dict[str, float]) -> str | None:
    """The one candidate a judge put first (None: a tie at the top, or only one scored)."""
    top = max(ranked.values(), default=None)
    best = [c for c, r in ranked.items() if r == top]
    return best[0] if len(ranked) > 1 and len(best) == 1 else None


def standing(sheet: PickSheet, panel: dict[str, float], flags: dict[str, list[str]]) -> list[str]:
    """The judged candidates, best first. A flagged one (a judge says it is unfit: it copies
    its photos) comes after every unflagged one; ties go to the lower validation loss, then
    the later step."""
    by_name = {c.name: c for c in sheet.candidates}

    def order(c: str):
        loss = by_name[c].val_loss
        return c not in flags, panel[c], -(math.inf if loss is None else loss), by_name[c].step

    return sorted(panel, key=order, reverse=True)


def _verdict(sheet: PickSheet, panel: dict[str, float], ranked: dict[str, dict[str, float]],
             scores: dict[str, dict[str, Score]], flags: dict[str, list[str]]) -> tuple[str, str, list[str]]:
    final = next((c.name for c in sheet.candidates if c.final and c.weight == 1), sheet.candidates[-1].name)
    if not panel:  # nobody could judge: training alone's choice, said so
        return final, "no sample judge could vote, so the last step ships, as training alone would", []
    winner = standing(sheet, panel, flags)[0]
    passed_over = [c for c in flags if panel.get(c, -1) > panel[winner]]
    best = "the best mean rank of the candidates no judge flagged" if passed_over else "the panel's best mean rank"
    best_of = {j: top for j, r in ranked.items() if (top := _sole_best(r))}
    agree = [j for j, c in best_of.items() if c == winner]
    disagreements = [f"{j} preferred {c} ({scores[j][c].reason})" for j, c in best_of.items() if c != winner]
    if len(panel) == 1:
        why = f"{winner} is the only candidate the judges could score"
    elif agree:
        why = f"{winner} has {best} ({panel[winner]:.2f}); {', '.join(agree)} put it first"
    else:
        why = f"{winner} has {best} ({panel[winner]:.2f}) though no single judge put it first"
    if passed_over:
        why += f"; {', '.join(passed_over)} ranked higher but {'is' if len(passed_over) == 1 else 'are'} flagged"
    if winner != final and any(c.final for c in sheet.candidates):
        why += f"; training alone would have shipped {final}"
    return winner, why, disagreements
