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


def test_ray_without_the_extra_is_one_line_naming_it_before_any_model_loads(tmp_path, monkeypatch):
    import sys

    from click.testing import CliRunner

    from clood_candy.cli import cli

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    config = write(tmp_path, '[fight]\nexecutor = "ray"\n')
    result = CliRunner().invoke(cli, ["dogfood", "candy", "--demo", "--config", str(config),
                                      "--run-dir", str(tmp_path / "run"), "-q"])
    assert result.exit_code != 0
    assert "pip install 'clood-candy[ray]'" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run" / "train").exists()


class _Cluster:
    """What RayRounds asks of Ray about the cluster: two CPU-only nodes of 4 CPUs."""

    def __init__(self):
        self.nodes_alive = [{"Alive": True, "Resources": {"CPU": 4.0, "memory": 16 * 1024**3}}] * 2

    def is_initialized(self):
        return True

    def nodes(self):
        return self.nodes_alive

    def cluster_resources(self):
        return {"CPU": 8.0}


def test_a_trial_no_node_could_take_is_one_line_naming_what_it_asked(make_ctx, monkeypatch):
    from clood_candy.fight import ray_rounds

    monkeypatch.setattr(ray_rounds, "import_ray", _Cluster)
    ctx = make_ctx(base="tiny", fight={"executor": "ray", "gpus_per_trial": 1})
    with pytest.raises(UserError, match=r"no node of the Ray cluster \(2 node\(s\), 8 CPU, 0 GPU\).*1 GPU"):
        ray_rounds.RayRounds(ctx, None)._resources()
    ctx = make_ctx(base="tiny", fight={"executor": "ray", "cpus_per_trial": 2, "memory_per_trial": 8})
    assert ray_rounds.RayRounds(ctx, None)._resources() == {"num_cpus": 2, "num_gpus": 0.0, "memory": 8 * 1024**3}
