"""The layers a LoRA trains, counted on the real SD1.5 and SDXL architectures (built from the
configs clood ships, on the meta device: shapes, no weights, no download).

The default (``targets = "full"``) is what a kohya LoRA patches. kohya's rule (sd-scripts
networks/lora.py, LoRANetwork without conv_dim): in the UNet every Linear and 1x1 Conv2d
inside a Transformer2DModel; in each text encoder every Linear inside CLIPAttention and
CLIPMLP. ``kohya_layers`` restates that rule on the diffusers/transformers models, and the
figures it must give are counted by hand from the configs:

SD1.5  16 Transformer2DModel (2 per down block × 3, 1 mid, 3 per up block × 3), each one
       transformer block: proj_in + proj_out + 2 attentions × (q, k, v, out) + ff (GEGLU
       proj, out) = 12 → 192 UNet layers; text encoder 12 layers × (q, k, v, out, fc1,
       fc2) = 72; with the text encoder 264.
SDXL   11 Transformer2DModel (2 + 2 down, 1 mid, 3 + 3 up) holding 70 transformer blocks
       (transformer_layers_per_block 2 and 10: 2·2 + 2·10 down, 10 mid, 3·10 + 3·2 up):
       11 × 2 + 70 × 10 = 722 UNet layers; text encoders 12 × 6 + 32 × 6 = 72 + 192; 986.

``targets = "attention"`` trains q/k/v/out only: 128 (SD1.5 UNet) and 560 (SDXL UNet).
"""

import pytest
import torch
from clood_candy_plugins.sd import keymap, lora
from clood_candy_plugins.sd.loading import CONFIG_NAMES

from clood_candy.records import TrainConfig

FULL = {"sd1": {"unet": 192, "text_encoder": 72}, "sdxl": {"unet": 722, "text_encoder": 72, "text_encoder_2": 192}}
ATTENTION = {"sd1": {"unet": 128, "text_encoder": 48}, "sdxl": {"unet": 560, "text_encoder": 48, "text_encoder_2": 128}}


