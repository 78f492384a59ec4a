"""Adapters on the UNet (and optionally text encoders) and the files they become.

Training uses peft: LoRA, DoRA (LoRA with weight decomposition), LoHa and LoKr. Saving
writes the kohya layout A1111 and ComfyUI read (``lora_unet_…``/``lora_te…`` prefixes,
``lora_down``/``lora_up``/``alpha``, ``dora_scale``, LyCORIS ``hada_*``/``lokr_*``) with the
real alpha, and the diffusers layout (``unet.<module>.lora_A.weight``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from clood_candy.errors import UserError
from clood_candy.fsutil import write_bytes
from clood_candy.records import TrainConfig
from clood_candy_plugins.sd.keymap import kohya_prefix

ADAPTER = "clood_train"
# The layers each ``targets`` choice trains, as peft module-name suffixes. "full" is what
# kohya's networks/lora.py patches by default on SD1/SDXL: every Linear and 1x1 conv inside
# the UNet's Transformer2DModel blocks (attention q/k/v/out, the feed-forward's GEGLU
# projection and output, proj_in/proj_out: a 1x1 conv in SD1, a Linear in SDXL) and, in the
# text encoders, CLIPAttention and CLIPMLP. On SD1.5 that is 192 UNet layers + 72 in the
# text encoder; on SDXL 722 + 72 + 192 (tests/test_sd_targets.py counts them).
ATTENTION = ["to_q", "to_k", "to_v", "to_out.0"]
UNET_TARGETS = {"full": [*ATTENTION, "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"], "attention": ATTENTION}
TEXT_TARGETS = {"full": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
                "attention": ["q_proj", "k_proj", "v_proj", "out_proj"]}
# peft parameter suffix → kohya/LyCORIS part name
PART_NAMES = {"lora_A.weight": "lora_down.weight", "lora_B.weight": "lora_up.weight",
              "lora_magnitude_vector": "dora_scale", "hada_w1_a": "hada_w1_a", "hada_w1_b": "hada_w1_b",
              "hada_w2_a": "hada_w2_a", "hada_w2_b": "hada_w2_b", "lokr_w1": "lokr_w1", "lokr_w1_a": "lokr_w1_a",
              "lokr_w1_b": "lokr_w1_b", "lokr_w2": "lokr_w2", "lokr_w2_a": "lokr_w2_a", "lokr_w2_b": "lokr_w2_b"}


def adapter_config(config: TrainConfig, targets: list[str]):
    from peft import LoHaConfig, LoKrConfig, LoraConfig

    if config.variant in ("lora", "dora"):
        return LoraConfig(r=config.rank, lora_alpha=config.alpha, target_modules=targets,
                          init_lora_weights="gaussian", use_dora=config.variant == "dora")
    if config.variant == "loha":
        return LoHaConfig(r=config.rank, alpha=config.alpha, target_modules=targets)
    return LoKrConfig(r=config.rank, alpha=config.alpha, target_modules=targets)


def unet_targets(config: TrainConfig) -> list[str]:
    """The UNet modules the adapter trains: the config's own list, else its ``targets`` choice."""
    return list(config.target_modules) if config.target_modules is not None else list(UNET_TARGETS[config.targets])


def text_targets(config: TrainConfig) -> list[str]:
    return list(TEXT_TARGETS[config.targets])


def component_targets(config: TrainConfig, component: str) -> list[str]:
    return unet_targets(config) if component == "unet" else text_targets(config)


def denoiser_name(pipe) -> str:
    """The model a LoRA mainly trains: a UNet (SD1/SDXL) or a transformer (Flux)."""
    return "transformer" if getattr(pipe, "transformer", None) is not None else "unet"


def denoiser(pipe) -> torch.nn.Module:
    return getattr(pipe, denoiser_name(pipe))


def text_encoder_names(pipe) -> list[str]:
    return [n for n in ("text_encoder", "text_encoder_2") if getattr(pipe, n, None) is not None]


