"""How big a training step is, counted without weights: the base's architecture is built on
PyTorch's ``meta`` device (shapes, no memory, no download) from its own configs (a local
folder's, the Hub cache's, or the ones shipped in ``configs/``), the recipe's adapter is
attached with the same peft config training uses, and one forward pass on meta tensors
records every tensor autograd keeps for the backward pass.

Attention is counted as the fused kernels run it (PyTorch's CPU flash kernel, the GPU's
flash / memory-efficient ones): q, k, v, the output and a log-sum-exp row, never the
(tokens × tokens) score matrix. Gradient checkpointing keeps each ResNet and transformer
block's input instead of its insides and rebuilds one block at a time, so its count is the
kept tensors outside those blocks, the blocks' inputs and the largest block's insides.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clood_candy.plan.records import ModelSize
from clood_candy.records import TrainConfig

if TYPE_CHECKING:
    from clood_candy.config import CloodConfig

WEIGHT_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
PARTS = ("unet", "vae", "text_encoder", "text_encoder_2")
TOKENS = 77
# Kept per token and layer when a text encoder trains (attention, its 4× MLP, norms):
# counted as ~32 hidden-size tensors; 77 tokens make this small beside the UNet.
TEXT_KEPT_PER_LAYER = 32


def model_size(config: "CloodConfig", family: str, recipe: TrainConfig, resolution: int) -> ModelSize:
    options = config.plugins.get("sd", {})
    parts = architecture(config.base, family, options.get("single_file_config"))
    recipe_key = json.dumps({k: recipe.model_dump(mode="json")[k] for k in
                             ("rank", "alpha", "variant", "targets", "target_modules", "train_text_encoder")}, sort_keys=True)
    counted = _count(json.dumps(parts, sort_keys=True), recipe_key, resolution)
    weight_bytes = WEIGHT_BYTES.get(str(options.get("dtype", "fp32")), 4)
    return ModelSize(weight_bytes=weight_bytes, half_weights='[plugins.sd] dtype = "bf16"' if weight_bytes == 4 else "",
                     **counted)


def architecture(base: str, family: str, single_file_config: str | None) -> dict[str, Any]:
    """The configs of the base's parts (unet, text encoders, vae), read from files only:
    a diffusers folder's own, a Hub id's from the local cache, else the family's shipped
    ones (a single-file checkpoint loads with those too, or with ``single_file_config``)."""
    from clood_candy_plugins.sd.loading import MINIATURES, TINY_NAMES, miniature_folder

    if base in TINY_NAMES:
        return {"tiny": base}
    if base in MINIATURES:
        base = str(miniature_folder(base))
    path = Path(base).expanduser()
    if path.is_dir():
        folder = path
    elif path.is_file() and single_file_config:
        folder = Path(single_file_config).expanduser()
    else:
        folder = shipped(family)
    out: dict[str, Any] = {}
    for part in PARTS:
        found = folder / part / "config.json"
        cached = None if path.exists() else _cached(base, f"{part}/config.json")
        chosen = cached or (found if found.is_file() else None)
        if chosen is not None:
            out[part] = json.loads(chosen.read_text(encoding="utf-8"))
    return out


def _cached(repo_id: str, filename: str) -> Path | None:
    """A Hub repository's file when it is already in the local cache (never downloads)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, filename)
    except Exception:
        return None
    return Path(found) if isinstance(found, str) else None


def shipped(family: str) -> Path:
    from importlib import resources

    from clood_candy_plugins.sd.loading import CONFIG_NAMES

    return Path(str(resources.files("clood_candy_plugins.sd") / "configs" / CONFIG_NAMES[family]))


@lru_cache(maxsize=32)
def _count(parts_json: str, recipe_json: str, resolution: int) -> dict[str, Any]:
    parts, recipe = json.loads(parts_json), TrainConfig.model_validate(json.loads(recipe_json))
    unet, texts, vae = _build(parts)
    counts = {"denoiser_params": _params(unet), "text_encoder_params": sum(_params(t) for t in texts),
              "vae_params": _params(vae)}
    trainable, note = _attach(unet, texts, recipe)
    traced = _trace(unet, resolution, vae_factor(vae))
    if recipe.train_text_encoder:
        extra = sum(TOKENS * t.config.hidden_size * t.config.num_hidden_layers * TEXT_KEPT_PER_LAYER for t in texts)
        traced["activation_elements"] += extra
        traced["checkpointed_elements"] += extra
    return {**counts, **traced, "trainable_params": trainable, "latent_factor": vae_factor(vae),
            "latent_channels": int(unet.config.in_channels), "note": note}


