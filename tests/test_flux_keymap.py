"""Flux LoRA keys at full size: the kohya file clood writes for a real Flux.1-dev transformer
(built on the meta device: real shapes, no weights) is read by diffusers' own kohya-Flux
converter — an independent reader — into exactly the adapter that was trained, and every
key it makes names a layer of the real transformer with the right shape."""

import pytest
import torch

from clood_candy_plugins.flow import keymap
from clood_candy_plugins.flow.base import TARGETS


@pytest.fixture(scope="module")
def flux_dev():
    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel

    with init_empty_weights():
        return FluxTransformer2DModel(guidance_embeds=True)  # the default config is Flux.1-dev's


def adapter(transformer, pattern: str, rank: int = 2) -> dict[str, torch.Tensor]:
    """A random LoRA of ``rank`` on every layer ``pattern`` (peft's full-match regex) selects."""
    import re

    gen, state = torch.Generator().manual_seed(0), {}
    for name, module in transformer.named_modules():
        if isinstance(module, torch.nn.Linear) and re.fullmatch(pattern, name):
            state[f"{name}.lora_A.weight"] = torch.randn(rank, module.in_features, generator=gen)
            state[f"{name}.lora_B.weight"] = torch.randn(module.out_features, rank, generator=gen)
    return state


def deltas(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Each layer's weight change applied to a fixed probe vector, B·(A·x): the change itself,
    without building the 3072 × 12288 matrices (all of them would not fit in memory)."""
    out = {}
    for key, down in state.items():
        if key.startswith(prefix) and key.endswith(".lora_A.weight"):
            probe = torch.randn(down.shape[1], generator=torch.Generator().manual_seed(down.shape[1])).double()
            up = state[key.replace("lora_A", "lora_B")].double()  # in float64, so summation order cannot show
            out[key[len(prefix):].removesuffix(".lora_A.weight")] = up @ (down.double() @ probe)
    return out


def test_kohyas_layout_fuses_what_the_original_model_fuses(flux_dev):
    state = adapter(flux_dev, TARGETS["full"])
    # 19 double blocks × 12 layers + 38 single blocks × 5
    assert len(state) // 2 == 19 * 12 + 38 * 5
    kohya = keymap.to_kohya(state, alpha=8.0, transformer=flux_dev)
    modules = {k.rsplit(".", 2)[0] if k.endswith("weight") else k.rsplit(".", 1)[0] for k in kohya}
    assert len(modules) == 19 * 8 + 38 * 2  # q/k/v → one qkv, single blocks' q/k/v/mlp → one linear1
    qkv = "lora_unet_double_blocks_0_img_attn_qkv"
    assert kohya[f"{qkv}.lora_down.weight"].shape == (6, 3072)  # three rank-2 downs stacked
    assert kohya[f"{qkv}.lora_up.weight"].shape == (9216, 6)
    assert float(kohya[f"{qkv}.alpha"]) == 24.0  # alpha/rank stays 8/2
    assert kohya["lora_unet_single_blocks_37_linear1.lora_up.weight"].shape == (3072 * 3 + 12288, 8)


def test_diffusers_own_converter_reads_the_kohya_file_as_the_trained_adapter(flux_dev):
    from diffusers import FluxPipeline

    state = adapter(flux_dev, TARGETS["full"])
    kohya = keymap.to_kohya(state, alpha=8.0, transformer=flux_dev)
    converted = FluxPipeline.lora_state_dict(dict(kohya))
    converted = converted[0] if isinstance(converted, tuple) else converted
    got, want = deltas(converted, "transformer."), deltas(keymap.folded(state, 8.0, 2))
    assert got.keys() == want.keys()
    worst = max(float((got[m] - want[m]).abs().max() / want[m].abs().max()) for m in want)
    assert worst < 1e-6, worst
    for key, value in converted.items():  # every key names a layer of the real transformer, at its shape
        layer = flux_dev.get_submodule(key.removeprefix("transformer.").rsplit(".", 2)[0])
        expected = (value.shape[0], layer.in_features) if ".lora_A." in key else (layer.out_features, value.shape[1])
        assert tuple(value.shape) == expected, key


def test_the_attention_only_choice_still_converts(flux_dev):
    from diffusers import FluxPipeline

    state = adapter(flux_dev, TARGETS["attention"])
    converted = FluxPipeline.lora_state_dict(dict(keymap.to_kohya(state, alpha=2.0, transformer=flux_dev)))
    converted = converted[0] if isinstance(converted, tuple) else converted
    got, want = deltas(converted, "transformer."), deltas(state)
    # linear1 carries the single blocks' MLP rows too: zero, as nothing trained them
    assert set(want) <= set(got) and all(float(got[m].abs().max()) == 0 for m in set(got) - set(want))
    assert max(float((got[m] - want[m]).abs().max() / want[m].abs().max()) for m in want) < 1e-6


def test_reading_a_kohya_file_back_gives_each_layer_its_own_change(flux_dev):
    state = adapter(flux_dev, TARGETS["full"], rank=1)
    back, ranks = keymap.from_kohya(keymap.to_kohya(state, alpha=3.0, transformer=flux_dev), flux_dev)
    got, want = deltas(back), deltas(keymap.folded(state, 3.0, 1))
    assert got.keys() == want.keys() and set(ranks.values()) == {1, 3, 4}
    assert max(float((got[m] - want[m]).abs().max() / want[m].abs().max()) for m in want) < 1e-6


def test_a_key_of_another_model_is_named(flux_dev):
    with pytest.raises(ValueError, match="lora_unet_down_blocks_0.* names no module"):
        keymap.from_kohya({"lora_unet_down_blocks_0.lora_down.weight": torch.zeros(1, 4),
                           "lora_unet_down_blocks_0.lora_up.weight": torch.zeros(4, 1)}, flux_dev)
