"""Tiny pipelines with the real SD architectures and random weights, built offline.

``tiny`` has the SD1 layout (the block pattern A1111's key mapping assumes), ``tiny-sdxl``
the SDXL one (two text encoders, pooled embeddings, time ids). They teach the mechanics
(training, saving, loading, key formats) in seconds on a CPU; their images are noise.
Built deterministically from a seed and cached under ``$CLOOD_CACHE/tiny/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from clood_candy_plugins.sd.cache import build_once, cache_dir
from clood_candy_plugins.sd.loading import TINY_NAMES, TINY_RESOLUTION
from clood_candy_plugins.sd.tokenizer import is_real_clip, tokenizer_folder

LAYOUT_VERSION = 2  # bump when a config below changes, so stale caches are rebuilt

# SD1.5's noise schedule (the tiny models share it so the schedule lesson is the real one).
SD_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
               "beta_schedule": "scaled_linear", "clip_sample": False,
               "steps_offset": 1, "prediction_type": "epsilon"}


def _text_config(hidden: int = 32) -> CLIPTextConfig:
    # bos/eos/pad ids 0/2/1 as in SD1.5's config: eos_token_id 2 makes transformers find
    # the pooled token by argmax of the ids, which is right for both real and byte vocabularies.
    return CLIPTextConfig(vocab_size=49408, hidden_size=hidden, intermediate_size=37, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
                          bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_act="quick_gelu")


def _vae() -> AutoencoderKL:
    # Four blocks: 8x downsampling, like SD's VAE.
    return AutoencoderKL(block_out_channels=(32, 32, 64, 64), layers_per_block=1, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         norm_num_groups=32, sample_size=TINY_RESOLUTION)


def _sd1_unet() -> UNet2DConditionModel:
    # SD1's pattern (cross-attention down blocks, then a plain one) with layers_per_block=2,
    # so LDM block numbering input_blocks_{1+3i+j} holds as in the real model.
    return UNet2DConditionModel(
        sample_size=TINY_RESOLUTION // 8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, attention_head_dim=8,
        norm_num_groups=32)


def _sdxl_unet() -> UNet2DConditionModel:
    # SDXL's pattern: plain first block, linear projections, more transformer layers deeper,
    # and "text_time" added conditioning (pooled text + 6 time ids).
    return UNet2DConditionModel(
        sample_size=TINY_RESOLUTION // 8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 2),
        attention_head_dim=(2, 4), use_linear_projection=True, cross_attention_dim=32 + 48,
        addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32, norm_num_groups=32)


def _build(name: str, seed: int, folder: Path) -> None:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    torch.manual_seed(seed)
    scheduler = DDPMScheduler(**SD_SCHEDULE)
    tok_dir = tokenizer_folder()
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    if name == "tiny":
        unet, vae, text_encoder = _sd1_unet(), _vae(), CLIPTextModel(_text_config())
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    else:
        unet, vae = _sdxl_unet(), _vae()
        text_encoder = CLIPTextModel(_text_config())
        # Wider than the first encoder, as in SDXL (768 vs 1280): single-file loading tells
        # the two apart by width, so equal widths would load encoder 1's weights twice.
        text_encoder_2 = CLIPTextModelWithProjection(_text_config(hidden=48))
        tokenizer_2 = CLIPTokenizer.from_pretrained(tokenizer_folder(pad_token="!"))
        pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                         tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=unet,
                                         scheduler=scheduler, force_zeros_for_empty_prompt=True)
    pipe.save_pretrained(folder, safe_serialization=True)
    # Let a user see which vocabulary the toy carries.
    (folder / "TOKENIZER.txt").write_text("real CLIP BPE\n" if is_real_clip(tok_dir) else "byte-level fallback\n")


def tiny_folder(name: str, seed: int = 0) -> Path:
    """The cached diffusers folder for ``tiny`` / ``tiny-sdxl``, built on first use."""
    if name not in TINY_NAMES:
        raise ValueError(f"unknown tiny base {name!r}")
    kind = "clip" if is_real_clip(tokenizer_folder()) else "bytes"
    target = cache_dir() / "tiny" / f"{name}-v{LAYOUT_VERSION}-seed{seed}-{kind}"
    return build_once(target, lambda tmp: _build(name, seed, tmp))


def clear_tiny_cache() -> None:
    shutil.rmtree(cache_dir() / "tiny", ignore_errors=True)
