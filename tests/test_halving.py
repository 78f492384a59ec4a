"""Successive halving with a fake trainer whose losses we choose."""

import math

import pytest

from clood_candy.fight.halving import AllConfigsFailed, default_grid, successive_halving
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


def test_failed_configs_never_survive_even_when_few_are_left():
    def train_to(config, steps):
        if config.name in ("a", "b", "c"):
            raise RuntimeError(f"{config.name} broke")
        return 0.7

    configs = [TrainConfig(name=n, steps=100) for n in "abcd"]
    result = successive_halving(configs, [10, 20], 2, train_to)
    # ceil(4 / 2) = 2 places, but only d trained: d goes on alone and wins.
    assert result.rounds[0].survivors == ["d"]
    assert result.winner == "d"
    assert set(result.failures) == {"a", "b", "c"}


def test_when_every_config_fails_there_is_no_winner_and_the_error_names_each_reason():
    def train_to(config, steps):
        if config.name == "nan":
            return math.nan
        raise RuntimeError(f"Adapter trouble in {config.name}")

    configs = [TrainConfig(name=n, steps=100) for n in ("kohya", "dora", "nan")]
    with pytest.raises(AllConfigsFailed) as caught:
        successive_halving(configs, [10, 20], 2, train_to)
    message = str(caught.value)
    assert "every training config failed" in message
    assert "kohya: RuntimeError: Adapter trouble in kohya" in message
    assert "dora: RuntimeError: Adapter trouble in dora" in message
    assert "nan: validation loss was nan" in message
    assert [r.survivors for r in caught.value.rounds] == [[]]
