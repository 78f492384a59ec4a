"""What the verdict cache may reuse (a verdict of the same judge, set up the same way, on
the same base; never a failure) and that every pairwise answer lands on its own pair."""

import json

from clood_candy.fight.engine import Panel, run_fight
from clood_candy.fighters import Judge
from clood_candy.records import Candidate, Comparison, FightItem


def longer(first: Candidate, second: Candidate) -> Comparison:
    a, b = len(first.text), len(second.text)
    return Comparison(winner="first" if a > b else "second" if b > a else "tie", reason="says more")


class CountingJudge(Judge):
    """Pairwise: prefers the longer caption; counts the pairs it is asked about."""

    name = "counting"
    pairwise = True

    def __init__(self):
        self.asked = 0

    def compare(self, pairs, ctx):
        self.asked += len(pairs)
        return [longer(first, second) for _, first, second in pairs]


class FlakyJudge(Judge):
    """Pairwise: its API fails on photo p0; elsewhere it prefers the longer caption."""

    name = "flaky"
    pairwise = True

    def __init__(self):
        self.asked: list[int] = []

    def compare(self, pairs, ctx):
        self.asked.append(len(pairs))
        return [Comparison(error="HTTP 529 overloaded") if item.id == "p0" else longer(first, second)
                for item, first, second in pairs]


def long_vs_short(n: int) -> list[FightItem]:
    return [FightItem(id=f"p{i}", candidates=[Candidate(fighter="long", text="jlybn, red bean on white"),
                                              Candidate(fighter="short", text="jlybn")]) for i in range(n)]


def test_a_changed_judge_set_up_or_base_asks_the_judge_again(make_ctx):
    judge, cache = CountingJudge(), {}

    def fight(options: dict, base: str = "tiny") -> int:
        run_fight(long_vs_short(4), Panel({"counting": (judge, 1.0)}, {}),
                  make_ctx(plugins={"counting": options}, base=base), cache=cache)
        return judge.asked

    assert fight({"model": "m1"}) == 8  # 4 photos, both orders
    assert fight({"model": "m1"}) == 8  # same judge, same set-up: every verdict reused
    assert fight({"model": "m2"}) == 16  # its options changed
    assert fight({"model": "m2"}, base="tiny-sdxl") == 24  # the base changed
    judge.version = "2"
    assert fight({"model": "m2"}, base="tiny-sdxl") == 32  # a new version of the judge
    assert fight({"model": "m2", "api_key": "sk-one"}, base="tiny-sdxl") == 40
    assert fight({"model": "m2", "api_key": "sk-two"}, base="tiny-sdxl") == 40  # a secret is not set-up
    identity = judge.identity(make_ctx(plugins={"counting": {"api_key": "sk-two"}}))
    assert "sk-two" not in json.dumps(identity)


def test_a_failed_comparison_is_no_vote_is_reported_and_is_asked_again():
    judge, cache = FlakyJudge(), {}
    result = run_fight(long_vs_short(4), Panel({"flaky": (judge, 1.0)}, {}), ctx=None, cache=cache)

    assert result.items["p0"] == []  # not a tie: the judge said nothing about p0
    assert result.standings[0].fighter == "long" and result.standings[0].win_rate == 1.0
    failures = result.judge_failures["flaky"]
    assert failures.failed == 2
    assert "flaky: 2 comparisons failed" in failures.note and "HTTP 529" in failures.note

    run_fight(long_vs_short(4), Panel({"flaky": (judge, 1.0)}, {}), ctx=None, cache=cache)
    assert judge.asked == [8, 2]  # only the failed pairs are asked again


class RedByPairJudge(Judge):
    """Pairwise: prefers the caption that mentions red, and answers keyed by pair, in its own order."""

    name = "red-by-pair"
    pairwise = True

    def compare(self, pairs, ctx):
        out = {}
        for item, first, second in reversed(pairs):
            a, b = "red" in first.text, "red" in second.text
            out[(item.id, first.fighter, second.fighter)] = Comparison(
                winner="first" if a > b else "second" if b > a else "tie", reason=f"{item.id} mentions red")
        return out


def test_every_pairwise_answer_lands_on_its_own_pair():
    # Each photo has a different fighter that says "red"; on p1 one fighter has no caption,
    # so its pairs are never asked and every later answer would shift under positional matching.
    captions = {"p0": {"x": "red bean", "y": "bean", "z": "a bean"},
                "p1": {"x": "", "y": "red bean", "z": "a bean"},
                "p2": {"x": "a bean", "y": "bean", "z": "red bean"}}
    items = [FightItem(id=i, candidates=[Candidate(fighter=f, text=t) for f, t in by.items()])
             for i, by in captions.items()]
    result = run_fight(items, Panel({"red-by-pair": (RedByPairJudge(), 1.0)}, {}), ctx=None)

    red = {i: next(f for f, t in by.items() if "red" in t) for i, by in captions.items()}
    for item_id, verdicts in result.items.items():
        judged = [v for v in verdicts if v.judge == "red-by-pair"]
        assert judged and all(v.reason == f"{item_id} mentions red" for v in judged)
        for v in judged:
            expected = "a" if v.a == red[item_id] else "b" if v.b == red[item_id] else "tie"
            assert v.outcome == expected, (item_id, v)
    assert result.per_item_winners == red


def test_a_judge_that_answers_too_few_pairs_sits_out_and_says_so():
    class Forgetful(Judge):
        name = "forgetful"
        pairwise = True

        def compare(self, pairs, ctx):
            return [longer(first, second) for _, first, second in pairs[:-1]]

    result = run_fight(long_vs_short(3), Panel({"forgetful": (Forgetful(), 1.0)}, {}), ctx=None)
    assert "answered 5 of 6 pairs" in result.forfeits["judge:forgetful"]
