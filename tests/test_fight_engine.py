"""The fight engine on judges whose answers we control."""

from clood_candy.fight.engine import Panel, run_fight
from clood_candy.fight.stats import bootstrap_ci, bradley_terry
from clood_candy.fighters import Judge
from clood_candy.records import Candidate, Comparison, FightItem, Score


class LengthJudge(Judge):
    """Pointwise: longer captions score higher."""

    name = "length"

    def score(self, items, ctx):
        return {i.id: {c.fighter: Score(score=len(c.text), reason=f"{len(c.text)} chars") for c in i.candidates}
                for i in items}


class FirstSeenJudge(Judge):
    """Pairwise with total position bias: always prefers whatever is shown first."""

    name = "biased"
    pairwise = True

    def __init__(self):
        self.calls = 0

    def compare(self, pairs, ctx):
        self.calls += len(pairs)
        return [Comparison(winner="first", reason="first looked nicer") for _ in pairs]


class ContainsJudge(Judge):
    """Pairwise, order-independent: prefers the caption that mentions 'red'."""

    name = "red"
    pairwise = True

    def compare(self, pairs, ctx):
        out = []
        for _, first, second in pairs:
            a, b = "red" in first.text, "red" in second.text
            out.append(Comparison(winner="first" if a > b else "second" if b > a else "tie", reason="mentions red"))
        return out


def items_for(texts_by_fighter: dict[str, list[str]]) -> list[FightItem]:
    n = len(next(iter(texts_by_fighter.values())))
    return [FightItem(id=f"p{i}", candidates=[Candidate(fighter=f, text=t[i]) for f, t in texts_by_fighter.items()])
            for i in range(n)]


def test_clear_winner_with_interval_above_half():
    items = items_for({"long": ["jlybn, red bean on white paper"] * 20, "short": ["jlybn"] * 20})
    result = run_fight(items, Panel({"length": (LengthJudge(), 1.0)}, {}), ctx=None)
    assert result.winner == "long" and result.clear
    top = result.standings[0]
    assert top.fighter == "long" and top.win_rate == 1.0 and top.ci_low > 0.5
    assert "long wins" in result.verdict


def test_position_bias_becomes_tie_and_flip_rate_is_reported():
    judge = FirstSeenJudge()
    items = items_for({"a": ["x one"] * 10, "b": ["y two"] * 10})
    result = run_fight(items, Panel({"biased": (judge, 1.0)}, {}), ctx=None)
    assert result.flip_rates["biased"] == 1.0
    assert all(v.outcome == "tie" and v.flipped for vs in result.items.values() for v in vs)
    assert not result.clear and "No clear winner" in result.verdict
    assert judge.calls == 20  # both orders for each of 10 items


def test_recorded_verdicts_are_reused():
    judge = FirstSeenJudge()
    cache: dict = {}
    items = items_for({"a": ["x"] * 5, "b": ["y"] * 5})
    run_fight(items, Panel({"biased": (judge, 1.0)}, {}), ctx=None, cache=cache)
    run_fight(items, Panel({"biased": (judge, 1.0)}, {}), ctx=None, cache=cache)
    assert judge.calls == 10


def test_empty_caption_loses_without_asking_judges():
    judge = ContainsJudge()
    items = items_for({"ok": ["red bean"] * 4, "broken": [""] * 4})
    result = run_fight(items, Panel({"red": (judge, 1.0)}, {}), ctx=None)
    assert result.winner == "ok"
    assert all(v.judge == "engine" for vs in result.items.values() for v in vs)


def test_three_fighters_ranked_by_bradley_terry():
    items = items_for({"best": ["red, long caption here"] * 12, "mid": ["red"] * 12, "worst": ["blue"] * 12})
    panel = Panel({"red": (ContainsJudge(), 1.0), "length": (LengthJudge(), 0.5)}, {})
    result = run_fight(items, panel, ctx=None)
    assert [s.fighter for s in result.standings] == ["best", "mid", "worst"]
    assert result.standings[0].strength > result.standings[1].strength > result.standings[2].strength
    assert result.per_item_winners == {f"p{i}": "best" for i in range(12)}


def test_a_failing_judge_sits_out_and_is_named():
    class Broken(Judge):
        name = "broken"

        def score(self, items, ctx):
            raise RuntimeError("model not found")

    items = items_for({"a": ["aa"] * 3, "b": ["b"] * 3})
    result = run_fight(items, Panel({"broken": (Broken(), 1.0), "length": (LengthJudge(), 1.0)}, {}), ctx=None)
    assert result.winner == "a"
    assert "model not found" in result.forfeits["judge:broken"]


def test_bootstrap_interval_narrows_with_more_items():
    few = bootstrap_ci([1, 0, 1, 1], rounds=2000, confidence=0.95, seed=0)
    many = bootstrap_ci([1, 0, 1, 1] * 25, rounds=2000, confidence=0.95, seed=0)
    assert (many[1] - many[0]) < (few[1] - few[0])


def test_bradley_terry_orders_a_cycle_free_tournament():
    matches = [[("a", "b", 1.0), ("b", "c", 1.0), ("a", "c", 1.0)]] * 5
    s = bradley_terry(matches, ["a", "b", "c"])
    assert s["a"] > s["b"] > s["c"] and abs(sum(s.values()) - 1) < 1e-9