def real_size(family: str) -> dict[str, torch.nn.Module]:
    from importlib import resources

    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = resources.files("clood_candy_plugins.sd") / "configs" / CONFIG_NAMES[family]
    with init_empty_weights():  # shapes only, no memory
        models = {"unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(folder / "unet"))),
                  "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(str(folder / "text_encoder")))}
        if family == "sdxl":
            models["text_encoder_2"] = CLIPTextModelWithProjection(
                CLIPTextConfig.from_pretrained(str(folder / "text_encoder_2")))
    return models


def kohya_layers(component: str, model: torch.nn.Module) -> set[str]:
    """The modules kohya's LoRANetwork patches by default (its rule, restated)."""
    classes = {"Transformer2DModel"} if component == "unet" else {"CLIPAttention", "CLIPSdpaAttention", "CLIPMLP"}
    found = set()
    for name, module in model.named_modules():
        if type(module).__name__ not in classes:
            continue
        for child_name, child in module.named_modules():
            linear = type(child).__name__ == "Linear"
            conv_1x1 = type(child).__name__ == "Conv2d" and child.kernel_size == (1, 1)
            if child_name and (linear or conv_1x1):
                found.add(f"{name}.{child_name}")
    return found


def adapted(models: dict[str, torch.nn.Module], config: TrainConfig) -> dict[str, set[str]]:
    """The modules training's own peft config adapts, per component."""
    from accelerate import init_empty_weights
    from peft.tuners.tuners_utils import BaseTunerLayer

    out = {}
    with init_empty_weights():
        for component, model in models.items():
            model.add_adapter(lora.adapter_config(config, lora.component_targets(config, component)),
                              adapter_name=lora.ADAPTER)
            out[component] = {n for n, m in model.named_modules()
                              if isinstance(m, BaseTunerLayer) and lora.ADAPTER in getattr(m, "scaling", {})}
            if hasattr(model, "delete_adapters"):  # diffusers models; transformers ones say it singly
                model.delete_adapters(lora.ADAPTER)
            else:
                model.delete_adapter(lora.ADAPTER)
    return out


@pytest.fixture(scope="module", params=["sd1", "sdxl"])
def family(request):
    models = real_size(request.param)
    kohya = {c: kohya_layers(c, m) for c, m in models.items()}  # before peft wraps any layer
    return request.param, models, kohya


def test_the_default_targets_are_the_layers_a_kohya_lora_patches(family):
    name, models, kohya = family
    assert {c: len(v) for c, v in kohya.items()} == FULL[name]  # the rule gives the hand count
    assert sum(FULL[name].values()) == {"sd1": 264, "sdxl": 986}[name]
    layers = adapted(models, TrainConfig(rank=4, train_text_encoder=True))
    assert layers == kohya  # the same modules, not only as many
    unet = models["unet"]
    proj_in = next(n for n in layers["unet"] if n.endswith("proj_in"))
    assert type(unet.get_submodule(proj_in).base_layer).__name__ == ("Conv2d" if name == "sd1" else "Linear")


def test_every_default_layer_gets_a_kohya_key_that_a1111_and_comfyui_map(family):
    name, models, _ = family
    layers = adapted(models, TrainConfig(rank=4, train_text_encoder=True))
    unet, encoders = models["unet"], {c: m for c, m in models.items() if c != "unet"}
    prefixes = [keymap.kohya_prefix(c, m, name, unet.config) for c, names in layers.items() for m in names]
    assert len(set(prefixes)) == len(prefixes) == sum(FULL[name].values())
    a1111, comfy = keymap.a1111_layer_names(unet, encoders, name), keymap.comfy_key_map(unet, encoders, name)
    assert [p for p in prefixes if p not in comfy] == []
    assert [p for p in prefixes if not keymap.a1111_resolves(p, a1111)] == []
    # kohya's own spelling of the GEGLU projection and of SD1's diffusers-named / SDXL's LDM-named blocks
    expected = {"sd1": ["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_ff_net_0_proj",
                        "lora_unet_up_blocks_3_attentions_2_proj_out", "lora_te_text_model_encoder_layers_11_mlp_fc2"],
                "sdxl": ["lora_unet_input_blocks_4_1_transformer_blocks_1_ff_net_0_proj",
                         "lora_unet_middle_block_1_transformer_blocks_9_ff_net_2",
                         "lora_unet_output_blocks_5_1_proj_in",
                         "lora_te1_text_model_encoder_layers_11_mlp_fc1",
                         "lora_te2_text_model_encoder_layers_31_self_attn_out_proj"]}[name]
    assert set(expected) <= set(prefixes)


def test_attention_only_stays_a_choice_and_an_explicit_list_wins(family):
    name, models, _ = family
    layers = adapted(models, TrainConfig(rank=4, train_text_encoder=True, targets="attention"))
    assert {c: len(v) for c, v in layers.items()} == ATTENTION[name]
    assert all(n.rsplit(".", 1)[-1] in ("to_q", "to_k", "to_v", "0") for n in layers["unet"])
    explicit = adapted(models, TrainConfig(rank=4, target_modules=["to_k", "to_v"]))
    assert len(explicit["unet"]) == ATTENTION[name]["unet"] // 2


def test_a_tiny_run_with_the_text_encoder_saves_every_kind_of_default_layer_verified(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file
    from support.sd import module_ctx, recipe, train_set

    ctx = module_ctx(tmp_path, base="tiny")
    family, base = ctx.family(), ctx.base()
    models = {"unet": base.pipe.unet, "text_encoder": base.pipe.text_encoder}
    kohya = {keymap.kohya_prefix(c, n, "sd1", base.pipe.unet.config) for c, m in models.items()
             for n in kohya_layers(c, m)}
    data = train_set(tmp_path / "prep")
    short = dict(steps=2, checkpoint_every=100, validate_every=100)
    outcome = family.train(base, data, recipe(**short, train_text_encoder=True), tmp_path / "full", ctx)
    assert outcome.error is None and outcome.verification["ok"], outcome.verification
    assert {k.split(".")[0] for k in load_file(outcome.lora)} == kohya  # proj_in (1x1 conv), ff, mlp: all of them
    with safe_open(outcome.lora, framework="pt") as handle:
        assert handle.metadata()["clood_targets"].startswith("full (kohya's")
    attention = family.train(base, data, recipe(**short, targets="attention"), tmp_path / "attention", ctx)
    assert attention.error is None and attention.verification["ok"]
    prefixes = {k.split(".")[0] for k in load_file(attention.lora)}
    assert len(prefixes) == 4 * 2 * 6 and all(p.split("_")[-1] in ("q", "k", "v", "0") for p in prefixes)


def test_the_metadata_says_which_layers_were_trained():
    from clood_candy_plugins.sd.metadata import targets_label

    assert targets_label(TrainConfig()).startswith("full (kohya's: attention, feed-forward, proj_in/proj_out")
    assert targets_label(TrainConfig(targets="attention")) == "attention (q, k, v, out)"
    assert targets_label(TrainConfig(target_modules=["to_k", "ff.net.2"])) == "unet: to_k, ff.net.2"
    with_text = TrainConfig(target_modules=["to_k"], train_text_encoder=True)
    assert targets_label(with_text) == "unet: to_k; text encoders: full"
