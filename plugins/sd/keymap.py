"""Module names across the three worlds a LoRA file must live in.

diffusers names modules ``down_blocks.0.attentions.0…``; the original (LDM/"compvis")
code that A1111 and ComfyUI run names the same modules ``input_blocks.1.1…``. kohya's
files use ``lora_unet_<diffusers name>`` for SD1 and ``lora_unet_<LDM name>`` for SDXL.
Here: the diffusers→LDM mapping for any UNet of the SD layout (from its config), kohya
prefixes, and the key rules A1111 (extensions-builtin/Lora/networks.py) and ComfyUI
(comfy/lora.py) apply when they load a file — re-implemented to check our files.
"""

from __future__ import annotations

import re

RESNET_PARTS = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
TOP_LEVEL = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
             "time_embedding.linear_2": "time_embed.2", "add_embedding.linear_1": "label_emb.0.0",
             "add_embedding.linear_2": "label_emb.0.2", "conv_norm_out": "out.0", "conv_out": "out.2"}
# transformers CLIP names → OpenCLIP names (SDXL's second text encoder in LDM checkpoints).
OPENCLIP_PARTS = {"self_attn.q_proj": "attn", "self_attn.k_proj": "attn", "self_attn.v_proj": "attn",
                  "self_attn.out_proj": "attn.out_proj", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
                  "layer_norm1": "ln_1", "layer_norm2": "ln_2"}
# ComfyUI's LORA_CLIP_MAP: the only text-encoder modules it maps.
COMFY_CLIP_PARTS = ("mlp_fc1", "mlp_fc2", "self_attn_k_proj", "self_attn_q_proj", "self_attn_v_proj", "self_attn_out_proj")
KNOWN_PARTS = {
    "lora": {"lora_up.weight", "lora_down.weight", "lora_mid.weight", "alpha", "dora_scale"},
    "loha": {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2", "alpha", "dora_scale"},
    "lokr": {"lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2", "alpha", "dora_scale"},
}


def _split_block(name: str, prefix: str) -> tuple[int, str, int, str] | None:
    m = re.match(rf"{prefix}\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)(?:\.(.*))?$", name)
    return (int(m[1]), m[2], int(m[3]), m[4] or "") if m else None


def _resnet_rest(rest: str) -> str:
    head, _, tail = rest.partition(".")
    mapped = RESNET_PARTS.get(head, head)
    return f"{mapped}.{tail}" if tail else mapped


def unet_to_ldm(name: str, config) -> str | None:
    """The LDM name of a diffusers UNet module (None when the module has no counterpart)."""
    layers = config.layers_per_block
    for key, value in TOP_LEVEL.items():
        if name == key or name.startswith(key + "."):
            return value + name[len(key):]
    if (parts := _split_block(name, "down_blocks")) is not None:
        block, kind, index, rest = parts
        if kind == "downsamplers":
            return f"input_blocks.{(block + 1) * (layers + 1)}.0.op" + (rest[len("conv"):] if rest.startswith("conv") else "")
        base = f"input_blocks.{1 + block * (layers + 1) + index}"
        return f"{base}.0.{_resnet_rest(rest)}" if kind == "resnets" else f"{base}.1.{rest}"
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)(?:\.(.*))?$", name)
    if m:
        rest = m[3] or ""
        return f"middle_block.{int(m[2]) * 2}.{_resnet_rest(rest)}" if m[1] == "resnets" else f"middle_block.1.{rest}"
    if (parts := _split_block(name, "up_blocks")) is not None:
        block, kind, index, rest = parts
        if kind == "upsamplers":
            has_attention = "CrossAttn" in config.up_block_types[block]
            return f"output_blocks.{block * (layers + 1) + layers}.{2 if has_attention else 1}.{rest}"
        base = f"output_blocks.{block * (layers + 1) + index}"
        return f"{base}.0.{_resnet_rest(rest)}" if kind == "resnets" else f"{base}.1.{rest}"
    return None


