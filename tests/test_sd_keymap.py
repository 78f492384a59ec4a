"""Module names across diffusers, the original LDM code and kohya files, on the REAL
SD1.5 / SDXL layouts (built on the meta device from the shipped configs: no weights)."""

import pytest
from clood_candy_plugins.sd import keymap


def _meta_unet(family):
    from importlib import resources

    from accelerate import init_empty_weights
    from clood_candy_plugins.sd.loading import CONFIG_NAMES
    from diffusers import UNet2DConditionModel

    folder = resources.files("clood_candy_plugins.sd") / "configs" / CONFIG_NAMES[family] / "unet"
    with init_empty_weights():
        return UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(folder)))


@pytest.fixture(scope="module")
def sd15():
    return _meta_unet("sd1")


@pytest.fixture(scope="module")
def sdxl():
    return _meta_unet("sdxl")


@pytest.mark.parametrize("diffusers_name, ldm_name", [
    ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", "input_blocks.1.1.transformer_blocks.0.attn1.to_q"),
    ("down_blocks.2.attentions.1.proj_in", "input_blocks.8.1.proj_in"),
    ("down_blocks.2.downsamplers.0.conv", "input_blocks.9.0.op"),
    ("down_blocks.3.resnets.1.conv2", "input_blocks.11.0.out_layers.3"),
    ("mid_block.attentions.0.transformer_blocks.0.attn2.to_k", "middle_block.1.transformer_blocks.0.attn2.to_k"),
    ("mid_block.resnets.1.time_emb_proj", "middle_block.2.emb_layers.1"),
    ("up_blocks.0.upsamplers.0.conv", "output_blocks.2.1.conv"),
    ("up_blocks.1.upsamplers.0.conv", "output_blocks.5.2.conv"),
    ("up_blocks.3.attentions.2.transformer_blocks.0.ff.net.2", "output_blocks.11.1.transformer_blocks.0.ff.net.2"),
    ("up_blocks.1.resnets.0.conv_shortcut", "output_blocks.3.0.skip_connection"),
    ("conv_in", "input_blocks.0.0"),
    ("time_embedding.linear_2", "time_embed.2"),
])
def test_sd15_names_map_to_the_original_checkpoint_names(sd15, diffusers_name, ldm_name):
    assert keymap.unet_to_ldm(diffusers_name, sd15.config) == ldm_name
    assert diffusers_name in dict(sd15.named_modules())  # a real module of SD1.5's UNet


@pytest.mark.parametrize("diffusers_name, ldm_name", [
    ("down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k", "input_blocks.4.1.transformer_blocks.1.attn2.to_k"),
    ("down_blocks.2.attentions.1.transformer_blocks.9.attn1.to_out.0", "input_blocks.8.1.transformer_blocks.9.attn1.to_out.0"),
    ("up_blocks.0.attentions.2.transformer_blocks.9.ff.net.2", "output_blocks.2.1.transformer_blocks.9.ff.net.2"),
    ("up_blocks.0.upsamplers.0.conv", "output_blocks.2.2.conv"),
    ("up_blocks.2.resnets.2.conv1", "output_blocks.8.0.in_layers.2"),
    ("add_embedding.linear_1", "label_emb.0.0"),
])
def test_sdxl_names_map_to_the_original_checkpoint_names(sdxl, diffusers_name, ldm_name):
    assert keymap.unet_to_ldm(diffusers_name, sdxl.config) == ldm_name


def test_sdxl_kohya_names_round_trip_through_diffusers_own_converter(sdxl):
    """Our diffusers→LDM mapping, undone by diffusers' independent SGM→diffusers code."""
    from diffusers.loaders.lora_conversion_utils import (
        _convert_unet_lora_key,
        _maybe_map_sgm_blocks_to_diffusers,
    )

    modules = [n for n, m in sdxl.named_modules() if n.endswith(("to_q", "to_k", "to_v", "to_out.0", "proj_in"))]
    keys = {keymap.kohya_prefix("unet", n, "sdxl", sdxl.config) + ".lora_down.weight": n for n in modules}
    assert all(k.startswith("lora_unet_input_blocks_") or k.startswith(("lora_unet_middle_block_", "lora_unet_output_blocks_"))
               for k in keys)
    mapped = _maybe_map_sgm_blocks_to_diffusers(dict.fromkeys(keys, None), sdxl.config)
    back = {_convert_unet_lora_key(k).replace(".processor", "").replace("_lora.down.weight", "").replace(".lora.down.weight", "")
            .replace("to_out_lora", "to_out.0") for k in mapped}
    back = {b.replace(".to_out", ".to_out.0") if b.endswith(".to_out") else b for b in back}
    assert back == set(keys.values())


def test_a1111_and_comfyui_rules_accept_sd15_kohya_keys_and_reject_wrong_ones(sd15):
    modules = [n for n, _ in sd15.named_modules() if n.endswith(("to_q", "to_k", "to_v", "to_out.0", "proj_out", "conv1"))]
    prefixes = [keymap.kohya_prefix("unet", n, "sd1", sd15.config) for n in modules]
    layers = keymap.a1111_layer_names(sd15, {}, "sd1")
    comfy = keymap.comfy_key_map(sd15, {}, "sd1")
    assert all(keymap.a1111_resolves(p, layers) for p in prefixes)
    assert all(p in comfy for p in prefixes)
    wrong = ["lora_unet_down_blocks_7_attentions_0_proj_in", "lora_unet_down_blocks_0_attentions_0_proj_sideways"]
    assert not any(keymap.a1111_resolves(p, layers) for p in wrong)
    assert not any(p in comfy for p in wrong)
    bad = keymap.unmapped_keys([prefixes[0] + ".lora_down.weight", prefixes[0] + ".lora_sideways.weight",
                                wrong[0] + ".alpha"], accepts=lambda p: p in comfy)
    assert bad == [prefixes[0] + ".lora_sideways.weight", wrong[0] + ".alpha"]


def test_text_encoder_prefixes_follow_each_tool():
    assert keymap.kohya_prefix("text_encoder", "encoder.layers.3.self_attn.q_proj", "sd1") == \
        "lora_te_text_model_encoder_layers_3_self_attn_q_proj"
    # transformers 4 spelled the same module with a text_model. level
    assert keymap.kohya_prefix("text_encoder", "text_model.encoder.layers.3.mlp.fc1", "sd1") == \
        "lora_te_text_model_encoder_layers_3_mlp_fc1"
    assert keymap.kohya_prefix("text_encoder", "encoder.layers.0.self_attn.k_proj", "sdxl").startswith("lora_te1_")
    assert keymap.kohya_prefix("text_encoder_2", "encoder.layers.0.self_attn.k_proj", "sdxl").startswith("lora_te2_")
    # A1111 sends SDXL's second encoder to OpenCLIP's fused attention
    assert keymap.a1111_compvis_name("lora_te2_text_model_encoder_layers_5_self_attn_q_proj") == \
        "1_model_transformer_resblocks_5_attn_q_proj"
    assert keymap.a1111_compvis_name("lora_te2_text_model_encoder_layers_5_mlp_fc1") == "1_model_transformer_resblocks_5_mlp_c_fc"
