"""The Flux family on the tiny Flux.1-architecture base: flow-matching training through the
shared loop (checkpoints, resume, validation), both LoRA layouts written and verified with
alpha ≠ rank, sampling with the file, and the family's checks and options."""

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from support.sd import module_ctx, recipe, train_set

from clood_candy.errors import UserError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Trained in two stages (10 steps, then continued to 20), as the config fight does."""
    root = tmp_path_factory.mktemp("fluxtrain")
    ctx = module_ctx(root, base="tiny-flux")
    family, base = ctx.family(), ctx.base()
    data = train_set(ctx.run.path("prep"))
    config = recipe(learning_rate=1e-2, snr_gamma=None)
    steps = []
    family.train(base, data, config, ctx.run.path("train", "staged"), ctx, max_steps=10,
                 on_step=lambda s, loss: steps.append(s))
    final = family.train(base, data, config, ctx.run.path("train", "staged"), ctx, max_steps=20,
                         on_step=lambda s, loss: steps.append(s))
    return {"ctx": ctx, "family": family, "base": base, "data": data, "config": config, "final": final, "steps": steps}


def test_the_tiny_flux_base_is_a_flux_pipeline(trained):
    base = trained["base"]
    assert trained["family"].name == "flux" and base.family == "flux" and base.is_toy
    assert type(base.pipe).__name__ == "FluxPipeline" and type(base.denoiser).__name__ == "FluxTransformer2DModel"
    assert base.pipe.vae.config.latent_channels == 16 and base.pipe.vae.config.shift_factor == pytest.approx(0.1159)
    # the caption budget is T5's; CLIP-L (the real CLIP BPE) has its own 75-token window beside it
    assert base.tokens("a red jellybean") == ["▁a", "▁red", "▁jellybean"] and base.token_window == 127
    (t5, t5_window, _, _), (clip, clip_window, clip_tokens, role) = base.encoder_windows()
    assert (t5, t5_window, clip, clip_window) == ("T5", 127, "CLIP-L", 75) and "pooled" in role
    assert clip_tokens("red jellybean") == ["red</w>", "jelly", "bean</w>"]


def test_flow_matching_validation_loss_falls_and_training_resumes(trained):
    outcome = trained["final"]
    assert outcome.error is None, outcome.error
    assert [s for s, _ in outcome.val_loss] == [0, 10, 20]
    assert outcome.final_val_loss < 0.95 * outcome.val_loss[0][1]
    assert trained["steps"] == list(range(1, 21))  # the second call continued from the step-10 checkpoint


def test_the_kohya_file_fuses_qkv_with_the_real_alpha(trained):
    path = trained["ctx"].run.path(trained["final"].lora)
    tensors = load_file(str(path))
    qkv = "lora_unet_double_blocks_0_img_attn_qkv"
    assert tensors[f"{qkv}.lora_down.weight"].shape == (12, 32)  # q, k, v downs of rank 4 stacked
    assert float(tensors[f"{qkv}.alpha"]) == 24.0  # 3 × alpha 8: alpha/rank stays 8/4
    assert float(tensors["lora_unet_double_blocks_0_img_attn_proj.alpha"]) == 8.0
    assert float(tensors["lora_unet_single_blocks_0_linear1.alpha"]) == 32.0  # q, k, v and the MLP input
    assert {k.split(".")[0] for k in tensors} == {
        f"lora_unet_double_blocks_0_{m}" for m in ("img_attn_qkv", "txt_attn_qkv", "img_attn_proj", "txt_attn_proj",
                                                   "img_mlp_0", "img_mlp_2", "txt_mlp_0", "txt_mlp_2")
    } | {"lora_unet_single_blocks_0_linear1", "lora_unet_single_blocks_0_linear2"}
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    assert meta["ss_base_model_version"] == "clood_tiny-flux" and meta["ss_timestep_sampling"] == "flux_shift"
    assert meta["ss_network_alpha"] == "8.0" and meta["ss_network_dim"] == "4"


def test_the_diffusers_file_carries_its_strength_in_the_weights(trained):
    outcome, ctx = trained["final"], trained["ctx"]
    tensors = load_file(str(ctx.run.path(outcome.lora_diffusers)))
    assert tensors and all(k.startswith("transformer.") for k in tensors)
    assert not any(k.endswith(".alpha") for k in tensors)
    kohya = load_file(str(ctx.run.path(outcome.lora)))
    # the attention output projection is one module in both layouts: its up is scaled by alpha/rank = 2
    up = tensors["transformer.transformer_blocks.0.attn.to_out.0.lora_B.weight"]
    assert torch.allclose(up, 2 * kohya["lora_unet_double_blocks_0_img_attn_proj.lora_up.weight"])


def test_both_files_reproduce_the_trained_transformer(trained):
    v = trained["final"].verification
    assert v["ok"], v
    assert v["reproduces_trained"] and v["diffusers_file_reproduces"] and v["weights_reproduce_trained"]
    assert v["output_changed"] and v["unexpected_keys"] == [] and v["missing_keys"] == []
    assert any("full-size" in n for n in v["notes"]) and any("Automatic1111" in n for n in v["notes"])


def test_a_wrong_alpha_is_caught(trained, monkeypatch, tmp_path):
    from clood_candy_plugins.flow import keymap

    real = keymap.to_kohya

    def halved(state, alpha, transformer):  # every file written with half the trained alpha
        return real(state, alpha / 2, transformer)

    monkeypatch.setattr(keymap, "to_kohya", halved)
    t = trained
    outcome = t["family"].train(t["base"], t["data"], recipe(steps=2, checkpoint_every=100, validate_every=100,
                                                             snr_gamma=None), tmp_path / "alpha", t["ctx"])
    v = outcome.verification
    assert not v["ok"] and not v["alpha_matches_config"] and not v["reproduces_trained"], v
    assert "alpha" in outcome.error


def test_samples_change_with_the_lora_weight(trained):
    t = trained
    lora = t["ctx"].run.path(t["final"].lora)
    plain = t["family"].generate(t["base"], "a photo of jlybn jellybean", seed=3)
    off = t["family"].generate(t["base"], "a photo of jlybn jellybean", seed=3, lora=lora, weight=0.0)
    on = t["family"].generate(t["base"], "a photo of jlybn jellybean", seed=3, lora=lora, weight=1.0)
    assert plain.size == (64, 64) and plain.tobytes() == off.tobytes() and on.tobytes() != plain.tobytes()


def test_flux_refuses_what_it_cannot_train_yet(trained, tmp_path):
    t = trained
    for change, words in (({"train_text_encoder": True}, "train_text_encoder is not available for Flux"),
                          ({"variant": "loha"}, "variant loha is not available for Flux")):
        outcome = t["family"].train(t["base"], t["data"], recipe(steps=2, **change), tmp_path / words[:5], t["ctx"])
        assert outcome.error.startswith(words) and outcome.lora is None


def test_resolution_must_fit_the_patches(trained):
    assert "multiple of 16" in trained["family"].check_resolution(72, buckets=False)
    assert trained["family"].check_resolution(80, buckets=False) is None


def test_timestep_sampling_choices(trained):
    from clood_candy_plugins.flow.objective import FlowMatching, FlowSettings

    def sigmas(tokens=256, **options):
        flow = FlowMatching(FlowSettings.from_options(options), trained["base"].scheduler_config, True)
        return flow.draw_sigmas(torch.Generator().manual_seed(0), 4000, tokens)

    uniform, mid, shifted = sigmas(timestep_sampling="uniform"), sigmas(timestep_sampling="sigmoid"), \
        sigmas(timestep_sampling="shift", discrete_flow_shift=3.0)
    assert abs(float(uniform.mean()) - 0.5) < 0.02 and float(uniform.std()) > 0.27  # flat: std 0.29
    assert abs(float(mid.median()) - 0.5) < 0.02 and float(mid.std()) < 0.25  # gathered mid-way
    assert float(shifted.median()) == pytest.approx(0.75, abs=0.02)  # 3·0.5 / (1 + 2·0.5)
    # Flux's own shift grows with the image's token count: a 1024² image is noised harder than a 256² one
    assert float(sigmas(4096, timestep_sampling="flux_shift").median()) > float(sigmas(256, timestep_sampling="flux_shift").median()) + 0.1
    with pytest.raises(UserError, match="timestep_sampling must be one of"):
        FlowSettings.from_options({"timestep_sampling": "cosine"})


def test_memory_savers_train_and_verify(trained, tmp_path):
    """Gradient checkpointing and bf16 autocast, as a real Flux run on a 24 GB GPU needs them."""
    t = trained
    config = recipe(steps=4, checkpoint_every=100, validate_every=2, snr_gamma=None, gradient_checkpointing=True,
                    mixed_precision="bf16")
    outcome = t["family"].train(t["base"], t["data"], config, tmp_path / "savers", t["ctx"])
    assert outcome.error is None and outcome.verification["ok"], outcome.error or outcome.verification
    assert all(loss == loss for _, loss in outcome.train_loss)  # finite: no NaN under bf16
