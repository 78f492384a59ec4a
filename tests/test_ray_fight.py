"""The config fight on a local Ray instance with 2 CPUs (two trials at a time): the same
answers as the local executor, where each trial ran, and a trial whose worker is killed
mid-rung resumes from its checkpoint on a new one."""

import json
import os
import signal
import threading
import time

import pytest
import ray
from support.sd import module_ctx, train_set

from clood_candy import fsutil
from clood_candy.config import DEMO_OVERRIDES, deep_merge
from clood_candy.pipeline.config_fight import fight_configs
from clood_candy.pipeline.planning import planned_recipes
from clood_candy.pipeline.train_stage import load_trainset
from clood_candy_plugins.sd import checkpoint as ckpt

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]  # one Ray instance at a time; Ray starts in a few seconds; each fight trains the tiny base for tens of seconds


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def demo_ctx(root, **overrides):
    """The demo's settings (its default grid of four configs, rungs at 20 and 40 steps) on a
    dataset of bean photos, as the caption stage would leave it."""
    ctx = module_ctx(root, **deep_merge(DEMO_OVERRIDES, overrides))
    dataset = ctx.run.path("dataset")
    data = train_set(dataset)
    fsutil.write_text(dataset / "metadata.jsonl", "\n".join(
        json.dumps({"file_name": item.image.rsplit("/", 1)[-1], "text": item.caption})
        for item in data.train + data.validation) + "\n")
    return ctx


def run_fight(ctx):
    data = load_trainset(ctx)
    _, configs, budgets = planned_recipes(ctx, data)
    fight_configs(ctx, data, configs, budgets)
    return json.loads(ctx.run.path("train", "fight.json").read_text())


def test_ray_names_the_same_winner_and_survivors_as_local_and_says_where_each_trial_ran(tmp_path, local_ray):
    local = run_fight(demo_ctx(tmp_path / "local"))
    on_ray = run_fight(demo_ctx(tmp_path / "ray", fight={"executor": "ray"}))
    assert on_ray["executor"] == "ray" and local["executor"] == "local"
    assert on_ray["winner"] == local["winner"]
    assert [r["survivors"] for r in on_ray["rounds"]] == [r["survivors"] for r in local["rounds"]]
    assert [r["budget"] for r in on_ray["rounds"]] == [20, 40]
    for ray_round, local_round in zip(on_ray["rounds"], local["rounds"]):
        assert ray_round["scores"] == pytest.approx(local_round["scores"], rel=1e-3)
    first, second = on_ray["rounds"]
    assert set(first["trials"]) == set(first["scores"]) and len(first["trials"]) == 4
    assert all(t["device"] == "CPU" and t["pid"] != os.getpid() and t["waited_s"] >= 0 and t["attempts"] == 1
               for t in first["trials"].values())
    assert len({t["pid"] for t in first["trials"].values()}) >= 2  # two workers took the four trials
    assert {t["resumed_from"] for t in first["trials"].values()} == {0}
    # The second rung's trials continued from the first rung's checkpoints at step 20.
    assert {n: t["resumed_from"] for n, t in second["trials"].items()} == dict.fromkeys(first["survivors"], 20)
    assert local["rounds"][0]["trials"] == {}


def _kill_mid_rung(out_dir, rung_steps, killed):
    """Wait for the trial's worker to pass a checkpoint inside the rung, freeze it, note
    the newest checkpoint (the step a retry must continue from) and kill it by its pid."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        trial = out_dir / "trial.json"
        saved = ckpt.checkpoints(out_dir)
        if trial.is_file() and saved and 0 < saved[-1].step < rung_steps:
            pid = json.loads(trial.read_text())["pid"]
            os.kill(pid, signal.SIGSTOP)
            newest = ckpt.checkpoints(out_dir)[-1].step
            if newest >= rung_steps:  # it finished the rung in the meantime: no mid-rung kill to test
                os.kill(pid, signal.SIGCONT)
                killed["missed"] = newest
                return
            os.kill(pid, signal.SIGKILL)
            killed.update(pid=pid, step=newest)
            return
        time.sleep(0.05)


def test_a_trial_whose_worker_is_killed_mid_rung_resumes_from_its_checkpoint(tmp_path, local_ray):
    configs = [{"name": "steady", "learning_rate": 3e-3}, {"name": "quick", "learning_rate": 1e-2}]
    ctx = demo_ctx(tmp_path, fight={"executor": "ray", "max_retries": 2},
                   train={"defaults": {"checkpoint_every": 10},
                          "fight": {"configs": configs, "budgets": [40, 60]}})
    killed: dict = {}
    killer = threading.Thread(target=_kill_mid_rung, args=(ctx.run.path("train", "fight", "steady"), 40, killed))
    killer.start()
    try:
        fight = run_fight(ctx)
    finally:
        killer.join()
    assert "missed" not in killed, f"the trial reached step {killed.get('missed')} before it could be killed"
    assert killed["step"] in (10, 20, 30)
    trial = fight["rounds"][0]["trials"]["steady"]
    assert trial["attempts"] == 2 and trial["pid"] != killed["pid"]
    assert trial["resumed_from"] == killed["step"]
    assert fight["rounds"][0]["trials"]["quick"]["attempts"] == 1
    assert fight["winner"] in ("steady", "quick") and "steady" not in fight["failures"]
    assert fight["rounds"][0]["scores"]["steady"] is not None
