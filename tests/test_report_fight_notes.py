"""What the report says about how far to trust a fight: judges that answered unusably,
and a config fight decided on rounds much shorter than the run it chose for."""

import re

from clood_candy_plugins.report import section_captions, section_training
from clood_candy_plugins.report.rundata import RunData

from clood_candy import fsutil
from clood_candy.records import (
    ConfigFightResult,
    FighterStanding,
    FightResult,
    HalvingRound,
    JudgeFailures,
    TrainConfig,
    TrainOutcome,
)


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub("<[^>]+>", " ", html))


def test_a_judge_that_failed_on_some_photos_is_named_in_the_judges_table(make_ctx):
    ctx = make_ctx(base="tiny")
    fight = FightResult(
        fighters=["a", "b"], judges={"rubric": 1.0, "claude": 1.0}, items={"p1": [], "p2": []},
        standings=[FighterStanding(fighter="a", win_rate=0.5), FighterStanding(fighter="b", win_rate=0.5)],
        judge_failures={"claude": JudgeFailures(failed=3, note="judge claude: 3 comparisons failed (first: HTTP 529)")},
        winner="a", clear=False, verdict="a leads")
    fsutil.write_json(ctx.run.path("caption", "fight.json"), fight)
    text = _text(section_captions.build(RunData(ctx.run.root, ctx)).body)
    assert "3 comparisons failed (first: HTTP 529)" in text
    row = next(r for r in re.findall(r"<tr>(.*?)</tr>", section_captions.build(RunData(ctx.run.root, ctx)).body)
               if "claude" in r)
    assert "failed" in row  # on the judge's own row, not lost in a footnote


def test_a_fight_on_short_rounds_says_it_favours_fast_learners(make_ctx):
    ctx = make_ctx(base="tiny")
    configs = [TrainConfig(name="default", steps=400), TrainConfig(name="lr-x3", learning_rate=3e-4, steps=400)]
    fight = ConfigFightResult(configs=configs, winner="lr-x3", rounds=[
        HalvingRound(budget=10, scores={"default": 0.9, "lr-x3": 0.8}, survivors=["lr-x3", "default"]),
        HalvingRound(budget=20, scores={"lr-x3": 0.7, "default": 0.75}, survivors=["lr-x3"])])
    fsutil.write_json(ctx.run.path("train", "fight.json"), fight)
    fsutil.write_json(ctx.run.path("train", "outcome.json"),
                      TrainOutcome(config=configs[1], steps_done=400, final_val_loss=0.5, seconds=3.0))
    text = _text(section_training.build(RunData(ctx.run.root, ctx)).body)
    assert "5 % of the 400-step run" in text
    assert "highest learning rate" in text


def test_a_fight_as_long_as_the_run_raises_no_short_horizon_warning(make_ctx):
    ctx = make_ctx(base="tiny")
    configs = [TrainConfig(name="default", steps=40), TrainConfig(name="lr-x3", learning_rate=3e-4, steps=40)]
    fight = ConfigFightResult(configs=configs, winner="lr-x3", rounds=[
        HalvingRound(budget=20, scores={"default": 0.9, "lr-x3": 0.8}, survivors=["lr-x3"])])
    fsutil.write_json(ctx.run.path("train", "fight.json"), fight)
    fsutil.write_json(ctx.run.path("train", "outcome.json"),
                      TrainOutcome(config=configs[1], steps_done=40, final_val_loss=0.5, seconds=3.0))
    assert "highest learning rate" not in _text(section_training.build(RunData(ctx.run.root, ctx)).body)


def test_a_fight_on_ray_says_where_each_trial_ran_and_which_one_ray_ran_again(make_ctx):
    from clood_candy.records import TrialRun

    ctx = make_ctx(base="tiny")
    configs = [TrainConfig(name="default", steps=40), TrainConfig(name="lr-x3", learning_rate=3e-4, steps=40)]
    ran = dict(node_id="n1", pid=4242, waited_s=0.4, seconds=12.5)
    fight = ConfigFightResult(configs=configs, winner="lr-x3", executor="ray", rounds=[
        HalvingRound(budget=20, scores={"default": 0.9, "lr-x3": 0.8}, survivors=["lr-x3"], trials={
            "default": TrialRun(node="gpu-box (10.0.0.2)", device="GPU 0", resumed_from=0, **ran),
            "lr-x3": TrialRun(node="gpu-box (10.0.0.2)", device="GPU 1", attempts=2, resumed_from=10, **ran)})])
    fsutil.write_json(ctx.run.path("train", "fight.json"), fight)
    text = _text(section_training.build(RunData(ctx.run.root, ctx)).body)
    assert "The fight ran on Ray" in text
    row = next(r for r in re.findall(r"<tr>(.*?)</tr>", section_training.build(RunData(ctx.run.root, ctx)).body)
               if "GPU 1" in r)
    assert "lr-x3" in row and "lost 1×" in row and "from step 10" in row and "gpu-box" in row
    local = fight.model_copy(update={"executor": "local"})
    fsutil.write_json(ctx.run.path("train", "fight.json"), local)
    assert "The fight ran on Ray" not in _text(section_training.build(RunData(ctx.run.root, ctx)).body)
