"""Training in two processes on the CPU (accelerate launch → torchrun → gloo): the run
writes one verified LoRA, one log and its checkpoints, and two processes with batch 1
train what one process with batch 2 trains."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support.sd import module_ctx, recipe, train_set

from clood_candy.config import load_config
from clood_candy.records import TrainConfig, TrainSet
from clood_candy.runstore import RunStore


def free_port() -> int:
    with socket.socket() as s:  # other test runs on this machine may hold accelerate's default port
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_cpu_processes_train_like_one_with_twice_the_batch(tmp_path):
    run = RunStore.create(tmp_path / "run", "t", load_config(None, {"base": "tiny"}).model_dump(mode="json"), None,
                          demo=False)
    data = train_set(tmp_path / "prep")
    (tmp_path / "trainset.json").write_text(data.model_dump_json())
    config = recipe(name="two", steps=4, batch_size=1, checkpoint_every=2, validate_every=2)
    (tmp_path / "recipe.json").write_text(config.model_dump_json())
    launched = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
         "-m", "clood_candy_plugins.sd.launch", "--run", str(run.root), "--recipe", str(tmp_path / "recipe.json"),
         "--trainset", str(tmp_path / "trainset.json"), "-q"],
        capture_output=True, text=True, timeout=120)
    assert launched.returncode == 0, launched.stderr[-3000:]
    printed = json.loads(launched.stdout)  # the main process alone prints the outcome
    assert printed["error"] is None and printed["verification"]["ok"]
    assert printed["lora"] == "train/fight/two/candy-two.safetensors"
    out = run.path("train", "fight", "two")
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [0, 1, 2, 3, 4]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2", "step-4"]

    ctx = module_ctx(tmp_path / "single", base="tiny")
    one = ctx.family().train(ctx.base(), TrainSet.model_validate_json((tmp_path / "trainset.json").read_text()),
                             TrainConfig.model_validate_json((tmp_path / "recipe.json").read_text()).model_copy(
                                 update={"batch_size": 2}), tmp_path / "single" / "out", ctx)
    # The same photos, noise and timesteps per step, split over the processes: the losses
    # agree to float rounding, the weights to what Adam makes of rounding-level gradients.
    for ours, theirs in ((printed["train_loss"], one.train_loss), (printed["val_loss"], one.val_loss)):
        assert [s for s, _ in ours] == [s for s, _ in theirs]
        assert [v for _, v in ours] == pytest.approx([v for _, v in theirs], rel=1e-5)
    a, b = load_file(str(run.path(printed["lora"]))), load_file(one.lora)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-3) for k in a)
    assert max(float(a[k].abs().max()) for k in a if k.endswith("lora_up.weight")) > 1e-2  # it did learn


FLAKY_VALIDATION = """
import os, sys
from clood_candy_plugins.sd import objective
real, calls = objective.denoising_errors, []

def second_validation_runs_out_in_process_1(*args, **kwargs):
    calls.append(1)
    if os.environ["RANK"] == "1" and len(calls) == 2:
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8589934592 bytes")
    return real(*args, **kwargs)

objective.denoising_errors = second_validation_runs_out_in_process_1
from clood_candy_plugins.sd.launch import main
sys.exit(main())
"""


@pytest.mark.slow
def test_memory_running_out_in_one_process_outside_a_step_stops_both_at_the_same_step(tmp_path):
    run = RunStore.create(tmp_path / "run", "t", load_config(None, {"base": "tiny"}).model_dump(mode="json"), None,
                          demo=False)
    (tmp_path / "trainset.json").write_text(train_set(tmp_path / "prep").model_dump_json())
    (tmp_path / "recipe.json").write_text(
        recipe(name="two", steps=4, batch_size=1, checkpoint_every=1, validate_every=2).model_dump_json())
    (tmp_path / "flaky.py").write_text(FLAKY_VALIDATION)
    launched = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
         str(tmp_path / "flaky.py"), "--run", str(run.root), "--recipe", str(tmp_path / "recipe.json"),
         "--trainset", str(tmp_path / "trainset.json"), "-q"],
        capture_output=True, text=True, timeout=120)
    # Process 0's validation went fine; it hears of process 1's failure in the same all-reduce.
    assert launched.returncode == 1, launched.stderr[-3000:]
    printed = json.loads(launched.stdout)
    assert printed["error"].startswith("out of memory on cpu at step 2 in config two")
    assert printed["error"].endswith("kept the last good checkpoint (step 1)") and printed["steps_done"] == 1
    out = run.path("train", "fight", "two")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-1"]
    assert "out of memory" in json.loads((out / "log.jsonl").read_text().splitlines()[-1])["error"]


def test_the_launch_entry_point_trains_a_config_of_the_run_on_its_dataset(tmp_path, capsys):
    from clood_candy_plugins.sd.launch import main

    defaults = {"steps": 2, "rank": 4, "alpha": 4.0, "batch_size": 2, "checkpoint_every": 2, "validate_every": 2}
    config = load_config(None, {"base": "tiny", "train": {"defaults": defaults}})
    run = RunStore.create(tmp_path / "run", "t", config.model_dump(mode="json"), None, demo=False)
    dataset = run.path("dataset")
    data = train_set(dataset)  # what the caption stage leaves: images + metadata.jsonl
    (dataset / "metadata.jsonl").write_text("".join(
        json.dumps({"file_name": Path(i.image).name, "text": i.caption}) + "\n" for i in data.train + data.validation))
    assert main(["--run", str(run.root), "--config", "nope", "-q"]) == 2
    assert "no config named 'nope'" in capsys.readouterr().err
    assert main(["--run", str(run.root), "--config", "default", "-q"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["error"] is None and printed["steps_done"] == 2
    assert printed["lora"] == "train/fight/default/candy-default.safetensors" and run.path(printed["lora"]).is_file()
