"""[fight]: where fights run. Local stays the default; a mistake is one line naming the key."""

import pytest

from clood_candy.config import load_config
from clood_candy.errors import UserError


def write(tmp_path, text):
    path = tmp_path / "clood.toml"
    path.write_text(text)
    return path


def test_fights_run_locally_unless_told_otherwise():
    placement = load_config(None).fight
    assert placement.executor == "local" and placement.ray_address == ""
    assert placement.gpus_per_trial is None and placement.cpus_per_trial == 1.0


def test_a_cluster_and_its_resources_per_trial_come_from_the_fight_table(tmp_path):
    config = load_config(write(tmp_path, '[fight]\nexecutor = "ray"\nray_address = "ray://head:10001"\n'
                                         "gpus_per_trial = 1\ncpus_per_trial = 4\nmemory_per_trial = 24\n"))
    assert config.fight.executor == "ray" and config.fight.ray_address == "ray://head:10001"
    assert (config.fight.gpus_per_trial, config.fight.cpus_per_trial, config.fight.memory_per_trial) == (1, 4, 24)


def test_an_unknown_executor_is_named(tmp_path):
    with pytest.raises(UserError, match=r"'fight.executor'"):
        load_config(write(tmp_path, '[fight]\nexecutor = "slurm"\n'))
