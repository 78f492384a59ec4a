"""Flux and SD3 LoRA files: writing the layouts ComfyUI loads, and reading them back.

Flux:

- ``<name>.safetensors``: kohya's layout (``lora_unet_double_blocks_0_img_attn_qkv…`` with
  ``.alpha``), which ComfyUI and Forge load;
- ``<name>.diffusers.safetensors``: diffusers' layout (``transformer.…lora_A/B``), written by
  diffusers' own ``save_lora_weights``, with alpha/rank folded into the weights: ComfyUI
  reads no alpha from this layout, so a file that kept alpha ≠ rank in its header would load
  at the wrong strength there.

SD3: ``<name>.safetensors`` in diffusers' layout with alpha/rank folded in (what ComfyUI's
SD3 loader reads, ``transformer.transformer_blocks.N…``), and ``<name>.diffusers.safetensors``
as diffusers saves it (alpha in the header), for continuing in diffusers.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open

from clood_candy.errors import UserError
from clood_candy_plugins.flow import keymap
from clood_candy_plugins.sd.lora import adapter_metadata, save_safetensors


def write_flux_lora(pipe, out_base: Path, state: dict[str, dict[str, torch.Tensor]], config, targets,
                    metadata: dict[str, str]) -> tuple[Path, Path]:
    layers = _transformer_only(state)
    kohya = save_safetensors(out_base.with_suffix(".safetensors"), keymap.to_kohya(layers, config.alpha, pipe.transformer),
                             metadata)
    target = out_base.parent / (out_base.name + ".diffusers.safetensors")
    return kohya, _save_diffusers(pipe, target, layers, config, targets, folded=True)


def write_sd3_lora(pipe, out_base: Path, state: dict[str, dict[str, torch.Tensor]], config, targets,
                   metadata: dict[str, str]) -> tuple[Path, Path]:
    layers = _transformer_only(state)
    main = _save_diffusers(pipe, out_base.with_suffix(".safetensors"), layers, config, targets, folded=True,
                           metadata=metadata)
    return main, _save_diffusers(pipe, out_base.parent / (out_base.name + ".diffusers.safetensors"), layers, config,
                                 targets, folded=False)


def _transformer_only(state):
    if set(state) != {"transformer"}:
        raise UserError(f"this LoRA holds the transformer's adapter only, not {', '.join(sorted(set(state) - {'transformer'}))}")
    return state["transformer"]


def _save_diffusers(pipe, target: Path, layers, config, targets, *, folded: bool,
                    metadata: dict[str, str] | None = None) -> Path:
    """diffusers' own save_lora_weights; ``folded``: alpha/rank in the weights, alpha = rank in the header.
    ``metadata``: kohya's ss_* keys added to the file's header (the layout stays diffusers')."""
    from safetensors.torch import load_file

    if folded:
        layers, config = keymap.folded(layers, config.alpha, config.rank), config.model_copy(update={"alpha": float(config.rank)})
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        type(pipe).save_lora_weights(save_directory=tmp, weight_name="lora.safetensors", transformer_lora_layers=layers,
                                     transformer_lora_adapter_metadata=adapter_metadata(config, targets))
        written = Path(tmp) / "lora.safetensors"
        if metadata is None:
            os.replace(written, target)
            return target
        with safe_open(str(written), framework="pt") as handle:
            header = handle.metadata() or {}
        return save_safetensors(target, load_file(str(written)), {**header, **metadata})


def read_flux_lora(pipe, path: Path, adapter_name: str) -> None:
    """Load a Flux LoRA file of either layout as the named adapter on the transformer. A
    kohya file goes through keymap.from_kohya, exact for this transformer's own widths
    (diffusers' converter assumes the full-size model's); a diffusers one through diffusers."""
    from peft import LoraConfig, set_peft_model_state_dict
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    if not any(k.startswith(keymap.KOHYA) for k in tensors):
        pipe.load_lora_weights(str(path), adapter_name=adapter_name)
        return
    transformer = pipe.transformer
    try:
        state, ranks = keymap.from_kohya(tensors, transformer)
    except ValueError as exc:
        raise UserError(f"{path.name}: {exc}") from None
    config = LoraConfig(r=max(ranks.values()), lora_alpha=max(ranks.values()), target_modules=sorted(ranks),
                        rank_pattern=ranks, alpha_pattern=dict(ranks))  # alpha = rank: the scale is in lora_B
    dtype = transformer.dtype
    transformer.add_adapter(config, adapter_name=adapter_name)
    result = set_peft_model_state_dict(transformer, {k: v.to(dtype) for k, v in state.items()}, adapter_name=adapter_name)
    if getattr(result, "unexpected_keys", []):
        raise UserError(f"{path.name}: {len(result.unexpected_keys)} keys do not fit the transformer")
