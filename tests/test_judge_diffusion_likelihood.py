"""The diffusion-likelihood judge on the tiny base. With random weights its preferences
mean nothing, so these tests hold the mechanics: registration, scores that are the
negative denoising error, determinism, and batched == one at a time."""

import numpy as np
import pytest
from PIL import Image

from clood_candy.records import Candidate, FightItem, Photo


def make_items(ctx, count=2):
    rng = np.random.default_rng(1)
    items = []
    for i in range(count):
        rel = f"prep/photo{i}.png"
        path = ctx.run.path(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
        photo = Photo(id=f"p{i}", source=f"photo{i}.jpg", image=rel, width=64, height=64)
        items.append(FightItem(id=f"p{i}", photo=photo, candidates=[
            Candidate(fighter="plain", text="jlybn, a red jellybean on a white table"),
            Candidate(fighter="other", text="a photograph of a city skyline at night"),
        ]))
    return items


@pytest.fixture
def judge_ctx(make_ctx):
    ctx = make_ctx(base="tiny")
    return ctx, ctx.registry.get("judge", "diffusion-likelihood")


def test_scores_are_the_negative_denoising_error_and_repeat_exactly(judge_ctx):
    ctx, judge = judge_ctx
    assert not judge.pairwise
    items = make_items(ctx)
    first, second = judge.score(items, ctx), judge.score(items, ctx)
    assert first == second
    error = ctx.base().denoising_error([ctx.run.path(items[0].photo.image)], [items[0].candidates[1].text],
                                       seed=ctx.config.seed)[0]
    got = first["p0"]["other"]
    assert got.score == pytest.approx(-error, rel=1e-5)
    assert f"{error:.4f}" in got.reason and "toy model" in got.reason
    assert set(first) == {"p0", "p1"} and set(first["p1"]) == {"plain", "other"}
    assert first["p0"]["plain"].score != first["p0"]["other"].score  # the caption reaches the model


def test_batched_equals_one_item_at_a_time(judge_ctx):
    ctx, judge = judge_ctx
    items = make_items(ctx, 3)
    together = judge.score(items, ctx)
    for item in items:
        alone = judge.score([item], ctx)[item.id]
        for fighter, score in alone.items():
            assert together[item.id][fighter].score == pytest.approx(score.score, rel=1e-4)


def test_a_different_seed_draws_different_noise(make_ctx):
    a, b = make_ctx(base="tiny", seed=0), make_ctx(base="tiny", seed=5)
    judge = a.registry.get("judge", "diffusion-likelihood")
    items = make_items(a)
    b.run = a.run
    assert judge.score(items, a)["p0"]["plain"].score != judge.score(items, b)["p0"]["plain"].score


def test_its_recorded_scores_are_not_reused_under_another_seed(make_ctx):
    judge = make_ctx(base="tiny").registry.get("judge", "diffusion-likelihood")
    same = judge.identity(make_ctx(base="tiny", seed=0)) == judge.identity(make_ctx(base="tiny", seed=0))
    assert same and judge.identity(make_ctx(base="tiny", seed=0)) != judge.identity(make_ctx(base="tiny", seed=5))


def test_items_without_photos_are_skipped_and_long_captions_say_they_were_cut(judge_ctx):
    ctx, judge = judge_ctx
    items = make_items(ctx, 1)
    items[0].candidates.append(Candidate(fighter="long", text=", ".join(["red jellybean"] * 60)))
    no_photo = FightItem(id="nophoto", photo=None, candidates=[Candidate(fighter="plain", text="x")])
    scores = judge.score([no_photo, *items], ctx)
    assert "nophoto" not in scores
    assert "first 75 tokens" in scores["p0"]["long"].reason
    assert judge.score([no_photo], ctx) == {}
