"""The LoRA trainer on the tiny SD1 base: validation loss falls, the saved file is kohya
form with the real alpha and loads in diffusers with no stray keys and changes the
output, training continues from checkpoints exactly, and bad recipes fail cleanly."""

import importlib.util
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from support.sd import module_ctx, recipe, train_set


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Trained in two stages (10 steps, then continued to 20), as the config fight does."""
    root = tmp_path_factory.mktemp("sdtrain")
    ctx = module_ctx(root, base="tiny")
    family, base = ctx.family(), ctx.base()
    data = train_set(ctx.run.path("prep"))
    steps = []
    first = family.train(base, data, recipe(), ctx.run.path("train", "staged"), ctx, max_steps=10,
                         on_step=lambda s, loss: steps.append(s))
    final = family.train(base, data, recipe(), ctx.run.path("train", "staged"), ctx, max_steps=20,
                         on_step=lambda s, loss: steps.append(s))
    return {"ctx": ctx, "family": family, "base": base, "data": data, "first": first, "final": final, "steps": steps}


def test_validation_loss_falls(trained):
    outcome = trained["final"]
    assert outcome.error is None, outcome.error
    assert [s for s, _ in outcome.val_loss] == [0, 10, 20]
    assert outcome.final_val_loss < 0.9 * outcome.val_loss[0][1]
    assert trained["steps"] == list(range(1, 21))  # on_step: each step once, across both calls


def test_lora_file_is_kohya_form_with_the_real_alpha(trained):
    ctx, outcome = trained["ctx"], trained["final"]
    path = ctx.run.path(outcome.lora)
    assert outcome.lora == "train/staged/candy-t.safetensors"
    tensors = load_file(str(path))
    prefixes = {k.split(".")[0] for k in tensors}
    assert prefixes and all(p.startswith("lora_unet_") for p in prefixes)
    assert {k.split(".", 1)[1] for k in tensors} == {"lora_down.weight", "lora_up.weight", "alpha"}
    assert {float(v) for k, v in tensors.items() if k.endswith(".alpha")} == {8.0}
    assert all(tensors[p + ".lora_down.weight"].shape[0] == 4 for p in prefixes)
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight" in tensors
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    assert meta["ss_network_alpha"] == "8.0" and meta["ss_network_dim"] == "4"
    # The toy's LoRA says it is the toy's: named SD1's, ComfyUI would patch a real SD1.5 and fail on every shape.
    assert meta["ss_base_model_version"] == "clood_tiny" and meta["ss_steps"] == "20"
    assert meta["modelspec.architecture"] == "clood-tiny-toy/lora" and "toy" in meta["clood_toy_base"]
    assert meta["ss_resolution"] == "(64, 64)" and meta["trigger"] == "jlybn"
    assert json.loads(meta["ss_tag_frequency"]) == {"1_jlybn": {"jlybn": 4, "jellybean": 4, "red": 1, "blue": 1,
                                                                "green": 1, "pink": 1}}
    from clood_candy_plugins.sd.lora import addnet_hash

    assert meta["sshs_model_hash"] == addnet_hash(path.read_bytes())


def test_diffusers_loads_the_file_without_stray_keys_and_it_changes_the_output(trained, tmp_path):
    from clood_candy_plugins.sd.tiny import tiny_folder
    from diffusers import StableDiffusionPipeline

    path = trained["ctx"].run.path(trained["final"].lora)
    pipe = StableDiffusionPipeline.from_pretrained(tiny_folder("tiny"), safety_checker=None, local_files_only=True)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("diffusers")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.WARNING)
    gen = torch.Generator().manual_seed(0)
    noisy, embeds = torch.randn(1, 4, 8, 8, generator=gen), torch.randn(1, 77, 32, generator=gen)
    with torch.no_grad():
        before = pipe.unet(noisy, 500, encoder_hidden_states=embeds).sample
        try:
            pipe.load_lora_weights(str(path))
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old)
        after = pipe.unet(noisy, 500, encoder_hidden_states=embeds).sample
    messages = [r.getMessage() for r in records]
    assert not [m for m in messages if "unexpected" in m.lower() and not m.startswith("No LoRA keys")], messages
    assert (after - before).abs().max() > 1e-4
    verification = trained["final"].verification
    assert verification["ok"] and verification["reproduces_trained"] and verification["diffusers_file_reproduces"]
    assert verification["a1111_unmapped"] == [] and verification["comfyui_unmapped"] == []


def test_generate_applies_the_lora_at_its_weight(trained):
    family, base, ctx = trained["family"], trained["base"], trained["ctx"]
    lora = ctx.run.path(trained["final"].lora)
    pixels = lambda **kw: np.asarray(family.generate(base, "jlybn jellybean", seed=3, steps=2, **kw), float)  # noqa: E731
    alone, off, half, full = pixels(), pixels(lora=lora, weight=0.0), pixels(lora=lora, weight=0.5), pixels(lora=lora)
    assert np.array_equal(alone, off)  # weight 0: the base alone
    assert np.abs(full - alone).max() > 0 and np.abs(half - alone).max() > 0
    assert np.array_equal(full, pixels(lora=lora, weight=1.0))  # seeded: repeatable


def test_continuing_from_a_checkpoint_equals_training_in_one_go(trained, tmp_path):
    family, base, ctx, data = trained["family"], trained["base"], trained["ctx"], trained["data"]
    direct = family.train(base, data, recipe(), tmp_path / "direct", ctx)
    staged = trained["final"]
    assert staged.train_loss == direct.train_loss
    assert staged.val_loss == direct.val_loss
    a = load_file(str(ctx.run.path(staged.lora)))
    b = load_file(direct.lora)
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line) for line in ctx.run.path("train", "staged", "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == list(range(21))
    assert {"step", "loss", "val_loss", "lr", "seconds"} <= set(log[5])


def test_checkpoints_hold_what_continuing_needs(trained):
    ctx, outcome = trained["ctx"], trained["final"]
    assert outcome.checkpoints == [f"train/staged/checkpoints/step-{n}/step-{n}.safetensors" for n in (10, 20)]
    folder = ctx.run.path("train", "staged", "checkpoints")
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no half-written checkpoint
    step = folder / "step-10"
    assert {p.name for p in step.iterdir()} >= {"adapter.safetensors", "state.pt", "meta.json", "step-10.safetensors"}
    state = torch.load(step / "state.pt", weights_only=True)
    assert state["step"] == 10 and state["optimizer"]["state"] and "rng" in state
    assert json.loads((step / "meta.json").read_text())["verification_ok"] is True
    assert trained["first"].steps_done == 10 and trained["first"].verification["ok"]


def test_asking_again_for_a_finished_budget_returns_it_without_training(trained):
    family, base, ctx, data = trained["family"], trained["base"], trained["ctx"], trained["data"]
    steps = []
    again = family.train(base, data, recipe(), ctx.run.path("train", "staged"), ctx, max_steps=20,
                         on_step=lambda s, loss: steps.append(s))
    assert steps == [] and again.val_loss == trained["final"].val_loss


def test_nan_loss_stops_cleanly(trained, tmp_path):
    family, base, ctx, data = trained["family"], trained["base"], trained["ctx"], trained["data"]
    outcome = family.train(base, data, recipe(learning_rate=1e30, checkpoint_every=1), tmp_path / "nan", ctx)
    assert outcome.error and "loss became nan" in outcome.error and "checkpoint (step 1)" in outcome.error
    assert outcome.lora is None and outcome.steps_done == 1
    assert outcome.checkpoints == [str((tmp_path / "nan/checkpoints/step-1/step-1.safetensors").resolve())]
    assert "error" in (tmp_path / "nan" / "log.jsonl").read_text().splitlines()[-1]


def test_a_step_that_breaks_the_validation_loss_is_never_checkpointed(trained, tmp_path):
    family, base, ctx, data = trained["family"], trained["base"], trained["ctx"], trained["data"]
    config = recipe(learning_rate=1e30, checkpoint_every=1, validate_every=1, lr_scheduler="constant")
    outcome = family.train(base, data, config, tmp_path / "broken", ctx)
    assert outcome.error and "validation loss became" in outcome.error and "no checkpoint was saved" in outcome.error
    assert outcome.checkpoints == [] and outcome.lora is None
    assert all(math.isfinite(v) for _, v in outcome.val_loss)
    # What a run writes is strict JSON: no NaN reaches a file another tool reads.
    for line in (tmp_path / "broken" / "log.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in log.jsonl"))


@pytest.mark.parametrize("changes, message", [
    ({"optimizer": "prodigy"}, "prodigyopt"),
    ({"prior_preservation": True, "prior_loss_weight": -1.0}, "prior_loss_weight"),
    ({"timestep_min": 900, "timestep_max": 100}, "timestep_min"),
])
def test_recipes_the_trainer_cannot_run_fail_with_a_reason(trained, tmp_path, changes, message):
    if changes.get("optimizer") == "prodigy" and importlib.util.find_spec("prodigyopt"):
        pytest.skip("prodigyopt is installed")
    outcome = trained["family"].train(trained["base"], trained["data"], recipe(**changes), tmp_path / "bad", trained["ctx"])
    assert outcome.error and message in outcome.error and outcome.lora is None


@pytest.mark.parametrize("variant, part", [("dora", "dora_scale"), ("loha", "hada_w1_a"), ("lokr", "lokr_w1")])
def test_other_adapter_kinds_save_verified_files(trained, tmp_path, variant, part):
    family, base, ctx, data = trained["family"], trained["base"], trained["ctx"], trained["data"]
    # Convolutions too (proj_in is a 1x1 conv in SD1, conv1 a 3x3 one): their shapes differ per format.
    targets = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "conv1"]
    outcome = family.train(base, data, recipe(variant=variant, steps=4, checkpoint_every=100, validate_every=4,
                                              target_modules=targets), tmp_path / variant, ctx)
    assert outcome.error is None, outcome.error
    keys = load_file(outcome.lora).keys()
    assert any(k.endswith("." + part) for k in keys)
    assert outcome.verification["ok"] and outcome.verification["reproduces_trained"]
    alone = np.asarray(family.generate(base, "jlybn", seed=1, steps=2), float)
    with_it = np.asarray(family.generate(base, "jlybn", seed=1, steps=2, lora=Path(outcome.lora)), float)
    assert np.abs(with_it - alone).max() > 0


@pytest.mark.slow
def test_sdxl_with_text_encoders_trains_and_saves_te1_te2_keys(tmp_path):
    ctx = module_ctx(tmp_path, base="tiny-sdxl")
    family, base = ctx.family(), ctx.base()
    outcome = family.train(base, train_set(tmp_path / "prep"), recipe(steps=4, checkpoint_every=100, validate_every=2,
                                                                       train_text_encoder=True), tmp_path / "xl", ctx)
    assert outcome.error is None, outcome.error
    prefixes = {k.split(".")[0].split("_text_model")[0] for k in load_file(outcome.lora) if k.startswith("lora_te")}
    assert prefixes == {"lora_te1", "lora_te2"}
    assert any(k.startswith("lora_unet_input_blocks_") for k in load_file(outcome.lora))  # kohya's SDXL naming
    assert outcome.verification["ok"], outcome.verification


@pytest.mark.parametrize("changes", [
    {"prediction_type": "v_prediction", "loss": "huber", "noise_offset": 0.1},
    {"gradient_accumulation": 2, "batch_size": 1, "repeats": 3, "lr_scheduler": "constant_with_warmup", "warmup_steps": 1},
    {"timestep_min": 200, "timestep_max": 400, "optimizer": "sgd", "snr_gamma": None},
])
def test_recipe_knobs_train_and_save(trained, tmp_path, changes):
    family, base, ctx, data = trained["family"], trained["base"], trained["ctx"], trained["data"]
    outcome = family.train(base, data, recipe(steps=2, checkpoint_every=100, validate_every=100, **changes),
                           tmp_path / "knobs", ctx)
    assert outcome.error is None, outcome.error
    assert [s for s, _ in outcome.train_loss] == [1, 2] and outcome.verification["ok"]
    with safe_open(outcome.lora, framework="pt") as handle:
        meta = handle.metadata()
    assert meta["ss_v_parameterization"] == str(changes.get("prediction_type") == "v_prediction")


def test_samples_during_training(trained, tmp_path):
    family, base, ctx, data = trained["family"], trained["base"], trained["ctx"], trained["data"]
    outcome = family.train(base, data, recipe(steps=2, sample_every=2, checkpoint_every=100), tmp_path / "s", ctx)
    log = [json.loads(line) for line in (tmp_path / "s" / "log.jsonl").read_text().splitlines()]
    assert outcome.error is None and log[-1]["sample"].endswith("samples/step-2.png")
    assert Image.open(log[-1]["sample"]).size == (64, 64)


@pytest.mark.slow
def test_compiled_training_learns_what_eager_training_learns(trained, tmp_path):
    """compile = true (torch.compile, inductor: about 100 s to compile on 2 cores the first
    time, cached after) trains the same steps to the same losses and a verified LoRA."""
    family, base, ctx, data = trained["family"], trained["base"], trained["ctx"], trained["data"]
    config = recipe(steps=3, checkpoint_every=3, validate_every=3)
    eager = family.train(base, data, config, tmp_path / "eager", ctx)
    compiled = family.train(base, data, config.model_copy(update={"compile": True}), tmp_path / "compiled", ctx)
    assert compiled.error is None and compiled.verification["ok"], compiled.error
    for ours, theirs in ((compiled.train_loss, eager.train_loss), (compiled.val_loss, eager.val_loss)):
        assert [s for s, _ in ours] == [s for s, _ in theirs]
        assert [v for _, v in ours] == pytest.approx([v for _, v in theirs], rel=1e-3)
    a, b = load_file(compiled.lora), load_file(eager.lora)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=5e-3) for k in a)


KILLED_RUN = """
import os, signal, sys
from pathlib import Path
os.environ.setdefault('CLOOD_LOAD_PLUGINS', 'builtin')
sys.path.insert(0, {tests!r})
from support.sd import module_ctx, recipe, train_set
ctx = module_ctx(Path({root!r}), base="tiny")
def die(step, loss):
    if step == 8:
        os.kill(os.getpid(), signal.SIGKILL)  # no clean-up, no atexit: like a power cut
ctx.family().train(ctx.base(), train_set(Path({root!r}) / "prep"), recipe(steps=12, checkpoint_every=5),
                   Path({root!r}) / "killed", ctx, on_step=die)
"""


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_lora(trained, tmp_path):
    import subprocess
    import sys

    script = KILLED_RUN.format(tests=str(Path(__file__).parent), root=str(tmp_path))
    died = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert died.returncode == -9, died.stderr[-2000:]
    assert [c.name for c in sorted((tmp_path / "killed" / "checkpoints").iterdir())] == ["step-5"]
    family, base, ctx = trained["family"], trained["base"], trained["ctx"]
    data = train_set(tmp_path / "prep")
    resumed = family.train(base, data, recipe(steps=12, checkpoint_every=5), tmp_path / "killed", ctx)
    direct = family.train(base, data, recipe(steps=12, checkpoint_every=5), tmp_path / "direct", ctx)
    assert resumed.train_loss == direct.train_loss and resumed.val_loss == direct.val_loss
    a, b = load_file(resumed.lora), load_file(direct.lora)
    assert all(torch.equal(a[k], b[k]) for k in a)
