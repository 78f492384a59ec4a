"""Successive halving with a fake trainer whose losses we choose."""

import math

from clood_candy.fight.halving import default_grid, successive_halving
from clood_candy.records import TrainConfig


def test_best_config_survives_and_rounds_are_recorded():
    final_loss = {"a": 0.5, "b": 0.3, "c": 0.9, "d": 0.4}
    trained: list[tuple[str, int]] = []

    def train_to(config, steps):
        trained.append((config.name, steps))
        return final_loss[config.name] + 1.0 / steps

    configs = [TrainConfig(name=n, steps=100) for n in "abcd"]
    result = successive_halving(configs, [10, 20, 40], 2, train_to)
    assert result.winner == "b"
    assert [r.budget for r in result.rounds] == [10, 20]
    assert result.rounds[0].survivors == ["b", "d"]
    assert ("c", 20) not in trained


def test_a_crashing_or_nan_config_loses():
    def train_to(config, steps):
        if config.name == "crash":
            raise RuntimeError("CUDA out of memory")
        return math.nan if config.name == "nan" else 0.5

    configs = [TrainConfig(name=n) for n in ("crash", "nan", "ok")]
    result = successive_halving(configs, [5], 3, train_to)
    assert result.winner == "ok"
    assert "out of memory" in result.failures["crash"]
    assert result.rounds[0].scores["nan"] is None


def test_default_grid_has_unique_names_around_the_defaults():
    grid = default_grid(TrainConfig(learning_rate=1e-4, rank=8, alpha=8))
    assert len({c.name for c in grid}) == len(grid) >= 3
    rates = sorted(c.learning_rate for c in grid)
    assert rates[0] < 1e-4 < rates[-1]
