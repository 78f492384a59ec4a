"""Single-file checkpoints (A1111 / ComfyUI style: one .safetensors with the original LDM
key names) load offline through the real path, ``from_single_file(path, config=folder)``.

diffusers has no public writer for that layout, so the tiny pipelines are written out
here by the known key mapping (UNet names from keymap.unet_to_ldm, VAE and OpenCLIP
names as the original code has them), then loaded through ``ctx.base()`` with
``[plugins.sd] single_file_config`` pointing at a configs-only folder of the tiny
architecture: every weight must come back bit for bit and the model must predict what the
diffusers folder predicts (to float rounding: the same weights in differently allocated
memory can take another CPU kernel path, ~1e-6).
"""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from clood_candy_plugins.sd.keymap import OPENCLIP_PARTS, unet_to_ldm
from safetensors.torch import save_file

from clood_candy.errors import UserError

VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _vae_to_ldm(key: str, blocks: int) -> str:
    m = re.match(r"(encoder|decoder)\.(down|up)_blocks\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.+)$", key)
    if m:
        side, way, block, kind, index, rest = m.groups()
        block = int(block) if way == "down" else blocks - 1 - int(block)  # the decoder counts up from the bottom
        if kind == "resnets":
            head, _, tail = rest.partition(".")
            return f"{side}.{way}.{block}.block.{index}.{VAE_RESNET.get(head, head)}.{tail}"
        return f"{side}.{way}.{block}.{'downsample' if way == 'down' else 'upsample'}.{rest}"
    m = re.match(r"(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.+)$", key)
    if m:
        side, kind, index, rest = m.groups()
        if kind == "resnets":
            head, _, tail = rest.partition(".")
            return f"{side}.mid.block_{int(index) + 1}.{VAE_RESNET.get(head, head)}.{tail}"
        module, _, part = rest.rpartition(".")
        return f"{side}.mid.attn_1.{VAE_ATTENTION[module]}.{part}"
    return key.replace("conv_norm_out", "norm_out")


def _openclip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """transformers CLIPTextModelWithProjection → OpenCLIP names (fused q/k/v, transposed projection)."""
    out = {prefix + "text_projection": state["text_projection.weight"].T.contiguous()}
    fixed = {"text_model.embeddings.token_embedding.weight": "token_embedding.weight",
             "text_model.embeddings.position_embedding.weight": "positional_embedding",
             "text_model.final_layer_norm.weight": "ln_final.weight", "text_model.final_layer_norm.bias": "ln_final.bias"}
    out.update({prefix + ldm: state[key] for key, ldm in fixed.items()})
    layers = {int(m[1]) for k in state if (m := re.match(r"text_model\.encoder\.layers\.(\d+)\.", k))}
    for i in layers:
        src, dst = f"text_model.encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for part in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{part}"] = torch.cat([state[f"{src}self_attn.{p}_proj.{part}"] for p in "qkv"])
            for module in ("self_attn.out_proj", "mlp.fc1", "mlp.fc2", "layer_norm1", "layer_norm2"):
                out[f"{dst}{OPENCLIP_PARTS[module]}.{part}"] = state[f"{src}{module}.{part}"]
    return out


def to_single_file(pipe, path: Path) -> Path:
    """Write a diffusers SD1/SDXL pipeline as one LDM-keyed .safetensors file."""
    sdxl = getattr(pipe, "text_encoder_2", None) is not None
    out = {"model.diffusion_model." + unet_to_ldm(k, pipe.unet.config): v for k, v in pipe.unet.state_dict().items()}
    blocks = len(pipe.vae.config.block_out_channels)
    for key, value in pipe.vae.state_dict().items():
        ldm = _vae_to_ldm(key, blocks)
        if ".mid.attn_1." in ldm and value.ndim == 2:
            value = value[:, :, None, None]  # the original VAE attention is 1x1 convolutions
        out["first_stage_model." + ldm] = value
    text = {"text_model." + k.removeprefix("text_model."): v for k, v in pipe.text_encoder.state_dict().items()}
    head = "conditioner.embedders.0.transformer." if sdxl else "cond_stage_model.transformer."
    out.update({head + k: v for k, v in text.items()})
    if sdxl:
        out.update(_openclip(pipe.text_encoder_2.state_dict(), "conditioner.embedders.1.model."))
    save_file({k: v.contiguous() for k, v in out.items()}, str(path))
    return path


def configs_only(folder: Path, target: Path) -> Path:
    """The diffusers folder's JSON configs and tokenizer files, no weights."""
    shutil.copytree(folder, target, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    return target


def _prediction(pipe) -> torch.Tensor:
    from clood_candy_plugins.sd.denoise import encode_text, predict

    gen = torch.Generator().manual_seed(0)
    noisy = torch.randn(1, 4, 8, 8, generator=gen)
    with torch.no_grad():
        cond = encode_text(pipe, ["a red jellybean"], 64)
        latents = pipe.vae.encode(torch.rand(1, 3, 64, 64, generator=gen) * 2 - 1).latent_dist.mean
        return torch.cat([predict(pipe.unet, noisy, torch.tensor([500]), cond).flatten(), latents.flatten()])


@pytest.mark.parametrize("tiny", ["tiny", "tiny-sdxl"])
def test_single_file_checkpoint_loads_offline_and_predicts_like_the_folder(make_ctx, tmp_path, monkeypatch, tiny):
    from clood_candy_plugins.sd.tiny import tiny_folder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a fetch of any config would fail here
    reference = make_ctx(base=tiny).base()
    path = to_single_file(reference.pipe, tmp_path / f"{tiny}.safetensors")
    configs = configs_only(tiny_folder(tiny), tmp_path / "configs")
    ctx = make_ctx(base=str(path), plugins={"sd": {"single_file_config": str(configs)}})
    loaded = ctx.base()
    assert loaded.kind == "single-file" and loaded.family == reference.family
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        ours, theirs = getattr(reference.pipe, name, None), getattr(loaded.pipe, name, None)
        if ours is None:
            continue
        a, b = ours.state_dict(), theirs.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert torch.allclose(_prediction(loaded.pipe), _prediction(reference.pipe), atol=1e-5)


def test_single_file_config_option_is_checked(make_ctx, tmp_path):
    from clood_candy_plugins.sd.tiny import tiny_folder

    path = to_single_file(make_ctx(base="tiny").base().pipe, tmp_path / "model.safetensors")
    with pytest.raises(UserError, match="single_file_config .* no model_index.json"):
        make_ctx(base=str(path), plugins={"sd": {"single_file_config": str(tmp_path / "nowhere")}}).base()
    configs = configs_only(tiny_folder("tiny-sdxl"), tmp_path / "xl-configs")
    with pytest.raises(UserError, match="describes an sdxl model, not sd1"):
        make_ctx(base=str(path), plugins={"sd": {"single_file_config": str(configs)}}).base()
    # The real-size default folder does not fit the tiny weights: one clear line, no traceback.
    with pytest.raises(UserError, match="could not load checkpoint model.safetensors") as err:
        make_ctx(base=str(path)).base()
    assert "\n" not in str(err.value)
    assert json.loads((configs / "model_index.json").read_text())["_class_name"] == "StableDiffusionXLPipeline"