def attach(pipe, config: TrainConfig, targets: list[str] | str | None = None) -> list[torch.nn.Parameter]:
    """Add the training adapter; return its parameters (the only trainable ones). If any
    part fails, the parts already added come off again: the base is shared by every config
    of a fight, and one config's failure must not become the next one's. ``targets``: the
    denoiser's layers when the family has its own (default: the UNet's for the config)."""
    detach(pipe)  # a run killed mid-training in this process left one behind
    try:
        with quiet_peft():  # sampling adapters may already sit in the model: that is intended
            denoiser(pipe).add_adapter(adapter_config(config, unet_targets(config) if targets is None else targets),
                                       adapter_name=ADAPTER)
            if config.train_text_encoder:
                for name in text_encoder_names(pipe):
                    getattr(pipe, name).add_adapter(adapter_config(config, text_targets(config)), adapter_name=ADAPTER)
        activate_only(pipe, [ADAPTER])  # a sampler may have left other adapters on, or all off
        params = [p for m in trained_modules(pipe, config).values() for p in m.parameters() if p.requires_grad]
        for p in params:
            p.data = p.data.float()  # trainable weights in fp32 even on a half-precision base
    except BaseException:
        detach(pipe)
        raise
    return params


def detach(pipe, config: TrainConfig | None = None) -> None:
    """Remove the training adapter from every model that holds it (the UNet and both text
    encoders, whatever the config asked for: a half-attached adapter is removed too)."""
    for module in [denoiser(pipe)] + [getattr(pipe, n) for n in text_encoder_names(pipe)]:
        if ADAPTER not in (getattr(module, "peft_config", None) or {}):
            continue
        with quiet_peft():
            if hasattr(module, "delete_adapters"):  # diffusers models
                module.delete_adapters(ADAPTER)
            else:  # transformers models
                module.delete_adapter(ADAPTER)
    release_empty_layers(pipe)


def release_empty_layers(pipe) -> None:
    """Put the plain layer back wherever a deleted adapter left its peft wrapper holding no
    adapter. Those wrappers are not harmless: peft cannot wrap a conv that a LoHa/LoKr
    layer wraps in a LoRA one, so after a LoKr file was verified, a LoRA on SD1's 1x1-conv
    proj_in (a default target) would fail to attach."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    def holds_none(layer) -> bool:
        return not any(len(getattr(layer, part, None) or {}) for part in layer.adapter_layer_names)

    for model in [denoiser(pipe)] + [getattr(pipe, n) for n in text_encoder_names(pipe)]:
        for name, layer in list(model.named_modules()):
            if isinstance(layer, BaseTunerLayer) and holds_none(layer):
                parent, _, child = name.rpartition(".")
                # one level only: a wrapper inside it may still hold another adapter
                setattr(model.get_submodule(parent) if parent else model, child, layer.base_layer)


@contextmanager
def quiet_peft():
    """peft warns when a model holds several adapters, or when an active one is deleted;
    both are how we work (sampling adapters stay loaded next to the training one)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*(peft_config|was active which is now deleted).*")
        yield


