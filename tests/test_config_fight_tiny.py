"""The training-config fight on the tiny base, with real training: an absurd learning rate
and a zero-step config lose, and successive halving picks the config that is best when
every config is trained to the end."""

import math

import pytest
from support.sd import module_ctx, recipe, train_set

from clood_candy.fight.halving import successive_halving


@pytest.mark.slow
def test_halving_on_real_training_matches_training_everything_to_the_end(tmp_path):
    ctx = module_ctx(tmp_path, base="tiny")
    family, base, data = ctx.family(), ctx.base(), train_set(tmp_path / "photos")
    grid = [recipe(name="absurd-lr", learning_rate=50.0), recipe(name="zero-steps", steps=0),
            recipe(name="lr-1e-2"), recipe(name="lr-3e-3", learning_rate=3e-3)]

    def train_to(root):
        def run(config, steps):
            outcome = family.train(base, data, config, root / config.name, ctx, max_steps=steps)
            if outcome.error:
                raise RuntimeError(outcome.error)
            return outcome.final_val_loss if outcome.final_val_loss is not None else math.inf
        return run

    fight = successive_halving(grid, [10, 20], 2, train_to(tmp_path / "fight"))
    assert fight.winner not in ("absurd-lr", "zero-steps")
    assert set(fight.rounds[0].survivors).isdisjoint({"absurd-lr", "zero-steps"})

    full = {c.name: (train_to(tmp_path / "full")(c, c.steps) if c.name not in fight.failures else math.inf)
            for c in grid if c.name != "absurd-lr"}
    assert fight.winner == min(full, key=full.get), (fight.rounds, full)


def test_when_every_config_fails_the_stage_fails_with_each_reason_and_names_no_winner(tmp_path):
    import json

    from clood_candy import fsutil
    from clood_candy.fight.halving import AllConfigsFailed
    from clood_candy.pipeline import train_stage

    configs = [{"name": "no-steps", "steps": 0}, {"name": "upside-down", "timestep_min": 900, "timestep_max": 100}]
    ctx = module_ctx(tmp_path, base="tiny", train={"fight": {"configs": configs, "budgets": [5, 10]}})
    dataset = ctx.run.path("dataset")
    data = train_set(dataset)
    fsutil.write_text(dataset / "metadata.jsonl", "\n".join(
        json.dumps({"file_name": item.image.rsplit("/", 1)[-1], "text": item.caption})
        for item in data.train + data.validation) + "\n")
    with pytest.raises(AllConfigsFailed) as failed:
        train_stage.run(ctx)
    assert "no-steps: " in str(failed.value) and "upside-down: " in str(failed.value)
    record = json.loads(ctx.run.path("train", "fight.json").read_text())
    assert record["winner"] is None and record["rounds"][0]["survivors"] == []
    assert set(record["failures"]) == {"no-steps", "upside-down"}
    assert not ctx.run.path("train", "outcome.json").exists()
