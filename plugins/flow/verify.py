"""Check a saved Flux or SD3 LoRA as its users will meet it (the rules of the SD check,
verify.py there, in these families' layouts). For Flux: the kohya file read back holds exactly the trained modules, with
each layer's weight change and the scale alpha/rank it was trained with, and reproduces the
trained transformer's output; the diffusers-format file, loaded by diffusers itself, does
too. On a full-size Flux transformer the kohya file is also loaded through diffusers' own
kohya-Flux converter, an independent reader (it assumes Flux.1's 3072-wide layers, so on
the toy it cannot run; tests/test_flux_keymap.py holds our layout against it at full size).
For SD3 both files are in diffusers' layout and loaded by diffusers itself; the main one has
alpha/rank folded into its weights, so its weight changes carry the scale."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from clood_candy_plugins.flow import keymap
from clood_candy_plugins.flow.files import read_flux_lora
from clood_candy_plugins.sd.lora import ADAPTER, activate_only, adapter_state
from clood_candy_plugins.sd.verify import (CHECK_ADAPTER, at_base_precision, captured_warnings, compare, compute_eps,
                                           drop_adapter, weight_report)

FULL_SIZE = {"num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128, "num_attention_heads": 24}


@torch.no_grad()
def _probe(base, prompt: str) -> torch.Tensor:
    """One transformer prediction on fixed small latents at σ = 0.5, through the text encoders."""
    model = base.denoiser
    gen = torch.Generator().manual_seed(1234)
    objective = base.objective()
    channels = model.config.in_channels // 4 if objective.packed else model.config.in_channels
    noisy = torch.randn((1, channels, 8, 8), generator=gen)
    cond = base.encode_text([prompt], base.resolution).to(base.device, model.dtype)
    sigma = torch.tensor([0.5], device=base.device)
    return objective.predict(model, noisy.to(base.device, model.dtype), sigma, cond).float().cpu()


def _scales(tensors: dict[str, torch.Tensor]) -> dict[str, float]:
    """Each kohya module's alpha / rank (what a loader multiplies it by)."""
    return {k.removesuffix(".alpha"): float(v) / tensors[k.removesuffix(".alpha") + ".lora_down.weight"].shape[0]
            for k, v in tensors.items() if k.endswith(".alpha")}


def _load(read) -> tuple[str | None, list[str]]:
    """Run a reader that loads a file as the check adapter: (error or None, diffusers' key warnings)."""
    with captured_warnings() as grabbed:
        try:
            read()
            error = None
        except Exception as exc:
            error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
    # diffusers' note that a file has no text-encoder keys is no problem for a transformer-only LoRA
    return error, [w[:300] for w in grabbed if ("unexpected" in w.lower() or "missing" in w.lower())
                   and not w.startswith("No LoRA keys associated")]


def _output_check(base, prompt: str, want: torch.Tensor, name: str, eps: float,
                  base_out: torch.Tensor) -> dict[str, Any]:
    activate_only(base.pipe, [CHECK_ADAPTER])
    return compare(_probe(base, prompt), want, name, eps, base_out)


def verify_flux_lora(base, path: Path, *, config, prompt: str, diffusers_file: Path | None = None) -> dict[str, Any]:
    """The kohya file (read by clood's reader; at full size by diffusers' converter too) and the diffusers file."""
    model = base.denoiser
    tensors = load_file(str(path))
    want_scale = float(config.alpha) / config.rank
    scales = _scales(tensors)
    trained = keymap.to_kohya(adapter_state(base.pipe, config)["transformer"], config.alpha, model)
    groups = {p: g.kohya for g in keymap.groups(model) for p in g.parts}
    full_size = all(model.config.get(k) == v for k, v in FULL_SIZE.items())
    result = _verify(base, path, prompt, tensors=tensors, expected=set(trained), name_of=lambda m: groups.get(m, m),
                     read=lambda: read_flux_lora(base.pipe, path, CHECK_ADAPTER),
                     second_reader=(lambda: base.pipe.load_lora_weights(str(path), adapter_name=CHECK_ADAPTER))
                     if full_size else None, diffusers_file=diffusers_file)
    result["loaded_by"] = "clood's kohya-Flux reader (keymap.py)" + (" and diffusers' kohya-Flux converter" if full_size else "")
    result["alpha_in_file"] = sorted({float(tensors[k]) for k in tensors if k.endswith(".alpha")})
    result["alpha_matches_config"] = bool(scales) and all(abs(s - want_scale) <= 1e-6 * want_scale for s in scales.values())
    if not full_size:
        result["notes"].append("diffusers' kohya-Flux converter assumes Flux.1's full-size layers: on this "
                               "transformer the kohya file was read by clood's reader only")
    result["notes"].append("Automatic1111 itself does not load Flux; Forge and ComfyUI load the kohya file")
    return _summed_up(result)


