"""A verdict claims no more than its photos support: exact binomial intervals, and "too few
photos to tell" when no result could be clear."""

import pytest

from clood_candy.fight import stats
from clood_candy.fight.engine import Panel, run_fight
from clood_candy.fighters import Judge
from clood_candy.records import Candidate, FightItem, Score


class LengthJudge(Judge):
    """Pointwise: longer captions score higher."""

    name = "length"

    def score(self, items, ctx):
        return {i.id: {c.fighter: Score(score=len(c.text)) for c in i.candidates} for i in items}


def fight(pairs: list[tuple[str, str]], confidence: float = 0.95):
    items = [FightItem(id=f"p{i}", candidates=[Candidate(fighter="a", text=a), Candidate(fighter="b", text=b)])
             for i, (a, b) in enumerate(pairs)]
    return run_fight(items, Panel({"length": (LengthJudge(), 1.0)}, {}), ctx=None, confidence=confidence)


A_WINS, B_WINS, TIE = ("a long caption", "short"), ("short", "a long caption"), ("same", "same")


def test_three_of_three_photos_is_too_few_to_tell():
    result = fight([A_WINS] * 3)
    assert result.winner == "a" and not result.clear
    assert "too few photos to tell" in result.verdict and "above a coin toss" not in result.verdict
    top = result.standings[0]
    assert top.fighter == "a" and top.win_rate == 1.0
    assert top.ci_low < 0.5 and top.ci_high == 1.0  # 3 of 3 is no proof of anything


def test_six_clean_wins_are_clear_five_of_six_are_not():
    clear = fight([A_WINS] * 6)
    assert clear.clear and "a wins" in clear.verdict and "6 of 6" in clear.verdict
    close = fight([A_WINS] * 5 + [B_WINS])
    assert not close.clear and "No clear winner" in close.verdict and "too few" not in close.verdict


def test_ties_do_not_count_as_evidence():
    result = fight([A_WINS] * 5 + [TIE] * 15)  # 5 wins, no losses, 15 photos the judge could not split
    assert not result.clear
    assert "too few photos to tell" in result.verdict and "15 ties" in result.verdict


def test_a_higher_confidence_needs_more_photos():
    assert stats.fewest_decided_for_a_clear_result(0.95) == 6
    assert stats.fewest_decided_for_a_clear_result(0.99) == 8
    assert not fight([A_WINS] * 7, confidence=0.99).clear
    assert fight([A_WINS] * 8, confidence=0.99).clear


def test_exact_interval_matches_the_binomial_tables():
    assert stats.exact_ci(3, 3, 0.95) == pytest.approx((0.2924, 1.0), abs=1e-4)
    assert stats.exact_ci(0, 10, 0.95) == pytest.approx((0.0, 0.3085), abs=1e-4)
    assert stats.exact_ci(5, 10, 0.95) == pytest.approx((0.1871, 0.8129), abs=1e-4)
    assert stats.exact_ci(0, 0, 0.95) == (0.0, 1.0)


def test_a_clean_sweep_of_many_photos_still_has_an_interval():
    top = fight([A_WINS] * 40).standings[0]
    assert top.win_rate == 1.0 and 0.85 < top.ci_low < 1.0  # not the bootstrap's collapsed [1, 1]