def strip_text_model(name: str) -> str:
    """transformers 5 dropped the ``text_model.`` level of CLIP module names; 4.x had it."""
    return name[len("text_model."):] if name.startswith("text_model.") else name


def kohya_prefix(component: str, module: str, family: str, config=None) -> str:
    """The kohya key prefix of a trained module: component is unet, text_encoder or text_encoder_2."""
    if component == "unet":
        name = unet_to_ldm(module, config) if family == "sdxl" else module
        if name is None:
            raise ValueError(f"no LDM name for UNet module {module}")
        return "lora_unet_" + name.replace(".", "_")
    head = {"text_encoder": "lora_te1_" if family == "sdxl" else "lora_te_", "text_encoder_2": "lora_te2_"}[component]
    return head + "text_model_" + strip_text_model(module).replace(".", "_")


# --- what A1111 and ComfyUI can address in a loaded model -------------------------


def a1111_layer_names(unet, text_encoders: dict[str, object], family: str) -> set[str]:
    """The names A1111 gives a model's modules (``network_layer_mapping``)."""
    names = set()
    for module, _ in unet.named_modules():
        ldm = unet_to_ldm(module, unet.config) if module else None
        if ldm:
            names.add("diffusion_model_" + ldm.replace(".", "_"))
    for component, encoder in text_encoders.items():
        for module, _ in encoder.named_modules():
            rest = strip_text_model(module)
            if not rest:
                continue
            if component == "text_encoder_2":
                m = re.match(r"encoder\.layers\.(\d+)\.(.+)$", rest)
                if m and m[2] in OPENCLIP_PARTS:
                    names.add(f"1_model_transformer_resblocks_{m[1]}_{OPENCLIP_PARTS[m[2]].replace('.', '_')}")
            else:
                lead = "0_" if family == "sdxl" else ""
                names.add(f"{lead}transformer_text_model_{rest.replace('.', '_')}")
    return names


def a1111_compvis_name(key: str) -> str:
    """A1111's convert_diffusers_name_to_compvis (SD1/SDXL rules; SD2 text encoders aside)."""
    rules = [
        (r"lora_unet_conv_in(.*)", lambda m: f"diffusion_model_input_blocks_0_0{m[1]}"),
        (r"lora_unet_conv_out(.*)", lambda m: f"diffusion_model_out_2{m[1]}"),
        (r"lora_unet_time_embedding_linear_(\d+)(.*)", lambda m: f"diffusion_model_time_embed_{int(m[1]) * 2 - 2}{m[2]}"),
        (r"lora_unet_down_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)",
         lambda m: f"diffusion_model_input_blocks_{1 + int(m[1]) * 3 + int(m[3])}_{1 if m[2] == 'attentions' else 0}_"
                   f"{_a1111_suffix(m[2], m[4])}"),
        (r"lora_unet_mid_block_(attentions|resnets)_(\d+)_(.+)",
         lambda m: f"diffusion_model_middle_block_{1 if m[1] == 'attentions' else int(m[2]) * 2}_{_a1111_suffix(m[1], m[3])}"),
        (r"lora_unet_up_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)",
         lambda m: f"diffusion_model_output_blocks_{int(m[1]) * 3 + int(m[3])}_{1 if m[2] == 'attentions' else 0}_"
                   f"{_a1111_suffix(m[2], m[4])}"),
        (r"lora_unet_down_blocks_(\d+)_downsamplers_0_conv", lambda m: f"diffusion_model_input_blocks_{3 + int(m[1]) * 3}_0_op"),
        (r"lora_unet_up_blocks_(\d+)_upsamplers_0_conv",
         lambda m: f"diffusion_model_output_blocks_{2 + int(m[1]) * 3}_{2 if int(m[1]) > 0 else 1}_conv"),
        (r"lora_te_text_model_encoder_layers_(\d+)_(.+)", lambda m: f"transformer_text_model_encoder_layers_{m[1]}_{m[2]}"),
        (r"lora_te2_text_model_encoder_layers_(\d+)_(.+)", lambda m: f"1_model_transformer_resblocks_{m[1]}_{_openclip_suffix(m[2])}"),
    ]
    for pattern, build in rules:
        m = re.match(pattern, key)
        if m:
            return build(m)
    return key


