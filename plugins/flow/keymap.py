"""Flux LoRA keys: diffusers' module names ↔ kohya's (the original BFL layout).

diffusers splits what the original model fuses: a double block's image attention has
``to_q``/``to_k``/``to_v`` where BFL has one ``img_attn.qkv`` Linear, and a single block's
``to_q``/``to_k``/``to_v``/``proj_mlp`` are one ``linear1``. kohya's format (which ComfyUI
and Forge load) names the fused Linear, so separate q/k/v adapters of rank r become one
adapter of rank n·r: the downs stacked, the ups block-diagonal, alpha n·alpha so that
alpha/rank is unchanged. That is exact: each part's rows only see its own down.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

KOHYA = "lora_unet_"
# BFL module → diffusers module(s), in the fused Linear's row order.
DOUBLE = {"img_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
          "txt_attn_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
          "img_attn_proj": ("attn.to_out.0",), "txt_attn_proj": ("attn.to_add_out",),
          "img_mlp_0": ("ff.net.0.proj",), "img_mlp_2": ("ff.net.2",),
          "txt_mlp_0": ("ff_context.net.0.proj",), "txt_mlp_2": ("ff_context.net.2",),
          "img_mod_lin": ("norm1.linear",), "txt_mod_lin": ("norm1_context.linear",)}
SINGLE = {"linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"), "linear2": ("proj_out",),
          "modulation_lin": ("norm.linear",)}


@dataclass(frozen=True)
class Group:
    """One kohya module and the diffusers Linears it fuses, with their output widths."""

    kohya: str  # e.g. lora_unet_single_blocks_0_linear1
    parts: tuple[str, ...]  # diffusers module paths inside the transformer
    widths: tuple[int, ...]


def groups(transformer) -> list[Group]:
    """Every kohya module of this transformer, widths read from its layers."""
    found = []
    for kind, table, count in (("double_blocks", DOUBLE, transformer.config.num_layers),
                               ("single_blocks", SINGLE, transformer.config.num_single_layers)):
        diffusers_block = "transformer_blocks" if kind == "double_blocks" else "single_transformer_blocks"
        for i in range(count):
            for bfl, parts in table.items():
                paths = tuple(f"{diffusers_block}.{i}.{p}" for p in parts)
                widths = tuple(_linear(transformer, p).out_features for p in paths)
                found.append(Group(f"{KOHYA}{kind}_{i}_{bfl}", paths, widths))
    return found


def _linear(transformer, path: str) -> torch.nn.Module:
    module = transformer.get_submodule(path)
    return getattr(module, "base_layer", module)  # under a peft wrapper: the Linear itself


def to_kohya(state: dict[str, torch.Tensor], alpha: float, transformer) -> dict[str, torch.Tensor]:
    """peft LoRA state of the transformer ({module}.lora_A.weight / .lora_B.weight) → kohya
    tensors. Raises ValueError for a module kohya's layout has no name for."""
    downs = {k.removesuffix(".lora_A.weight"): v for k, v in state.items() if k.endswith(".lora_A.weight")}
    ups = {k.removesuffix(".lora_B.weight"): v for k, v in state.items() if k.endswith(".lora_B.weight")}
    out: dict[str, torch.Tensor] = {}
    used = set()
    for group in groups(transformer):
        present = [i for i, p in enumerate(group.parts) if p in downs]
        if not present:
            continue
        rank = downs[group.parts[present[0]]].shape[0]
        down = torch.cat([downs[group.parts[i]] for i in present])
        up = torch.zeros(sum(group.widths), rank * len(present), dtype=down.dtype)
        for column, i in enumerate(present):
            row = sum(group.widths[:i])
            up[row:row + group.widths[i], column * rank:(column + 1) * rank] = ups[group.parts[i]]
        out[f"{group.kohya}.lora_down.weight"] = down.contiguous()
        out[f"{group.kohya}.lora_up.weight"] = up
        out[f"{group.kohya}.alpha"] = torch.tensor(float(alpha) * len(present))
        used.update(group.parts[i] for i in present)
    stray = sorted(set(downs) - used)
    if stray:
        raise ValueError(f"no kohya name for {stray[0]} (and {len(stray) - 1} more)" if len(stray) > 1
                         else f"no kohya name for {stray[0]}")
    return out


def from_kohya(tensors: dict[str, torch.Tensor], transformer) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """kohya tensors → (peft state with alpha/rank folded into lora_B, rank per module).
    Each part keeps the whole fused down and its own rows of the up: exact for any file,
    block-diagonal or not. Raises ValueError naming a key that fits no module."""
    by_name = {g.kohya: g for g in groups(transformer)}
    state: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    prefixes = {k.rsplit(".", 2)[0] if k.endswith("weight") else k.rsplit(".", 1)[0] for k in tensors}
    for prefix in sorted(prefixes):
        group = by_name.get(prefix)
        if group is None:
            raise ValueError(f"key {prefix} names no module of this Flux transformer")
        down, up = tensors.get(f"{prefix}.lora_down.weight"), tensors.get(f"{prefix}.lora_up.weight")
        if down is None or up is None:
            raise ValueError(f"{prefix} lacks its lora_down or lora_up weight")
        if up.shape[0] != sum(group.widths) or up.shape[1] != down.shape[0]:
            raise ValueError(f"{prefix}: up {tuple(up.shape)} does not fit down {tuple(down.shape)} "
                             f"and the layer's {sum(group.widths)} outputs")
        rank = down.shape[0]
        scale = float(tensors.get(f"{prefix}.alpha", torch.tensor(float(rank)))) / rank
        row = 0
        for part, width in zip(group.parts, group.widths):
            state[f"{part}.lora_A.weight"] = down
            state[f"{part}.lora_B.weight"] = up[row:row + width] * scale
            ranks[part] = rank
            row += width
    return state, ranks


def folded(state: dict[str, torch.Tensor], alpha: float, rank: int) -> dict[str, torch.Tensor]:
    """The same adapter with alpha/rank folded into lora_B, for the diffusers-format file:
    ComfyUI ignores the header's lora_alpha, so a file that relied on it would load at the
    wrong strength whenever alpha ≠ rank."""
    scale = float(alpha) / rank
    return {k: (v * scale if k.endswith(".lora_B.weight") else v) for k, v in state.items()}