def vae_factor(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _build(parts: dict[str, Any]):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with torch.device("meta"):
        if "tiny" in parts:
            from clood_candy_plugins.sd import tiny

            sdxl = parts["tiny"] == "tiny-sdxl"
            unet = tiny._sdxl_unet() if sdxl else tiny._sd1_unet()
            texts = [CLIPTextModel(tiny._text_config())]
            if sdxl:
                texts.append(CLIPTextModelWithProjection(tiny._text_config(48)))
            vae = tiny._vae()
        else:
            unet = UNet2DConditionModel.from_config(parts["unet"])
            vae = AutoencoderKL.from_config(parts["vae"])
            texts = [CLIPTextModel(CLIPTextConfig(**parts["text_encoder"]))]
            if "text_encoder_2" in parts:
                texts.append(CLIPTextModelWithProjection(CLIPTextConfig(**parts["text_encoder_2"])))
    for module in (unet, vae, *texts):
        module.requires_grad_(False)
    return unet, texts, vae


def _attach(unet, texts, recipe: TrainConfig) -> tuple[int, str]:
    """The recipe's adapter on the meta UNet (and text encoders), with training's own peft
    config; returns the trainable parameter count and a note on how it was counted."""
    from clood_candy_plugins.sd import lora

    note = ""
    counted = recipe
    if recipe.variant == "dora":  # peft's DoRA reads the weights' norms, which meta tensors do not have
        counted = recipe.model_copy(update={"variant": "lora"})
        note = "DoRA counted as LoRA plus one magnitude per output feature"
    unet.add_adapter(lora.adapter_config(counted, lora.unet_targets(counted)), adapter_name=lora.ADAPTER)
    if recipe.train_text_encoder:
        for text in texts:
            text.add_adapter(lora.adapter_config(counted, lora.text_targets(counted)), adapter_name=lora.ADAPTER)
    trainable = sum(p.numel() for m in (unet, *texts) for p in m.parameters() if p.requires_grad)
    if recipe.variant == "dora":
        trainable += sum(m.base_layer.out_features if hasattr(m.base_layer, "out_features")
                         else m.base_layer.out_channels for m in unet.modules() if hasattr(m, "lora_A"))
    return trainable, note


@contextmanager
def _fused_attention():
    """SDPA as the fused kernels keep it for backward (meta tensors would take the math path,
    which keeps the whole score matrix)."""
    import torch
    import torch.nn.functional as F

    plain = F.scaled_dot_product_attention

    def fused(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **_):
        if attn_mask is not None:
            return plain(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale)
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(query, key, value, dropout_p, is_causal,
                                                                         scale=scale)[0]

    F.scaled_dot_product_attention = fused
    try:
        yield
    finally:
        F.scaled_dot_product_attention = plain


def _trace(unet, resolution: int, factor: int) -> dict[str, int]:
    """What autograd keeps for backward for one photo, in 4-byte elements, without and with
    gradient checkpointing: activations, and apart from them the frozen weights it keeps
    (free in fp32: they are the model's own tensors; under autocast each is a half-precision
    copy made for its op)."""
    import torch
    from diffusers.models.attention import BasicTransformerBlock
    from diffusers.models.resnet import ResnetBlock2D

    weights = {p.untyped_storage()._cdata for p in unet.parameters()}
    frozen = {p.untyped_storage()._cdata for p in unet.parameters() if not p.requires_grad}
    kept: dict[int, int] = {}  # storage → bytes, outside the checkpointed blocks
    inside: dict[str, dict[int, int]] = {}  # block → its storages
    inputs: dict[int, int] = {}  # the blocks' input storages
    stack: list[str] = []

    def key_of(t) -> tuple[int, int]:
        storage = t.untyped_storage()
        return storage._cdata, storage.nbytes()

    def pack(t):
        key, nbytes = key_of(t)
        if key in weights and key not in frozen:
            return t  # the adapter's own weights: counted as the adapter
        into = inside.setdefault(stack[-1], {}) if stack else kept
        into[key] = max(into.get(key, 0), nbytes)
        return t

    hooks = []
    for name, module in unet.named_modules():
        # diffusers checkpoints every ResNet and transformer block but the mid block's first ResNet
        if isinstance(module, (ResnetBlock2D, BasicTransformerBlock)) and name != "mid_block.resnets.0":
            def enter(mod, args, _name=name):
                stack.append(_name)
                if args and isinstance(args[0], torch.Tensor):
                    key, nbytes = key_of(args[0])
                    inputs[key] = nbytes

            hooks += [module.register_forward_pre_hook(enter),
                      module.register_forward_hook(lambda mod, args, out: stack.pop() and None)]
    side = resolution // factor
    config = unet.config
    sample = torch.zeros(1, config.in_channels, side, side, device="meta")
    cond = torch.zeros(1, TOKENS, config.cross_attention_dim, device="meta")
    extra: dict[str, Any] = {}
    if config.addition_embed_type == "text_time":
        pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
        extra["added_cond_kwargs"] = {"text_embeds": torch.zeros(1, pooled, device="meta"),
                                      "time_ids": torch.zeros(1, 6, device="meta")}
    try:
        with _fused_attention(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            unet(sample, torch.zeros(1, dtype=torch.long, device="meta"), cond, **extra)
    finally:
        for hook in hooks:
            hook.remove()

    def split(found: dict[int, int]) -> tuple[int, int]:  # (activations, frozen weights), bytes
        return (sum(v for k, v in found.items() if k not in frozen), sum(v for k, v in found.items() if k in frozen))

    everything = dict(kept)
    for block in inside.values():
        everything.update(block)
    full, full_weights = split(everything)
    outside, outside_weights = split(kept)
    blocks = [split(b) for b in inside.values()] or [(0, 0)]
    biggest = max(blocks)
    held_inputs = sum(v for k, v in inputs.items() if k not in kept)
    return {"activation_elements": full // 4, "checkpointed_elements": (outside + held_inputs + biggest[0]) // 4,
            "kept_weight_params": full_weights // 4, "checkpointed_kept_weight_params": (outside_weights + biggest[1]) // 4}