def _a1111_suffix(kind: str, rest: str) -> str:
    if kind != "resnets":
        return rest
    return {k: v.replace(".", "_") for k, v in RESNET_PARTS.items()}.get(rest, rest)


def _openclip_suffix(rest: str) -> str:
    if "mlp_fc1" in rest:
        return rest.replace("mlp_fc1", "mlp_c_fc")
    if "mlp_fc2" in rest:
        return rest.replace("mlp_fc2", "mlp_c_proj")
    return rest.replace("self_attn", "attn")


def a1111_resolves(prefix: str, layers: set[str]) -> bool:
    """Whether A1111 finds a module for a key prefix, trying its fallbacks in its order."""
    key = a1111_compvis_name(prefix)
    if key in layers:
        return True
    m = re.match(r"(.*)_([qkv]_proj)$", key)  # q/k/v of an in_proj MultiheadAttention
    if m and m[1] in layers:
        return True
    if "lora_unet" in prefix:  # SDXL files carry LDM names already
        return prefix.replace("lora_unet", "diffusion_model") in layers
    if "lora_te1_text_model" in prefix:
        return (prefix.replace("lora_te1_text_model", "0_transformer_text_model") in layers
                or prefix.replace("lora_te1_text_model", "transformer_text_model") in layers)
    return False


def comfy_key_map(unet, text_encoders: dict[str, object], family: str) -> set[str]:
    """The kohya-style prefixes ComfyUI's model_lora_keys_unet / model_lora_keys_clip accept."""
    keys = set()
    for module, mod in unet.named_modules():
        if not module or getattr(mod, "weight", None) is None:
            continue
        ldm = unet_to_ldm(module, unet.config)
        if ldm:
            keys.add("lora_unet_" + ldm.replace(".", "_"))
            keys.add("lora_unet_" + module.replace(".", "_"))
    for component, encoder in text_encoders.items():
        layers = sum(1 for n, _ in encoder.named_modules() if re.fullmatch(r"(text_model\.)?encoder\.layers\.\d+", n))
        for b in range(layers):
            for part in COMFY_CLIP_PARTS:
                if component == "text_encoder_2":
                    keys.add(f"lora_te2_text_model_encoder_layers_{b}_{part}")
                elif family == "sdxl":
                    keys.update({f"lora_te1_text_model_encoder_layers_{b}_{part}", f"lora_te_text_model_encoder_layers_{b}_{part}"})
                else:
                    keys.update({f"lora_te_text_model_encoder_layers_{b}_{part}", f"lora_te1_text_model_encoder_layers_{b}_{part}"})
    return keys


def file_kind(parts: set[str]) -> str:
    if any(p.startswith("hada_") for p in parts):
        return "loha"
    if any(p.startswith("lokr_") for p in parts):
        return "lokr"
    return "lora"


def unmapped_keys(state_keys: list[str], *, accepts) -> list[str]:
    """Keys whose module prefix ``accepts`` rejects, or whose part no loader reads."""
    by_prefix: dict[str, set[str]] = {}
    for key in state_keys:
        prefix, _, part = key.partition(".")
        by_prefix.setdefault(prefix, set()).add(part)
    bad = []
    for prefix, parts in sorted(by_prefix.items()):
        known = KNOWN_PARTS[file_kind(parts)]
        if not accepts(prefix):
            bad.extend(f"{prefix}.{p}" for p in sorted(parts))
        else:
            bad.extend(f"{prefix}.{p}" for p in sorted(parts) if p not in known)
    return bad