def verify_sd3_lora(base, path: Path, *, config, prompt: str, diffusers_file: Path | None = None) -> dict[str, Any]:
    """Both files in diffusers' layout, read by diffusers; the main one with alpha/rank folded in."""
    tensors = load_file(str(path))
    expected = {f"transformer.{k}" for k in adapter_state(base.pipe, config)["transformer"]}
    result = _verify(base, path, prompt, tensors=tensors, expected=expected, name_of=lambda m: m,
                     read=lambda: base.pipe.load_lora_weights(str(path), adapter_name=CHECK_ADAPTER),
                     second_reader=None, diffusers_file=diffusers_file)
    result["loaded_by"] = "diffusers load_lora_weights"
    result["alpha_in_file"] = []
    # folded: the file's scale is in its weights, which must give back each trained change, scale included
    result["alpha_matches_config"] = bool(result.get("weights_reproduce_trained"))
    result["notes"].append("alpha/rank is folded into the weights (ComfyUI reads no alpha from this layout); "
                           "Automatic1111 itself does not load SD3")
    return _summed_up(result)


def _verify(base, path: Path, prompt: str, *, tensors, expected: set[str], name_of, read, second_reader,
            diffusers_file: Path | None) -> dict[str, Any]:
    pipe, model = base.pipe, base.denoiser
    result: dict[str, Any] = {"file": path.name, "notes": []}
    dtype = model.dtype
    eps = compute_eps(dtype, base.device)
    result["dtype"], result["compute_eps"] = str(dtype).removeprefix("torch."), eps
    result["unexpected_keys"] = sorted(set(tensors) - expected)
    result["missing_keys"] = sorted(expected - set(tensors))
    try:
        activate_only(pipe, [])
        base_out = _probe(base, prompt)
        activate_only(pipe, [ADAPTER])
        with at_base_precision(pipe, ADAPTER):
            trained_out = _probe(base, prompt)
        error, result["load_warnings"] = _load(read)
        if error:
            result["load_error"] = error
        else:
            with at_base_precision(pipe, ADAPTER):
                result.update(weight_report(pipe, eps, lambda component, module: name_of(module)))
            activate_only(pipe, [CHECK_ADAPTER])
            file_out = _probe(base, prompt)
            result["output_change"] = float((file_out - base_out).abs().max())
            result["output_changed"] = result["output_change"] > 1e-6
            result.update(compare(file_out, trained_out, "reproduces_trained", eps, base_out))
        drop_adapter(pipe, CHECK_ADAPTER)
        if second_reader is not None:
            error, _ = _load(second_reader)
            result["diffusers_kohya_load"] = error is None
            if error:
                result["diffusers_kohya_error"] = error
            else:
                result.update(_output_check(base, prompt, trained_out, "diffusers_kohya_reproduces", eps,
                                                      base_out))
            drop_adapter(pipe, CHECK_ADAPTER)
        if diffusers_file is not None:
            error, _ = _load(lambda: pipe.load_lora_weights(str(diffusers_file), adapter_name=CHECK_ADAPTER))
            if error:
                result["diffusers_file_error"] = error
            else:
                result.update(_output_check(base, prompt, trained_out, "diffusers_file_reproduces", eps,
                                                      base_out))
    finally:
        drop_adapter(pipe, CHECK_ADAPTER)
        activate_only(pipe, [ADAPTER])
    return result


def _summed_up(result: dict[str, Any]) -> dict[str, Any]:
    result["ok"] = bool(
        "load_error" not in result and "diffusers_file_error" not in result and "diffusers_kohya_error" not in result
        and not result["unexpected_keys"] and not result["missing_keys"] and result.get("output_changed")
        and result.get("reproduces_trained") and result.get("weights_reproduce_trained")
        and result.get("diffusers_file_reproduces", True) and result.get("diffusers_kohya_reproduces", True)
        and result["alpha_matches_config"])
    return result
