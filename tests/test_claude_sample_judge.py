"""The ``claude-samples`` pick judge against the local fake Messages API (real SDK, real HTTP).

The fake plays the judge: with ``answer`` set it decides from the images it was sent, so a
test can see that the reference photos and both candidates' samples reach it in the order
the rubric promises."""

import json

import pytest
from fakes.anthropic_server import FakeAnthropic
from PIL import Image

from clood_candy.pick.panel import judge_sheet
from clood_candy.records import PickCandidate, PickImage, PickPrompt, PickSheet

KEY = "sk-ant-test-samples-SECRET"
FAST = {"backoff_initial": 0.01, "backoff_max": 0.05, "max_attempts": 3, "malformed_retries": 1, "timeout": 5}
RED = (200, 30, 40)  # the user's candy: the held-out photos are this red
COLOURS = {"good": RED, "meh": (200, 110, 40), "bad": (40, 80, 200)}  # the candidates' samples, nearest first
PROMPTS = [PickPrompt(text="jlybn, jellybean, red beans on white", kind="held-out"),
           PickPrompt(text="jlybn, jellybean, on a sandy beach", kind="novel", change="background: on a sandy beach")]


@pytest.fixture
def judge_ctx(make_ctx, anthropic_fake, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)

    def make(**options):
        ctx = make_ctx(plugins={"claude": {"base_url": anthropic_fake.url, **FAST, **options}})
        return ctx.registry.get("judge", "claude-samples"), ctx

    return make


def _png(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), rgb).save(path)


def make_sheet(root, colours=COLOURS) -> PickSheet:
    """Two held-out photos of red beans, one training photo, and each candidate's samples of
    one held-out caption and one novel prompt, in its own flat colour."""
    held = [root / "prep" / "held1.png", root / "prep" / "held2.png"]
    for path in held:
        _png(path, RED)
    _png(root / "prep" / "train1.png", RED)
    prompts = [PROMPTS[0].model_copy(update={"photo": str(held[0])}), PROMPTS[1]]
    names = list(colours)
    candidates = [PickCandidate(name=n, config="c", step=10 * (i + 1), lora=f"train/{n}.safetensors",
                                final=i == len(names) - 1) for i, n in enumerate(names)]
    images = []
    for name, rgb in colours.items():
        for p in range(len(prompts)):
            rel = f"train/pick/{name}/p{p + 1}-seed1.png"
            _png(root / rel, rgb)
            images.append(PickImage(candidate=name, prompt=p, seed=1, image=rel))
    return PickSheet(candidates=candidates, prompts=prompts, seeds=[1], images=images,
                     held_out=[str(p) for p in held], training=[str(root / "prep" / "train1.png")],
                     trigger="jlybn", class_word="jellybean")


def sections(body) -> dict[str, list[tuple[float, ...]]]:
    """Each image's mean colour, by the part of the request it was shown in."""
    found: dict[str, list[tuple[float, ...]]] = {"reference": [], "first": [], "second": []}
    current = None
    for block in body["messages"][0]["content"]:
        if block["type"] == "text":
            current = next((name for name in found if f"<{name}_" in block["text"]), current)
        elif block["type"] == "image":
            found[current].append(FakeAnthropic.image_mean(block))
    return found


def nearest_candidate(rgb) -> str:
    return min(COLOURS, key=lambda n: sum((a - b) ** 2 for a, b in zip(COLOURS[n], rgb)))


def shown_order(call) -> tuple[str, str]:
    parts = sections(call.body)
    return nearest_candidate(parts["first"][0]), nearest_candidate(parts["second"][0])


def closest_to_the_photos(body, tool):
    """A judge with taste and no position bias: the samples nearer the photos' colour win."""
    parts = sections(body)
    ref = [sum(c[k] for c in parts["reference"]) / len(parts["reference"]) for k in range(3)]

    def distance(side):
        return sum(sum((a - b) ** 2 for a, b in zip(rgb, ref)) for rgb in parts[side]) / len(parts[side])

    first, second = distance("first"), distance("second")
    winner = "first" if first < second - 1 else "second" if second < first - 1 else "tie"
    return {"winner": winner, "reason": "its beans have the photos' colour"}


