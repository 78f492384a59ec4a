"""Check a saved Flux LoRA as its users will meet it (the rules of the SD check, verify.py
there, in Flux's layouts): the kohya file read back holds exactly the trained modules, with
each layer's weight change and the scale alpha/rank it was trained with, and reproduces the
trained transformer's output; the diffusers-format file, loaded by diffusers itself, does
too. On a full-size Flux transformer the kohya file is also loaded through diffusers' own
kohya-Flux converter, an independent reader (it assumes Flux.1's 3072-wide layers, so on
the toy it cannot run; tests/test_flux_keymap.py holds our layout against it at full size)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from clood_candy_plugins.flux import keymap
from clood_candy_plugins.flux.files import read_flux_lora
from clood_candy_plugins.sd.lora import ADAPTER, activate_only, adapter_state
from clood_candy_plugins.sd.verify import (CHECK_ADAPTER, at_base_precision, captured_warnings, compare, compute_eps,
                                           drop_adapter, weight_report)

FULL_SIZE = {"num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128, "num_attention_heads": 24}


@torch.no_grad()
def _probe(base, prompt: str) -> torch.Tensor:
    """One transformer prediction on fixed small latents at σ = 0.5, through the text encoders."""
    model = base.denoiser
    gen = torch.Generator().manual_seed(1234)
    noisy = torch.randn((1, model.config.in_channels // 4, 8, 8), generator=gen)
    cond = base.encode_text([prompt], base.resolution).to(base.device, model.dtype)
    sigma = torch.tensor([0.5], device=base.device)
    return base.objective().predict(model, noisy.to(base.device, model.dtype), sigma, cond).float().cpu()


def _scales(tensors: dict[str, torch.Tensor]) -> dict[str, float]:
    """Each kohya module's alpha / rank (what a loader multiplies it by)."""
    return {k.removesuffix(".alpha"): float(v) / tensors[k.removesuffix(".alpha") + ".lora_down.weight"].shape[0]
            for k, v in tensors.items() if k.endswith(".alpha")}


def _load(base, path: Path, *, through_diffusers: bool) -> tuple[str | None, list[str]]:
    with captured_warnings() as grabbed:
        try:
            if through_diffusers:
                base.pipe.load_lora_weights(str(path), adapter_name=CHECK_ADAPTER)
            else:
                read_flux_lora(base.pipe, path, CHECK_ADAPTER)
            error = None
        except Exception as exc:
            error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
    return error, [w[:300] for w in grabbed if "unexpected" in w.lower() or "missing" in w.lower()]


def _output_check(base, prompt: str, want: torch.Tensor, name: str, eps: float) -> dict[str, Any]:
    activate_only(base.pipe, [CHECK_ADAPTER])
    return compare(_probe(base, prompt), want, name, eps)


def verify_flux_lora(base, path: Path, *, config, prompt: str, diffusers_file: Path | None = None) -> dict[str, Any]:
    pipe, model = base.pipe, base.denoiser
    tensors = load_file(str(path))
    result: dict[str, Any] = {"file": path.name, "notes": [], "loaded_by": "clood's kohya-Flux reader (keymap.py)"}
    want_scale = float(config.alpha) / config.rank
    scales = _scales(tensors)
    result["alpha_in_file"] = sorted({float(tensors[k]) for k in tensors if k.endswith(".alpha")})
    result["alpha_matches_config"] = bool(scales) and all(abs(s - want_scale) <= 1e-6 * want_scale for s in scales.values())
    dtype = model.dtype
    eps = compute_eps(dtype, base.device)
    result["dtype"], result["compute_eps"] = str(dtype).removeprefix("torch."), eps
    # The keys the trained adapter makes, against the file's.
    trained = keymap.to_kohya(adapter_state(pipe, config)["transformer"], config.alpha, model)
    result["unexpected_keys"] = sorted(set(tensors) - set(trained))
    result["missing_keys"] = sorted(set(trained) - set(tensors))
    full_size = all(model.config.get(k) == v for k, v in FULL_SIZE.items())
    try:
        activate_only(pipe, [])
        base_out = _probe(base, prompt)
        activate_only(pipe, [ADAPTER])
        with at_base_precision(pipe, ADAPTER):
            trained_out = _probe(base, prompt)
        error, result["load_warnings"] = _load(base, path, through_diffusers=False)
        if error:
            result["load_error"] = error
        else:
            with at_base_precision(pipe, ADAPTER):
                groups = {p: g.kohya for g in keymap.groups(model) for p in g.parts}
                result.update(weight_report(pipe, eps, lambda component, module: groups.get(module, module)))
            activate_only(pipe, [CHECK_ADAPTER])
            file_out = _probe(base, prompt)
            result["output_change"] = float((file_out - base_out).abs().max())
            result["output_changed"] = result["output_change"] > 1e-6
            result.update(compare(file_out, trained_out, "reproduces_trained", eps))
        drop_adapter(pipe, CHECK_ADAPTER)
        if full_size:
            error, _ = _load(base, path, through_diffusers=True)
            result["diffusers_kohya_load"] = error is None
            if error:
                result["diffusers_kohya_error"] = error
            else:
                result.update(_output_check(base, prompt, trained_out, "diffusers_kohya_reproduces", eps))
            drop_adapter(pipe, CHECK_ADAPTER)
        else:
            result["notes"].append("diffusers' kohya-Flux converter assumes Flux.1's full-size layers: on this "
                                   "transformer the kohya file was read by clood's reader only")
        if diffusers_file is not None:
            error, _ = _load(base, diffusers_file, through_diffusers=True)
            if error:
                result["diffusers_file_error"] = error
            else:
                result.update(_output_check(base, prompt, trained_out, "diffusers_file_reproduces", eps))
    finally:
        drop_adapter(pipe, CHECK_ADAPTER)
        activate_only(pipe, [ADAPTER])
    result["notes"].append("Automatic1111 itself does not load Flux; Forge and ComfyUI load the kohya file")
    result["ok"] = bool(
        "load_error" not in result and "diffusers_file_error" not in result and "diffusers_kohya_error" not in result
        and not result["unexpected_keys"] and not result["missing_keys"] and result.get("output_changed")
        and result.get("reproduces_trained") and result.get("weights_reproduce_trained")
        and result.get("diffusers_file_reproduces", True) and result.get("diffusers_kohya_reproduces", True)
        and result["alpha_matches_config"])
    return result
