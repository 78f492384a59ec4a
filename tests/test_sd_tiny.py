"""The tiny offline pipelines: built from configs with no hub, deterministic, cached, and
with the real CLIP tokenizer when open-clip-torch's BPE file is installed."""

import hashlib
import sys

import pytest
from clood_candy_plugins.sd import tokenizer as tok


def _unet_digest(folder):
    return hashlib.sha256((folder / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()).hexdigest()


def test_tiny_builds_offline_deterministically_and_caches(tmp_path, monkeypatch):
    from clood_candy_plugins.sd.tiny import tiny_folder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("CLOOD_CACHE", str(tmp_path / "a"))
    first = tiny_folder("tiny")
    assert first.is_relative_to(tmp_path / "a")
    assert (first / "model_index.json").is_file()
    assert tiny_folder("tiny") == first  # second call: the cached folder
    monkeypatch.setenv("CLOOD_CACHE", str(tmp_path / "b"))
    again = tiny_folder("tiny")
    assert _unet_digest(again) == _unet_digest(first)  # same seed, same weights
    assert _unet_digest(tiny_folder("tiny", seed=1)) != _unet_digest(first)
    assert not [p for p in (tmp_path / "b" / "tiny").iterdir() if p.name.startswith(".")]  # no half-built folders


def test_tiny_base_loads_with_sd1_layout(make_ctx):
    ctx = make_ctx(base="tiny")
    assert ctx.family().name == "sd1"
    base = ctx.base()
    unet = base.pipe.unet
    assert unet.config.layers_per_block == 2  # what A1111's input_blocks_{1+3i+j} numbering assumes
    assert unet.config.down_block_types[0] == "CrossAttnDownBlock2D"
    assert 2 ** (len(base.pipe.vae.config.block_out_channels) - 1) == 8  # SD's 8x latent downsampling
    assert base.is_toy and base.resolution == 64
    assert base.parameter_count() == sum(p.numel() for p in unet.parameters())


def test_tiny_sdxl_loads_with_two_text_encoders(make_ctx):
    ctx = make_ctx(base="tiny-sdxl")
    assert ctx.family().name == "sdxl"
    base = ctx.base()
    assert base.pipe.text_encoder_2 is not None
    assert base.pipe.unet.config.addition_embed_type == "text_time"
    cond = base.cond(["a red jellybean"])
    assert cond.pooled is not None and cond.time_ids.shape == (1, 6)


@pytest.mark.skipif(tok.clip_bpe_path() is None, reason="open-clip-torch's BPE file is not installed")
def test_tokens_are_real_clip_pieces(make_ctx):
    base = make_ctx(base="tiny").base()
    assert base.tokens("a photo of a cat") == ["a</w>", "photo</w>", "of</w>", "a</w>", "cat</w>"]
    assert base.pipe.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(base.pipe.tokenizer) == 49408
    assert base.count_tokens("jlybn, a red jellybean") == 8  # an invented trigger costs several tokens
    assert base.token_window == 75


def test_byte_level_fallback_tokenizer_loads(tmp_path):
    from transformers import CLIPTokenizer

    tok.write_tokenizer(tmp_path, bpe=None)
    assert not (tmp_path / "merges.txt").read_text().endswith("\n")  # a trailing blank line breaks transformers
    tokenizer = CLIPTokenizer.from_pretrained(tmp_path)
    assert len(tokenizer) == 514
    assert tokenizer.tokenize("a cat") == ["a</w>", "c", "a", "t</w>"]
    assert not tok.is_real_clip(tmp_path)


def test_registering_the_families_imports_no_heavy_library():
    import subprocess

    code = ("import sys, clood_candy_plugins.sd.plugin as p, clood_candy_plugins.sd.family; "
            "print('diffusers' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
