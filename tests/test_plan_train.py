"""The train stage trains with the plan's choices where the user made none, plans from the
photos that survived prep, and a resumed run tells the user's settings from defaults."""

import json

import pytest
from click.testing import CliRunner
from PIL import Image

from clood_candy.cli import cli
from clood_candy.records import TrainItem, TrainSet


def trainset(tmp_path, train=30, validation=5):
    item = TrainItem(image=str(tmp_path / "x.png"), caption="jlybn, jellybean")
    return TrainSet(train=[item] * train, validation=[item] * validation, trigger="jlybn", class_word="jellybean",
                    resolution=64)


def test_the_train_stage_fills_what_the_user_left_unset(make_ctx, tmp_path):
    from clood_candy.pipeline.planning import planned_recipes

    ctx = make_ctx(base="tiny", train={"defaults": {"rank": 4}})
    plan, configs, budgets = planned_recipes(ctx, trainset(tmp_path))
    assert [c.name for c in configs] == ["default", "lr-x3", "lr-div3", "rank-x2"]
    default = configs[0]
    assert default.steps == 22 * 30 and default.lr_scheduler == "cosine" and default.warmup_steps > 0
    assert default.rank == 4 and configs[3].rank == 8  # the user's rank, and the grid around it
    assert budgets == plan.fight.budgets == [round(660 / 8), round(660 / 4)]
    written = json.loads(ctx.run.path("train", "plan.json").read_text())
    assert written["training_photos"] == 30


def test_own_fight_configs_keep_their_settings_and_get_the_plans(make_ctx, tmp_path):
    from clood_candy.pipeline.planning import planned_recipes

    ctx = make_ctx(base="tiny", train={"fight": {"configs": [{"name": "fast", "learning_rate": 1e-3},
                                                             {"name": "short", "steps": 50}],
                                                 "budgets": [5, 10]}})
    _, configs, budgets = planned_recipes(ctx, trainset(tmp_path))
    fast, short = configs
    assert fast.learning_rate == 1e-3 and fast.steps == 660
    assert short.steps == 50 and short.lr_scheduler == "cosine"
    # counted in steps, the plan's cadence follows the config's own length
    assert fast.warmup_steps == 33 and short.warmup_steps == round(33 * 50 / 660)
    assert short.checkpoint_every <= 50 and short.validate_every <= 50
    assert budgets == [5, 10]


def test_own_fight_configs_inherit_the_users_defaults(make_ctx, tmp_path):
    """A fighter that names only a learning rate trains with the rank, cadence and schedule
    the user set in [train.defaults], not the built-in ones."""
    from clood_candy.pipeline.planning import planned_recipes

    ctx = make_ctx(base="tiny", train={"defaults": {"rank": 4, "checkpoint_every": 10, "lr_scheduler": "constant"},
                                       "fight": {"configs": [{"name": "fast", "learning_rate": 1e-3},
                                                             {"name": "wide", "rank": 16}], "budgets": [5, 10]}})
    _, (fast, wide), _ = planned_recipes(ctx, trainset(tmp_path))
    assert (fast.rank, fast.checkpoint_every, fast.lr_scheduler, fast.learning_rate) == (4, 10, "constant", 1e-3)
    assert wide.rank == 16 and wide.checkpoint_every == 10 and wide.learning_rate == ctx.config.train.defaults.learning_rate


def test_a_resumed_run_still_knows_what_the_user_set(tmp_path):
    from clood_candy.config import load_config, reload_config
    from clood_candy.runstore import RunStore

    config = load_config(None, {"base": "tiny", "train": {"defaults": {"steps": 77}}})
    run = RunStore.create(tmp_path / "run", "candy", config.model_dump(mode="json"), None, demo=False,
                          flags={"base": "tiny"}, config_set=config.model_dump(mode="json", exclude_unset=True))
    again, _ = reload_config(RunStore.open(tmp_path / "run").state)
    assert again.train.defaults.model_fields_set == {"steps"} and again.train.defaults.steps == 77
    assert again.model_dump() == config.model_dump()
    # a run recorded before config_set existed: every recorded value counts as set
    run.state.config_set = None
    old, _ = reload_config(run.state)
    assert "rank" in old.train.defaults.model_fields_set


def test_dogfood_prints_the_plan_before_any_stage(tmp_path, monkeypatch):
    from clood_candy_plugins.sd.family import SDFamily

    monkeypatch.setattr(SDFamily, "load", lambda self, base, ctx: (_ for _ in ()).throw(AssertionError("loaded")))
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (96, 96), (200, 30 * i, 40)).save(folder / f"b{i}.png")
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["dogfood", "candy", str(folder), "--base", "tiny", "--stages", "train",
                                      "--run-dir", str(run)])
    assert "has no dataset yet" in result.stderr  # the train stage then stops: no prep was run
    assert "Plan: 3 photos" in result.stderr and "Warning: 3 photos" in result.stderr
    assert json.loads((run / "plan.json").read_text())["photos"] == 3


@pytest.mark.slow
def test_the_demo_plan_is_the_demos_own(demo_run):
    plan = json.loads((demo_run / "train" / "plan.json").read_text())
    steps = next(c for c in plan["choices"] if c["key"] == "train.defaults.steps")
    assert steps["value"] == 80 and steps["set_by_user"]
    assert plan["fight"]["budgets"] == [20, 40]
    fight = json.loads((demo_run / "train" / "fight.json").read_text())
    assert [r["budget"] for r in fight["rounds"]] == [20, 40]
    assert all(c["lr_scheduler"] == "constant" and c["steps"] == 80 for c in fight["configs"])