def test_both_orders_are_asked_and_the_preferred_candidate_scores_highest(judge_ctx, anthropic_fake):
    anthropic_fake.answer = closest_to_the_photos
    judge, ctx = judge_ctx()
    scores = judge.score_samples(make_sheet(ctx.run.root), ctx)

    calls = anthropic_fake.messages_calls()
    assert len(calls) == 6  # three pairs, each in both orders
    assert sorted(shown_order(c) for c in calls) == sorted(
        (a, b) for a in COLOURS for b in COLOURS if a != b)
    assert {n: s.score for n, s in scores.items()} == {"good": 1.0, "meh": 0.5, "bad": 0.0}
    assert scores["good"].reason == "won 2 of 2 comparisons"
    assert scores["bad"].evidence["vs good"] == "lost: its beans have the photos' colour"
    assert all(KEY in (c.headers.get("x-api-key") or c.headers.get("authorization", "")) for c in calls)

    # What one request shows: the photos, then the first sheet, the second, the rubric.
    content = calls[0].body["messages"][0]["content"]
    parts = sections(calls[0].body)
    assert len(parts["reference"]) == 2 and len(parts["first"]) == len(parts["second"]) == 2
    texts = [b["text"] for b in content if b["type"] == "text"]
    assert texts[0] == "<reference_photos>\n2 reference photos of the user's candy, which training never saw:"
    labels = [t for t in texts if t.startswith("Sample ")]
    assert labels[0] == ("Sample 1: held-out prompt \u201cjlybn, jellybean, red beans on white\u201d, seed 1 "
                         "(the caption of reference photo 1)")
    assert labels[1].startswith("Sample 2: novel prompt \u201cjlybn, jellybean, on a sandy beach\u201d")
    assert labels[2:] == labels[:2]  # the second sheet: the same prompts and seeds, in the same order
    rubric = content[-1]["text"]
    assert "`jlybn`" in rubric and "**jellybean**" in rubric and "copy" in rubric and "record_verdict" in rubric
    assert calls[0].body["tools"][0]["name"] == "record_verdict"
    usage = json.loads(ctx.run.path("cache", "claude", "sample-judge-usage.json").read_text())
    assert usage["comparisons"] == 6 and usage["failures"] == 0 and usage["cost_usd"] > 0


def test_an_answer_that_follows_the_order_is_a_tie_and_the_flips_are_counted(judge_ctx, anthropic_fake):
    anthropic_fake.answer = lambda body, tool: {"winner": "first", "reason": "the first one looks nicer"}
    judge, ctx = judge_ctx()
    scores = judge.score_samples(make_sheet(ctx.run.root), ctx)

    assert len(anthropic_fake.messages_calls()) == 6
    assert {s.score for s in scores.values()} == {0.5} and set(scores) == set(COLOURS)
    assert scores["good"].reason == "won 0 of 2 comparisons, tied 2 (2 flips counted as a tie)"
    assert scores["meh"].evidence["flips"] == 2 and scores["meh"].evidence["ties"] == 2
    assert scores["meh"].evidence["vs bad"].startswith("flip, a tie: the first one looks nicer")


