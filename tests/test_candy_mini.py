"""candy-mini, the shipped learned base: it fits the size budget, loads as ``--base candy-mini``,
and its pictures follow the prompt (read by vision-stats' pixel analysis, not a model).

Thresholds from issue 14; the figures are printed (pytest -s) and in BENCHMARKS.md."""

import json

import pytest

from clood_candy_plugins import candy_mini
from clood_candy_plugins.pretrain import evaluate

pytestmark = pytest.mark.skipif(candy_mini.folder("base") is None, reason="this checkout has no candy-mini weights")


@pytest.fixture(scope="module")
def base():
    return evaluate.load("candy-mini")


def test_shipped_weights_fit_the_budget_and_say_how_to_rebuild_them():
    size = sum(p.stat().st_size for part in ("base", "clip") for p in candy_mini.folder(part).rglob("*") if p.is_file())
    assert size <= 30e6
    record = json.loads((candy_mini.folder("pretraining") / "record.json").read_text())
    assert record["command"].startswith("clood pretrain candy-mini") and "seed" in record["recipe"]
    assert {"clip", "vae", "unet"} <= set(record["stages"])
    assert len(list((candy_mini.folder("pretraining") / "snapshots").glob("step_*.png"))) >= 3


def test_loads_as_a_learned_miniature_not_a_toy(base):
    assert base.kind == "miniature" and not base.is_toy and base.clood_made
    assert base.resolution == 64 and base.family == "sd1"


def test_it_draws_at_its_own_guidance_unless_the_run_says_otherwise(base, monkeypatch):
    assert base.guidance_scale == candy_mini.GUIDANCE == 4.0  # SD's usual 7 turns its yellow lime
    seen = []
    monkeypatch.setattr(type(base.pipe), "__call__", lambda pipe, **kw: seen.append(kw["guidance_scale"]) or
                        type("Out", (), {"images": [None]})())
    base.draw("jellybean, red", seed=0)
    base.draw("jellybean, red", seed=0, guidance=7.0)  # [sample] guidance_scale, when set, wins
    assert seen == [4.0, 7.0]


@pytest.fixture(scope="module")
def colour(base):
    found = evaluate.colour_control(base)
    print(f"colour control: {found['share']:.0%} of {found['n']}; misses: {found['misses']}")
    return found


@pytest.fixture(scope="module")
def background(base):
    found = evaluate.background_control(base)
    print(f"background control: {found['share']:.0%} of {found['n']}; misses: {found['misses']}")
    return found


@pytest.mark.slow
def test_the_prompt_steers_the_bean_colour_well_above_chance(colour):
    assert colour["share"] >= 0.30  # chance: 1 in 8; the shipped weights at their guidance 4: 75 %


# Issue 14's goal, at candy-mini's own guidance 4 (candy_mini.GUIDANCE): 75 % on these seeds
# (66 % on seeds 4-7; at SD's usual 7: 69 and 53 %, yellow turning lime). BENCHMARKS.md.
@pytest.mark.slow
def test_goal_the_prompt_controls_the_bean_colour(colour):
    assert colour["share"] >= 0.70


@pytest.mark.slow
def test_goal_the_prompt_controls_the_background(background):
    assert background["share"] >= 0.70


def test_the_vae_rebuilds_shots_it_never_saw(base):
    psnr = evaluate.vae_psnr(base.pipe.vae)
    print(f"VAE PSNR on fresh shots: {psnr:.1f} dB")
    assert psnr >= 26.0


SEEN = ("wrong colour", "wrong background", "generic")  # mistakes a picture can show


@pytest.mark.slow
def test_judges_on_candy_mini_prefer_the_right_caption(tmp_path, make_ctx):
    """The agreement test of test_judge_agreement.py, on the learned base and its CLIP."""
    from support.rubric import studio_pairs

    from clood_candy.fight.engine import Panel, run_fight

    items = studio_pairs(tmp_path / "studio")
    ctx = make_ctx(base="candy-mini")
    figures = {}
    for judge in ("diffusion-likelihood", "clip"):
        result = run_fight(items, Panel({judge: (ctx.registry.get("judge", judge), 1.0)}, {}), ctx)
        won = {i.id for i in items if result.per_item_winners.get(i.id) == "right"
               and any(v.outcome == "a" for v in result.items[i.id])}
        kinds = sorted({i.id.split("|")[1] for i in items})
        figures[judge] = {k: sum(1 for i in items if i.id.endswith("|" + k) and i.id in won)
                          / sum(1 for i in items if i.id.endswith("|" + k)) for k in kinds}
        seen = [i for i in items if i.id.split("|")[1] in SEEN]
        figures[judge]["seen"] = sum(1 for i in seen if i.id in won) / len(seen)
        figures[judge]["all"] = len(won) / len(items)
    print("agreement on candy-mini:", json.dumps(figures, indent=1))
    # measured 80.2 % (77 of 96; issue 14's goal 80 %), 0.78 leaves one pair for thread-count rounding
    assert figures["diffusion-likelihood"]["seen"] >= 0.78
    assert figures["clip"]["seen"] >= 0.85  # measured 95.8 %
