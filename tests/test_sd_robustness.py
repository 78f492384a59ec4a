"""How the trainer fails and what it records: a full disk or running out of memory stops
the run with a message saying what to change and the last good checkpoint kept (and
training again continues from it); the curves also go to TensorBoard."""

import errno

import pytest
import torch
from safetensors.torch import load_file
from support.sd import module_ctx, recipe, train_set


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("sdrobust")
    ctx = module_ctx(root, base="tiny")
    return {"ctx": ctx, "family": ctx.family(), "base": ctx.base(), "data": train_set(ctx.run.path("prep"))}


def train(env, out, config, **kw):
    return env["family"].train(env["base"], env["data"], config, out, env["ctx"], **kw)


@pytest.mark.slow
def test_disk_full_at_a_checkpoint_keeps_the_last_one_and_training_again_continues(env, tmp_path, monkeypatch):
    from clood_candy_plugins.sd import checkpoint

    real = checkpoint.save_file

    def full_at_step_4(tensors, filename, *args, **kwargs):
        if "step-4" in str(filename):
            raise OSError(errno.ENOSPC, "No space left on device", str(filename))
        return real(tensors, filename, *args, **kwargs)

    config = recipe(steps=6, checkpoint_every=2, validate_every=2)
    monkeypatch.setattr(checkpoint, "save_file", full_at_step_4)
    stopped = train(env, tmp_path / "full", config)
    assert stopped.error.startswith("disk full while saving the checkpoint at step 4")
    assert "kept the last good checkpoint (step 2)" in stopped.error
    assert stopped.steps_done == 2 and stopped.lora is None
    # No half-written step-4 (nor its temporary folder) next to the good one.
    assert [p.name for p in (tmp_path / "full" / "checkpoints").iterdir()] == ["step-2"]
    assert "disk full" in (tmp_path / "full" / "log.jsonl").read_text().splitlines()[-1]

    monkeypatch.undo()  # space freed
    resumed = train(env, tmp_path / "full", config)
    direct = train(env, tmp_path / "direct", config)
    assert resumed.error is None and resumed.train_loss == direct.train_loss
    a, b = load_file(resumed.lora), load_file(direct.lora)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_disk_full_at_the_final_lora_says_so(env, tmp_path, monkeypatch):
    from clood_candy_plugins.sd import lora

    real = lora.write_bytes

    def full_for_the_final_file(path, data):
        if not path.name.startswith("step-"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(lora, "write_bytes", full_for_the_final_file)
    outcome = train(env, tmp_path / "final", recipe(steps=2, checkpoint_every=2, validate_every=2))
    assert outcome.error.startswith("disk full while saving the LoRA at step 2") and outcome.lora is None
    assert outcome.checkpoints and outcome.checkpoints[-1].endswith("step-2.safetensors")


@pytest.mark.parametrize("error, changes, not_suggested", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), {}, []),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8589934592 bytes"),
     {"gradient_checkpointing": True, "mixed_precision": "bf16"}, ["gradient_checkpointing", "mixed_precision"]),
])
def test_out_of_memory_names_the_settings_to_change(env, tmp_path, monkeypatch, error, changes, not_suggested):
    from clood_candy_plugins.sd import objective as step_module  # where a training step asks the UNet

    real, calls = step_module.predict, []

    def runs_out_at_step_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(step_module, "predict", runs_out_at_step_3)
    outcome = train(env, tmp_path / "oom", recipe(steps=4, checkpoint_every=2, validate_every=2, **changes))
    assert outcome.error.startswith("out of memory on cpu at step 3")
    expected = {"batch_size", "resolution", "gradient_checkpointing", "mixed_precision", "adamw8bit"} - set(not_suggested)
    assert all(word in outcome.error for word in expected), outcome.error
    assert not any(word in outcome.error for word in not_suggested)
    assert "kept the last good checkpoint (step 2)" in outcome.error and outcome.steps_done == 2
    assert outcome.lora is None and outcome.train_loss[-1][0] == 2


def test_tensorboard_gets_the_curves_and_a_continued_run_replaces_what_lay_past_its_checkpoint(env, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = recipe(steps=4, checkpoint_every=2, validate_every=2)

    def dies_at_3(step, loss):
        if step == 3:
            raise KeyboardInterrupt  # like Ctrl-C after step 3 was logged, before its checkpoint

    with pytest.raises(KeyboardInterrupt):
        train(env, tmp_path / "tb", config, on_step=dies_at_3)
    outcome = train(env, tmp_path / "tb", config)
    events = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    events.Reload()
    scalars = lambda tag: [(e.step, e.value) for e in events.Scalars(tag)]  # noqa: E731
    assert [s for s, _ in scalars("loss/train")] == [1, 2, 3, 4]
    for tag, expected in (("loss/train", outcome.train_loss), ("loss/validation", outcome.val_loss)):
        got = scalars(tag)
        assert [s for s, _ in got] == [s for s, _ in expected]
        assert [v for _, v in got] == pytest.approx([v for _, v in expected])
    assert [s for s, _ in scalars("learning_rate")] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("where, module, function, call, expected, kept", [
    ("validation", "objective", "denoising_errors", 2, "at step 2", 1),  # call 1 is the step-0 validation
    ("a sample", "train", "_sample", 1, "at step 2", 1),
    ("the final LoRA's check", "verify", "verify_lora", 2, "saving the final LoRA", 2),  # call 1: checkpoint 2
])
def test_out_of_memory_outside_a_step_stops_with_the_settings_and_the_last_checkpoint(
        env, tmp_path, monkeypatch, where, module, function, call, expected, kept):
    import importlib

    target = importlib.import_module(f"clood_candy_plugins.sd.{module}")
    real, calls = getattr(target, function), []

    def runs_out(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8589934592 bytes")
        return real(*args, **kwargs)

    monkeypatch.setattr(target, function, runs_out)
    config = recipe(steps=2, checkpoint_every=1 if kept == 1 else 2, validate_every=2, sample_every=2)
    outcome = train(env, tmp_path / "oom", config)
    assert outcome.error.startswith(f"out of memory on cpu {expected} in config t: lower batch_size"), where
    assert outcome.error.endswith(f"kept the last good checkpoint (step {kept})") and outcome.lora is None
    assert outcome.checkpoints[-1].endswith(f"step-{kept}.safetensors")
