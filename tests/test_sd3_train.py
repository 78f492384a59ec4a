"""The SD3 family on the tiny SD3-architecture base: flow-matching training through the
shared loop, a LoRA in the diffusers layout ComfyUI's SD3 loader reads (alpha folded in)
plus diffusers' own file, both verified with alpha ≠ rank; and the layout's keys on a
real-size SD3.5-medium architecture."""

import re

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from support.sd import module_ctx, recipe, train_set

from clood_candy_plugins.flow.sd3 import TARGETS


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd3train")
    ctx = module_ctx(root, base="tiny-sd3")
    family, base = ctx.family(), ctx.base()
    data = train_set(ctx.run.path("prep"))
    outcome = family.train(base, data, recipe(learning_rate=1e-2, snr_gamma=None), ctx.run.path("train", "t"), ctx)
    return {"ctx": ctx, "family": family, "base": base, "outcome": outcome}


def test_the_tiny_sd3_base_is_an_sd3_pipeline(trained):
    base = trained["base"]
    assert trained["family"].name == "sd3" and base.is_toy and base.prediction_type == "flow_matching"
    assert type(base.pipe).__name__ == "StableDiffusion3Pipeline" and base.flow.timestep_sampling == "logit_normal"
    assert base.tokens_t5("a red jellybean") == ["▁a", "▁red", "▁jellybean"]


def test_validation_loss_falls_and_both_files_verify(trained):
    outcome = trained["outcome"]
    assert outcome.error is None, outcome.error
    assert outcome.final_val_loss < 0.95 * outcome.val_loss[0][1]
    v = outcome.verification
    assert v["ok"] and v["reproduces_trained"] and v["diffusers_file_reproduces"] and v["weights_reproduce_trained"], v
    assert v["load_warnings"] == []


def test_the_main_file_has_diffusers_keys_with_alpha_folded_in(trained):
    ctx, outcome = trained["ctx"], trained["outcome"]
    main = load_file(str(ctx.run.path(outcome.lora)))
    plain = load_file(str(ctx.run.path(outcome.lora_diffusers)))
    key = "transformer.transformer_blocks.0.attn.to_q.lora_B.weight"
    assert main.keys() == plain.keys() and key in main and not any(k.endswith(".alpha") for k in main)
    assert torch.allclose(main[key], 2 * plain[key])  # alpha 8 / rank 4 in the weights
    assert "transformer.transformer_blocks.1.attn.to_add_out.lora_A.weight" not in main  # the last block has none
    with safe_open(str(ctx.run.path(outcome.lora)), framework="pt") as handle:
        meta = handle.metadata()
    assert meta["ss_base_model_version"] == "clood_tiny-sd3" and meta["ss_timestep_sampling"] == "logit_normal"


def test_real_size_sd35_medium_keys_name_its_layers():
    from accelerate import init_empty_weights
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline

    with init_empty_weights():  # SD3.5-medium's configuration
        model = SD3Transformer2DModel(sample_size=128, patch_size=2, in_channels=16, num_layers=24,
                                      attention_head_dim=64, num_attention_heads=24, joint_attention_dim=4096,
                                      caption_projection_dim=1536, pooled_projection_dim=2048, out_channels=16,
                                      pos_embed_max_size=384, dual_attention_layers=tuple(range(13)), qk_norm="rms_norm")
    layers = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and re.fullmatch(TARGETS["full"], n)}
    # 23 joint blocks × 12 + the last, context-pre-only one × 9 (no context output or feed-forward)
    # + SD3.5's second attention (q, k, v, out) in 13 blocks
    assert len(layers) == 23 * 12 + 9 + 13 * 4
    state = {}
    for name, layer in layers.items():
        state[f"transformer.{name}.lora_A.weight"] = torch.zeros(1, layer.in_features)
        state[f"transformer.{name}.lora_B.weight"] = torch.zeros(layer.out_features, 1)
    read = StableDiffusion3Pipeline.lora_state_dict(state)
    read = read[0] if isinstance(read, tuple) else read
    assert read.keys() == state.keys()
    for key, value in read.items():
        layer = model.get_submodule(key.removeprefix("transformer.").rsplit(".", 2)[0])
        want = (1, layer.in_features) if ".lora_A." in key else (layer.out_features, 1)
        assert tuple(value.shape) == want, key
