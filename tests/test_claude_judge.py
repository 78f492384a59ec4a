"""The Claude pairwise judge against the local fake Messages API (real SDK)."""

import pytest
from fakes.anthropic_server import solid_photos

from clood_candy.records import Candidate, FightItem

KEY = "sk-ant-test-judge-SECRET"
FAST = {"backoff_initial": 0.01, "backoff_max": 0.05, "max_attempts": 3, "malformed_retries": 1, "timeout": 5}


@pytest.fixture
def judge_ctx(make_ctx, anthropic_fake, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)

    def make(**options):
        ctx = make_ctx(plugins={"claude": {"base_url": anthropic_fake.url, **FAST, **options}})
        return ctx.registry.get("judge", "claude"), ctx

    return make


def both_orders(photo, a_text, b_text):
    item = FightItem(id=photo.id, photo=photo, candidates=[Candidate(fighter="a", text=a_text),
                                                         Candidate(fighter="b", text=b_text)])
    a, b = item.candidates
    return [(item, a, b), (item, b, a)]


def test_answers_what_is_asked_in_both_orders(judge_ctx, anthropic_fake):
    judge, ctx = judge_ctx()
    assert judge.pairwise
    red, blue = solid_photos(ctx.run.root, {"r": (200, 30, 40), "b": (40, 80, 200)})
    pairs = both_orders(red, "zqx jellybean, red, white background", "zqx jellybean, green") \
        + both_orders(blue, "zqx jellybean, blue", "zqx jellybean, blue, single")
    verdicts = judge.compare(pairs, ctx)

    assert [v.winner for v in verdicts] == ["first", "second", "tie", "tie"]
    assert all(v.reason for v in verdicts)
    calls = anthropic_fake.messages_calls()
    assert len(calls) == 4
    texts = [c.body["messages"][0]["content"][-1]["text"] for c in calls]
    assert all("<first>" in t and "<second>" in t and "object LoRA" in t for t in texts)
    assert all(c.body["messages"][0]["content"][0]["type"] == "image" for c in calls)
    usage = (ctx.run.path("cache", "claude", "judge-usage.json")).read_text()
    assert '"comparisons": 4' in usage and '"cost_usd"' in usage


def test_rerun_makes_no_second_api_call(judge_ctx, anthropic_fake):
    judge, ctx = judge_ctx()
    (red,) = solid_photos(ctx.run.root, {"r": (200, 30, 40)})
    pairs = both_orders(red, "a red bean", "a blue bean")
    first = judge.compare(pairs, ctx)
    made = len(anthropic_fake.messages_calls())
    assert made == 2

    judge_again, ctx_again = judge_ctx()  # a fresh context on the same run folder, as a re-run has
    assert judge_again.compare(pairs, ctx_again) == first
    assert len(anthropic_fake.messages_calls()) == made
    for cached in ctx.run.path("cache", "claude").glob("*.json"):
        assert KEY not in cached.read_text()


def test_cache_misses_when_the_captions_change(judge_ctx, anthropic_fake):
    judge, ctx = judge_ctx()
    (red,) = solid_photos(ctx.run.root, {"r": (200, 30, 40)})
    judge.compare(both_orders(red, "a red bean", "a blue bean"), ctx)
    judge.compare(both_orders(red, "a red bean", "a green bean"), ctx)
    assert len(anthropic_fake.messages_calls()) == 4


def test_a_failed_pair_has_no_winner_says_why_and_the_rest_are_judged(judge_ctx, anthropic_fake):
    judge, ctx = judge_ctx(max_concurrency=1)
    anthropic_fake.script("400")
    (red,) = solid_photos(ctx.run.root, {"r": (200, 30, 40)})
    verdicts = judge.compare(both_orders(red, "a red bean", "a blue bean"), ctx)
    assert verdicts[0].winner is None and verdicts[0].error.startswith("HTTP 400")  # not a tie
    assert verdicts[1].winner == "second" and verdicts[1].error is None


def test_identity_names_the_judges_model_and_prompt_never_the_key(judge_ctx):
    judge, ctx = judge_ctx(model="claude-haiku-4-5")
    plain = judge.identity(ctx)
    assert plain["model"] == "claude-haiku-4-5" and plain["prompt"]
    assert judge.identity(judge_ctx(model="claude-haiku-4-5", judge_model="claude-opus-5-5")[1])["model"] \
        == "claude-opus-5-5"
    assert judge.identity(judge_ctx(model="claude-haiku-4-5")[1]) == plain  # a re-run: the same identity
    _, styled = judge_ctx(model="claude-haiku-4-5")
    styled.config.caption.lora_type = "style"
    assert judge.identity(styled) != plain  # the rubric's wording changes with the LoRA type
    assert KEY not in repr(plain)


def test_malformed_verdicts_are_retried(judge_ctx, anthropic_fake):
    judge, ctx = judge_ctx(max_concurrency=1)
    anthropic_fake.script("bad_json", "ok", "no_tool")  # one malformed reply per pair, then a good one
    (red,) = solid_photos(ctx.run.root, {"r": (200, 30, 40)})
    assert [v.winner for v in judge.compare(both_orders(red, "a red bean", "a blue bean"), ctx)] == ["first", "second"]
    assert len(anthropic_fake.messages_calls()) == 4


def test_every_pair_failing_raises_one_line(judge_ctx, anthropic_fake):
    judge, ctx = judge_ctx()
    anthropic_fake.default = "401"
    (red,) = solid_photos(ctx.run.root, {"r": (200, 30, 40)})
    with pytest.raises(RuntimeError, match="every comparison failed.*HTTP 401"):
        judge.compare(both_orders(red, "a red bean", "a blue bean"), ctx)


def test_a_pair_without_a_photo_is_judged_on_text(judge_ctx, anthropic_fake):
    judge, ctx = judge_ctx()
    item = FightItem(id="x", photo=None, candidates=[Candidate(fighter="a", text="t1"), Candidate(fighter="b", text="t2")])
    (verdict,) = judge.compare([(item, *item.candidates)], ctx)
    assert verdict.winner == "tie"  # the fake sees no image, so no colour to prefer
    content = anthropic_fake.messages_calls()[0].body["messages"][0]["content"]
    assert [b["type"] for b in content] == ["text"] and "could not be shown" in content[0]["text"]


def test_judge_model_option_picks_the_judges_model(judge_ctx, anthropic_fake):
    judge, ctx = judge_ctx(model="claude-haiku-4-5", judge_model="claude-opus-5-5")
    (red,) = solid_photos(ctx.run.root, {"r": (200, 30, 40)})
    judge.compare(both_orders(red, "a red bean", "a blue bean")[:1], ctx)
    assert anthropic_fake.messages_calls()[0].body["model"] == "claude-opus-5-5"