def test_a_failed_pair_is_no_vote_is_not_cached_and_is_asked_again(judge_ctx, anthropic_fake):
    anthropic_fake.answer = closest_to_the_photos
    anthropic_fake.script("500", "500", "500")  # one worker: the first request, good before meh, fails every attempt
    judge, ctx = judge_ctx(max_concurrency=1)
    sheet = make_sheet(ctx.run.root)
    scores = judge.score_samples(sheet, ctx)

    calls = anthropic_fake.messages_calls()
    assert len(calls) == 3 + 5 and [shown_order(c) for c in calls[:3]] == [("good", "meh")] * 3
    assert {n: s.score for n, s in scores.items()} == {"good": 1.0, "meh": 1.0, "bad": 0.0}
    for name in ("good", "meh"):  # the pair has no verdict: not a tie, not counted as judged
        assert scores[name].evidence["ties"] == 0 and scores[name].evidence["judged"] == 1
        assert scores[name].evidence["unvoted"] == 1
    assert "vs meh" not in scores["good"].evidence
    assert scores["good"].reason == "won 1 of 1 comparison; 1 pair not judged (the request failed)"
    usage = json.loads(ctx.run.path("cache", "claude", "sample-judge-usage.json").read_text())
    assert usage["failures"] == 1

    judge_again, ctx_again = judge_ctx(max_concurrency=1)  # the next run on the same folder
    again = judge_again.score_samples(sheet, ctx_again)
    asked = anthropic_fake.messages_calls()[len(calls):]
    assert [shown_order(c) for c in asked] == [("good", "meh")]  # only the failed order; the rest was cached
    assert {n: s.score for n, s in again.items()} == {"good": 1.0, "meh": 0.5, "bad": 0.0}


def test_a_second_run_asks_nothing(judge_ctx, anthropic_fake):
    anthropic_fake.answer = closest_to_the_photos
    judge, ctx = judge_ctx()
    sheet = make_sheet(ctx.run.root)
    first = judge.score_samples(sheet, ctx)
    assert len(anthropic_fake.messages_calls()) == 6

    judge_again, ctx_again = judge_ctx()
    assert judge_again.score_samples(sheet, ctx_again) == first
    assert len(anthropic_fake.messages_calls()) == 6
    cached = list(ctx.run.path("cache", "claude").glob("*.json"))
    assert len([p for p in cached if not p.name.endswith("usage.json")]) == 6
    assert all(KEY not in p.read_text() for p in cached)


def test_new_sample_pixels_are_a_new_question(judge_ctx, anthropic_fake):
    anthropic_fake.answer = closest_to_the_photos
    judge, ctx = judge_ctx()
    sheet = make_sheet(ctx.run.root)
    judge.score_samples(sheet, ctx)
    _png(ctx.run.root / "train/pick/bad/p2-seed1.png", (40, 170, 60))  # resampled: same path, new image
    judge.score_samples(sheet, ctx)
    assert len(anthropic_fake.messages_calls()) == 6 + 4  # the two pairs with bad, both orders


def test_without_a_key_it_sits_out_with_one_line(make_ctx, anthropic_fake, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    ctx = make_ctx(plugins={"claude": {"base_url": anthropic_fake.url}})
    judge = ctx.registry.get("judge", "claude-samples")
    reason = judge.unavailable(ctx)
    assert reason == "no API key: set ANTHROPIC_API_KEY to use Claude"
    sheet = make_sheet(ctx.run.root)
    result = judge_sheet(ctx, sheet, {"claude-samples": 1.0, "subject-colour": 1.0})
    assert result.sat_out == {"claude-samples": reason}
    assert "claude-samples" not in result.scores and result.winner == "good"  # the others still pick
    assert anthropic_fake.messages_calls() == []


def test_every_request_failing_makes_it_sit_out_saying_why(judge_ctx, anthropic_fake):
    anthropic_fake.default = "401"
    judge, ctx = judge_ctx()
    assert judge.unavailable(ctx) is None
    result = judge_sheet(ctx, make_sheet(ctx.run.root), {"claude-samples": 1.0, "subject-colour": 1.0})
    assert result.sat_out["claude-samples"].startswith(
        "failed: RuntimeError: claude-samples: every comparison failed (HTTP 401")
    assert KEY not in result.sat_out["claude-samples"]


def test_it_is_not_a_default_judge(make_ctx):
    assert "claude-samples" not in make_ctx().config.train.pick.judges  # it costs money: asked for by name only