def activate_only(pipe, names: list[str], *, text_only: bool = False) -> None:
    """Make exactly these adapters active (none: the base alone) on every adapted layer of
    the UNet and text encoders (or the text encoders only)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    models = [getattr(pipe, n) for n in text_encoder_names(pipe)] + ([] if text_only else [denoiser(pipe)])
    for model in models:
        for module in model.modules():
            if isinstance(module, BaseTunerLayer):
                present = [n for n in names if n in getattr(module, "scaling", {})]
                module.enable_adapters(bool(present))
                if present:
                    module.set_adapter(present)


def trained_modules(pipe, config: TrainConfig) -> dict[str, torch.nn.Module]:
    found = {denoiser_name(pipe): denoiser(pipe)}
    if config.train_text_encoder:
        found.update({n: getattr(pipe, n) for n in text_encoder_names(pipe)})
    return found


def adapter_state(pipe, config: TrainConfig) -> dict[str, dict[str, torch.Tensor]]:
    """component → {peft module path + part: tensor} for the training adapter."""
    from peft import get_peft_model_state_dict

    return {name: {k: v.detach().float().cpu().contiguous() for k, v in
                   get_peft_model_state_dict(module, adapter_name=ADAPTER).items()}
            for name, module in trained_modules(pipe, config).items()}


def load_adapter_state(pipe, config: TrainConfig, state: dict[str, dict[str, torch.Tensor]]) -> None:
    from peft import set_peft_model_state_dict

    for name, module in trained_modules(pipe, config).items():
        result = set_peft_model_state_dict(module, state[name], adapter_name=ADAPTER)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise UserError(f"checkpoint does not fit the {name} adapter ({len(unexpected)} unexpected keys)")


def _split(key: str) -> tuple[str, str]:
    for suffix, part in PART_NAMES.items():
        if key.endswith("." + suffix):
            return key[: -len(suffix) - 1], part
    raise ValueError(f"unknown adapter parameter {key}")


def to_kohya(state: dict[str, dict[str, torch.Tensor]], config: TrainConfig, family: str,
             unet_config) -> dict[str, torch.Tensor]:
    """peft state → kohya keys, writing each module's real alpha (not alpha = rank)."""
    out: dict[str, torch.Tensor] = {}
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for component, tensors in state.items():
        for key, value in tensors.items():
            module, part = _split(key)
            prefix = kohya_prefix(component, module, family, unet_config)
            modules.setdefault(prefix, {})[part] = value
    for prefix, parts in modules.items():
        if "lokr_w1" in parts and "lokr_w2" in parts:
            # LyCORIS applies no alpha/rank scale when both Kronecker factors are full
            # matrices; peft does, so bake it into w1 for the other tools.
            parts["lokr_w1"] = parts["lokr_w1"] * (config.alpha / config.rank)
        for part, value in parts.items():
            if part == "dora_scale":
                # LyCORIS's layout for per-output norms (what peft trains): (out, 1[, 1, 1]),
                # one trailing 1 per weight dimension; ComfyUI reads the axis from the shape.
                ndim = parts["lora_down.weight"].ndim
                value = value.reshape(-1, *[1] * (ndim - 1))
            out[f"{prefix}.{part}"] = value
        out[f"{prefix}.alpha"] = torch.tensor(float(config.alpha))
    return out


def addnet_hash(blob: bytes) -> str:
    """sha256 of a safetensors file's tensor bytes (header skipped): the hash A1111 shows.
    It does not cover the header, so the file can carry its own hash in its metadata."""
    header = int.from_bytes(blob[:8], "little")
    return hashlib.sha256(blob[8 + header:]).hexdigest()


def save_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    from safetensors.torch import save

    digest = addnet_hash(save(tensors, metadata=metadata))
    return write_bytes(path, save(tensors, metadata={**metadata, "sshs_model_hash": digest}))


def adapter_metadata(config: TrainConfig, targets: list[str]) -> dict[str, Any]:
    """The peft config as JSON-able data, for diffusers to rebuild the adapter on load."""
    data = adapter_config(config, targets).to_dict()
    return json.loads(json.dumps(data, default=lambda v: sorted(v) if isinstance(v, set) else str(v)))


def needs_peft_reader(path: Path) -> bool:
    """diffusers cannot load LoHa/LoKr files for SD, and drops DoRA's ``dora_scale``."""
    with safe_open(str(path), framework="pt") as handle:
        return any(".hada_" in k or ".lokr_" in k or k.endswith(".dora_scale") for k in handle.keys())


