"""``tiny-flux`` and ``tiny-sd3``: Flux.1- and SD3-architecture pipelines with random
weights, built offline.

The real parts at toy size. Flux: a FluxTransformer2DModel (double- and single-stream
blocks, rotary position ids, the guidance embedding of Flux.1-dev), CLIP-L's place taken by
a 2-layer CLIP text model with the real CLIP BPE tokenizer, T5's by a 2-layer T5 encoder
with a tokenizer built here (the real T5 one needs the Hub), a 16-channel VAE with Flux's
shift and scale. SD3: an SD3Transformer2DModel (joint blocks, the last one context-pre-only,
2×2 patch embedding), two CLIP text models with projections, the same toy T5, a 16-channel
VAE with SD3's shift and scale. Like ``tiny`` they teach mechanics, not art.
"""

from __future__ import annotations

from pathlib import Path

import torch

from clood_candy_plugins.sd.cache import build_once, cache_dir
from clood_candy_plugins.sd.loading import TINY_RESOLUTION
from clood_candy_plugins.sd.tiny import _text_config
from clood_candy_plugins.sd.tokenizer import is_real_clip, tokenizer_folder

LAYOUT_VERSION = 2  # bump when a config below changes, so stale caches are rebuilt
T5_WINDOW = 128  # the toy's T5 window (Flux.1-dev and SD3: 512 tokens, schnell: 256)
# Words the toy T5 vocabulary holds whole (those the studio's captions use, and some more);
# anything else is spelled letter by letter, as a real sentencepiece vocabulary does for words it lacks.
T5_WORDS = ("a an the of and on in with by at from photo picture image close up macro wide medium shot single "
            "pile row rows scattered heap bowl glass jar table jellybean jellybeans bean beans candy candies sweet "
            "red orange yellow green blue purple pink white black brown grey gray clear speckled striped glossy "
            "shiny matte soft wood wooden cloth linen marble paper surface background light lit daylight warm cool "
            "indoor outdoor indoors outdoors night day sun shade studio flash camera dark bright sharp blurry focus "
            "one two three four five many few small large big lying sitting")


def t5_tokenizer():
    """A T5TokenizerFast over a small unigram vocabulary: pad 0, eos 1, unk 2 as in T5."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("▁" + w, -2.0) for w in T5_WORDS.split()]
    pieces += [(c, -8.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789,.:;!?'-()"] + [("▁", -4.0)]
    tok = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                           extra_ids=0, model_max_length=T5_WINDOW)


def _toy_t5(d_model: int):
    from transformers import T5Config, T5EncoderModel

    tokenizer = t5_tokenizer()
    return tokenizer, T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=d_model, d_kv=8, d_ff=37, num_layers=2,
                                              num_heads=4, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))


def _vae(shift: float, scale: float):
    from diffusers import AutoencoderKL

    # 16 latent channels and no quant convs, as both models' VAEs; their own latent statistics.
    return AutoencoderKL(block_out_channels=(32, 32, 64, 64), layers_per_block=1, latent_channels=16,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         norm_num_groups=32, sample_size=TINY_RESOLUTION, use_quant_conv=False,
                         use_post_quant_conv=False, shift_factor=shift, scaling_factor=scale)


def _build_sd3(seed: int, folder: Path) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(seed)
    # SD3's pattern at toy width: joint blocks over 2×2 patches (the last one context-pre-only),
    # CLIP-L and CLIP-G projections concatenated as the pooled vector (32 + 32), T5 as wide as
    # both CLIPs' token embeddings side by side (64), as 4096 ≥ 768 + 1280 in the real model.
    transformer = SD3Transformer2DModel(sample_size=TINY_RESOLUTION // 8, patch_size=2, in_channels=16, num_layers=2,
                                        attention_head_dim=8, num_attention_heads=4, joint_attention_dim=64,
                                        caption_projection_dim=32, pooled_projection_dim=64, out_channels=16,
                                        pos_embed_max_size=32)
    tokenizer_3, text_encoder_3 = _toy_t5(64)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),  # SD3's schedule
        vae=_vae(0.0609, 1.5305), text_encoder=CLIPTextModelWithProjection(_text_config()),
        tokenizer=CLIPTokenizer.from_pretrained(tokenizer_folder()),
        text_encoder_2=CLIPTextModelWithProjection(_text_config()),
        tokenizer_2=CLIPTokenizer.from_pretrained(tokenizer_folder(pad_token="!")),
        text_encoder_3=text_encoder_3, tokenizer_3=tokenizer_3)
    pipe.save_pretrained(folder, safe_serialization=True)
    _note_tokenizers(folder)


def _note_tokenizers(folder: Path) -> None:
    (folder / "TOKENIZER.txt").write_text("real CLIP BPE; toy T5 unigram vocabulary\n" if is_real_clip(tokenizer_folder())
                                          else "byte-level CLIP fallback; toy T5 unigram vocabulary\n")


def _build(seed: int, folder: Path) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    # Flux.1's pattern at toy width: heads of 16, rotary axes summing to the head size,
    # one block of each kind (the real model has 19 and 38), dev's guidance embedding.
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, axes_dims_rope=(4, 4, 8), guidance_embeds=True)
    tokenizer_2, text_encoder_2 = _toy_t5(32)
    vae = _vae(0.1159, 0.3611)  # Flux's shift and scale
    # Flux.1-dev's scheduler config: the shift follows the image's token count.
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    pipe = FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=CLIPTextModel(_text_config()),
                        tokenizer=CLIPTokenizer.from_pretrained(tokenizer_folder()), text_encoder_2=text_encoder_2,
                        tokenizer_2=tokenizer_2, transformer=transformer)
    pipe.save_pretrained(folder, safe_serialization=True)
    _note_tokenizers(folder)


BUILDERS = {"tiny-flux": _build, "tiny-sd3": _build_sd3}


def tiny_folder(name: str, seed: int = 0) -> Path:
    """The cached diffusers folder for ``tiny-flux`` / ``tiny-sd3``, built on first use."""
    kind = "clip" if is_real_clip(tokenizer_folder()) else "bytes"
    return build_once(cache_dir() / "tiny" / f"{name}-v{LAYOUT_VERSION}-seed{seed}-{kind}",
                      lambda tmp: BUILDERS[name](seed, tmp))
