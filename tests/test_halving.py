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


def _verdict(order):
    """A panel record that ranks ``order`` best first (as the pick's panel would)."""
    from clood_candy.pick.panel import decide
    from clood_candy.records import PickCandidate, PickSheet, Score

    sheet = PickSheet(candidates=[PickCandidate(name=n, config=n, step=20, lora=f"{n}.safetensors") for n in order],
                      prompts=[], seeds=[1], images=[], held_out=[], training=[], trigger="t", class_word="bean")
    scores = {"judge": {n: Score(score=-i, reason="planted") for i, n in enumerate(order)}}
    return list(order), decide(sheet, {"judge": 1.0}, scores, {}, {}, [])


def test_the_panel_decides_every_round_after_the_first_and_the_record_says_so():
    loss = {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4}  # validation loss would keep a, then a
    asked = []

    def rank_round(budget, trained):
        asked.append((budget, list(trained)))
        return _verdict(sorted(trained, key=lambda n: -loss[n]))  # the panel prefers the worst loss

    configs = [TrainConfig(name=n, steps=100) for n in "abcd"]
    result = successive_halving(configs, [10, 20], 2, lambda c, s: loss[c.name], rank_round=rank_round)
    assert asked == [(20, ["a", "b"])]  # not the first round: its survivors are given by loss
    assert result.rounds[0].survivors == ["a", "b"] and result.rounds[0].decided_by == "validation-loss"
    assert result.rounds[1].decided_by == "panel" and result.rounds[1].panel.winner == "b"
    assert result.winner == "b" and result.judge == "panel"


def test_a_round_the_panel_cannot_judge_and_the_first_round_are_decided_by_loss():
    asked = []

    def cannot(budget, trained):
        asked.append(budget)
        return None

    configs = [TrainConfig(name=n, steps=100) for n in "abcd"]
    result = successive_halving(configs, [10, 20], 2, lambda c, s: {"a": 0.1, "b": 0.2}.get(c.name, 0.5),
                                rank_round=cannot)
    assert asked == [20] and result.winner == "a" and result.rounds[1].decided_by == "validation-loss"
    asked.clear()  # one round only: it is the first, and loss decides it without asking
    successive_halving(configs[:2], [10], 2, lambda c, s: 0.1, rank_round=cannot)
    assert asked == []