def _reader_config(entry: dict[str, Any]):
    """A peft config rebuilding exactly the modules, ranks and alphas a kohya file holds."""
    from peft import LoHaConfig, LoKrConfig, LoraConfig

    state, alphas, shapes = entry["state"], entry["alpha"], entry["shapes"]
    modules = sorted(shapes)
    ranks, scales = {}, {}
    for m in modules:
        parts = shapes[m]
        if "lora_down.weight" in parts:
            ranks[m] = parts["lora_down.weight"][0]
        elif "hada_w1_b" in parts:
            ranks[m] = parts["hada_w1_b"][0]
        elif "lokr_w2_b" in parts:
            ranks[m] = parts["lokr_w2_b"][0]
        else:
            # Both Kronecker factors full: peft keeps w2 full when r >= its larger side / 2,
            # and the file's w1 already carries the scale, so alpha = r (scale 1).
            ranks[m] = max(parts["lokr_w2"])
            scales[m] = float(ranks[m])
        scales.setdefault(m, alphas.get(m, float(ranks[m])))
    common = {"r": max(ranks.values()), "target_modules": modules, "rank_pattern": ranks, "alpha_pattern": scales}
    if any(".hada_" in k for k in state):
        return LoHaConfig(alpha=1.0, **common)
    if any(".lokr_" in k for k in state):
        return LoKrConfig(alpha=1.0, **common)
    return LoraConfig(lora_alpha=1.0, use_dora=any(k.endswith(".lora_magnitude_vector") for k in state), **common)


def load_with_peft(pipe, path: Path, adapter_name: str, family: str | None = None) -> None:
    """Load a kohya-layout file (LoRA, DoRA, LoHa, LoKr) into the pipeline as a peft adapter."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    family = family or ("sdxl" if getattr(pipe, "text_encoder_2", None) is not None else "sd1")
    components = {"unet": pipe.unet, **{n: getattr(pipe, n) for n in text_encoder_names(pipe)}}
    prefixes = {}
    for component, model in components.items():
        for module, _ in model.named_modules():
            try:
                prefixes[kohya_prefix(component, module, family, pipe.unet.config)] = (component, module)
            except (ValueError, KeyError):
                continue
    peft_part = {v: k for k, v in PART_NAMES.items()}
    per_component: dict[str, dict[str, Any]] = {}
    for key, value in load_file(str(path)).items():
        prefix, _, part = key.partition(".")
        if prefix not in prefixes:
            raise UserError(f"{path.name}: key {key} names no module of this base")
        component, module = prefixes[prefix]
        entry = per_component.setdefault(component, {"state": {}, "alpha": {}, "shapes": {}})
        if part == "alpha":
            entry["alpha"][module] = float(value)
            continue
        if part not in peft_part:
            raise UserError(f"{path.name}: unknown part {part} in {key}")
        entry["shapes"].setdefault(module, {})[part] = tuple(value.shape)
        if part == "dora_scale":  # back to peft's layout: (out,) for linear, (1, out, 1, 1) for conv
            value = value.reshape(1, -1, 1, 1) if value.ndim == 4 else value.flatten()
        entry["state"][f"{module}.{peft_part[part]}"] = value
    for component, entry in per_component.items():
        model = components[component]
        dtype = model.dtype  # a property that walks every parameter: read it once
        model.add_adapter(_reader_config(entry), adapter_name=adapter_name)
        result = set_peft_model_state_dict(model, {k: v.to(dtype) for k, v in entry["state"].items()},
                                           adapter_name=adapter_name)
        if getattr(result, "unexpected_keys", []):
            raise UserError(f"{path.name}: {len(result.unexpected_keys)} keys do not fit {component}")


def write_lora_files(pipe, out_base: Path, state, config: TrainConfig, family: str,
                     metadata: dict[str, str]) -> tuple[Path, Path]:
    """``<out_base>.safetensors`` (kohya) and ``<out_base>.diffusers.safetensors`` (written by
    diffusers' own ``save_lora_weights``, with the peft config so alpha survives)."""
    kohya = save_safetensors(out_base.with_suffix(".safetensors"),
                             to_kohya(state, config, family, pipe.unet.config), metadata)
    layers, extra = {}, {}
    for component, tensors in state.items():  # unet, text_encoder, text_encoder_2: diffusers' own names
        layers[f"{component}_lora_layers"] = tensors
        extra[f"{component}_lora_adapter_metadata"] = adapter_metadata(config, component_targets(config, component))
    target = out_base.parent / (out_base.name + ".diffusers.safetensors")
    with tempfile.TemporaryDirectory(dir=out_base.parent) as tmp:
        type(pipe).save_lora_weights(save_directory=tmp, weight_name="lora.safetensors", **layers, **extra)
        os.replace(Path(tmp) / "lora.safetensors", target)
    return kohya, target


