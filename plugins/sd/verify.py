"""Check a saved LoRA the way its users will meet it: diffusers loads it with no stray or
missing keys and it changes (and reproduces) the trained model's output, and every key
resolves under A1111's and ComfyUI's rules for the family.

Like is compared with like. A loader holds a file's weights in the base's dtype; training
holds its adapter in fp32 even on a bf16/fp16 base. So the trained adapter is compared
rounded to the base's dtype, on the same base, and the outputs may differ by what that
precision cannot resolve (a few ``finfo(dtype).eps`` at the output's scale), no more.
Through a deep network rounding adds up beyond a few eps even like with like (1.4e-6 on a
real-size SD1.5 UNet in fp32, where 8 eps is 9.5e-7), so the outputs may also differ by a
ten-thousandth of what the adapter changed: a wrong scale or a missing block moves them by
a large share of it. Independently of any output, every trained layer must come back from the file with the
same weight change, scale included: a wrong alpha or a module left out fails even where
its effect on the probe is below the base's precision."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from clood_candy_plugins.sd import keymap
from clood_candy_plugins.sd.denoise import encode_text, predict
from clood_candy_plugins.sd.lora import (ADAPTER, activate_only, denoiser, denoiser_name, load_with_peft,
                                         needs_peft_reader, quiet_peft, release_empty_layers, to_kohya)

CHECK_ADAPTER = "clood_verify"
# Outputs (and each layer's weight change) at the base's precision may differ by this many
# eps at their scale: like with like they agree to the last bit on the CPU; the margin is for
# rounding that differs with the order of operations (LoKr's scale baked into w1, GPU
# kernels). A wrong alpha or a missing module moves them by far more.
OUTPUT_EPS = 8
# ... or by this share of the trained change (trained - base): rounding that a deep network
# amplifies, far below what a wrong alpha (a factor) or a missing module (its share) moves.
CHANGE_SHARE = 1e-4


@contextmanager
def captured_warnings():
    """diffusers reports unexpected/missing LoRA keys as log warnings; collect them."""
    records: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("diffusers")
    handlers, level = logger.handlers[:], logger.level
    logger.handlers = [Grab(level=logging.WARNING)]  # collected, not printed
    logger.setLevel(logging.WARNING)
    try:
        with quiet_peft():
            yield records
    finally:
        logger.handlers = handlers
        logger.setLevel(level)


def _components(pipe) -> dict[str, torch.nn.Module]:
    return {n: getattr(pipe, n) for n in ("text_encoder", "text_encoder_2") if getattr(pipe, n, None) is not None}


@torch.no_grad()
def _probe(pipe, resolution: int, prompt: str) -> torch.Tensor:
    """One UNet prediction on fixed inputs, through the text encoder(s)."""
    gen = torch.Generator().manual_seed(1234)
    side = max(8, min(resolution // 8, 16))  # small latents: cheap even for a real base
    noisy = torch.randn((1, pipe.unet.config.in_channels, side, side), generator=gen)
    cond = encode_text(pipe, [prompt], resolution)
    dtype = pipe.unet.dtype
    out = predict(pipe.unet, noisy.to(pipe.unet.device, dtype), torch.tensor([500], device=pipe.unet.device),
                  cond.to(pipe.unet.device, dtype))
    return out.float().cpu()


def compute_eps(dtype: torch.dtype, device: torch.device) -> float:
    """The relative precision a base computes at: its dtype's eps, or TF32's (10 mantissa
    bits) for fp32 on a GPU that lets cuBLAS/cuDNN round inputs to TF32."""
    if dtype == torch.float32 and device.type == "cuda" and (
            torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32):
        return 2.0 ** -10
    return float(torch.finfo(dtype).eps)


def tolerance(want: torch.Tensor, eps: float, base: torch.Tensor | None = None) -> float:
    """How far an output computed at precision ``eps`` may differ from ``want`` (the trained
    adapter's; ``base``: the base alone's) and still be the same."""
    allowed = OUTPUT_EPS * eps * max(1.0, float(want.abs().max()))
    if base is not None:
        allowed = max(allowed, CHANGE_SHARE * float((want - base).abs().max()))
    return allowed


@contextmanager
def at_base_precision(pipe, adapter: str):
    """The adapter's weights held as a loader holds a file's: in each model's dtype (attach
    keeps the trained ones in fp32 even on a half-precision base). Restored exactly after."""
    kept = []
    try:
        for model in (denoiser(pipe), *_components(pipe).values()):
            dtype = model.dtype  # a property that walks the parameters: once per model
            for name, param in model.named_parameters():
                if f".{adapter}." in name + "." and param.dtype != dtype:
                    kept.append((param, param.data))
                    param.data = param.data.to(dtype)
        yield
    finally:
        for param, data in kept:
            param.data = data


@torch.no_grad()
def weight_report(pipe, eps: float, name_of: Callable[[str, str], str]) -> dict[str, Any]:
    """Every layer the training adapted, against the same layer under the loaded file:
    modules the file does not adapt, and the largest difference in weight change (scale
    included: get_delta_weight is what merging applies; DoRA's magnitudes beside it),
    relative to the trained change. ``name_of(component, module)``: a module's name in the file."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    missing, worst = [], 0.0
    for component, model in {denoiser_name(pipe): denoiser(pipe), **_components(pipe)}.items():
        for name, module in model.named_modules():
            if not isinstance(module, BaseTunerLayer) or ADAPTER not in getattr(module, "scaling", {}):
                continue
            if CHECK_ADAPTER not in module.scaling:
                missing.append(name_of(component, name))
                continue
            pairs = [(module.get_delta_weight(ADAPTER), module.get_delta_weight(CHECK_ADAPTER))]
            magnitudes = getattr(module, "lora_magnitude_vector", None)  # DoRA's, not in the delta
            if magnitudes is not None and ADAPTER in magnitudes and CHECK_ADAPTER in magnitudes:
                pairs.append((magnitudes[ADAPTER].weight, magnitudes[CHECK_ADAPTER].weight))
            for want, got in pairs:
                want, got = want.float(), got.float()
                scale = float(want.abs().max())
                if scale > 0 or float(got.abs().max()) > 0:
                    worst = max(worst, float((got - want).abs().max()) / max(scale, 1e-12))
    return {"modules_not_in_file": sorted(missing), "weights_max_rel_diff": worst,
            "weights_reproduce_trained": not missing and worst <= OUTPUT_EPS * eps}


def key_report(path: Path, pipe, family: str) -> dict[str, list[str]]:
    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
    encoders = _components(pipe)
    layers = keymap.a1111_layer_names(pipe.unet, encoders, family)
    comfy = keymap.comfy_key_map(pipe.unet, encoders, family)
    return {"a1111_unmapped": keymap.unmapped_keys(keys, accepts=lambda p: keymap.a1111_resolves(p, layers)),
            "comfyui_unmapped": keymap.unmapped_keys(keys, accepts=lambda p: p in comfy)}


def _loaded_state(pipe, adapter: str) -> dict[str, dict[str, torch.Tensor]]:
    from peft import get_peft_model_state_dict

    return {name: {k: v.float().cpu() for k, v in get_peft_model_state_dict(model, adapter_name=adapter).items()}
            for name, model in {"unet": pipe.unet, **_components(pipe)}.items()
            if adapter in (getattr(model, "peft_config", None) or {})}


def drop_adapter(pipe, adapter: str) -> None:
    with quiet_peft():
        if any(adapter in (getattr(m, "peft_config", None) or {}) for m in [denoiser(pipe), *_components(pipe).values()]):
            pipe.delete_adapters(adapter)
    release_empty_layers(pipe)


def _try_load(pipe, path: Path, *, with_peft: bool, family: str) -> tuple[str | None, list[str]]:
    """Load ``path`` as the check adapter; return (error or None, diffusers' key warnings)."""
    with captured_warnings() as grabbed:
        try:
            if with_peft:
                load_with_peft(pipe, path, CHECK_ADAPTER, family)
            else:
                pipe.load_lora_weights(str(path), adapter_name=CHECK_ADAPTER)
            error = None
        except Exception as exc:
            error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
    # diffusers names stray keys "unexpected"/"missing"; its note that a file has no
    # text-encoder keys is no problem for a UNet-only LoRA.
    return error, [w[:300] for w in grabbed if re.search(r"unexpected|missing|not found|filter out", w, re.I)
                   and not w.startswith("No LoRA keys associated")]


def verify_lora(pipe, path: Path, *, family: str, config, resolution: int, prompt: str,
                diffusers_file: Path | None = None, trained_adapter: bool = True) -> dict[str, Any]:
    """The verification dict for ``TrainOutcome.verification``; ``ok`` sums it up.

    The kohya file is loaded by diffusers when diffusers can (plain LoRA); LoHa/LoKr and
    DoRA go through our peft reader (diffusers 0.42 cannot load the first two for SD and
    drops DoRA's magnitudes). Either way, what got built is written back in kohya form
    and compared key for key with the file, and its output compared with the trained
    adapter's. The diffusers-format file, when given, must reproduce it too."""
    result: dict[str, Any] = {"file": path.name, **key_report(path, pipe, family), "notes": []}
    with safe_open(str(path), framework="pt") as handle:
        keys = set(handle.keys())
        alphas = {float(handle.get_tensor(k)) for k in keys if k.endswith(".alpha")}
    result["alpha_in_file"] = sorted(alphas)
    result["alpha_matches_config"] = alphas == {float(config.alpha)}
    with_peft = needs_peft_reader(path)
    result["loaded_by"] = "peft (kohya reader)" if with_peft else "diffusers load_lora_weights"
    outputs: dict[str, torch.Tensor] = {}
    dtype = pipe.unet.dtype  # the base's precision: what the outputs are computed at
    eps = compute_eps(dtype, pipe.unet.device)
    result["dtype"], result["compute_eps"] = str(dtype).removeprefix("torch."), eps
    try:
        activate_only(pipe, [])
        outputs["base"] = _probe(pipe, resolution, prompt)
        if trained_adapter:
            activate_only(pipe, [ADAPTER])
            with at_base_precision(pipe, ADAPTER):
                outputs["trained"] = _probe(pipe, resolution, prompt)
        error, result["load_warnings"] = _try_load(pipe, path, with_peft=with_peft, family=family)
        result["diffusers_load"] = error is None and not with_peft
        if error:
            result["load_error"] = error
        else:
            loaded = _loaded_state(pipe, CHECK_ADAPTER)
            rebuilt = set(to_kohya(loaded, config, family, pipe.unet.config)) if loaded else set()
            result["unexpected_keys"] = sorted(keys - rebuilt)
            result["missing_keys"] = sorted(rebuilt - keys)
            if trained_adapter:
                with at_base_precision(pipe, ADAPTER):
                    result.update(weight_report(pipe, eps, lambda component, module: keymap.kohya_prefix(
                        component, module, family, pipe.unet.config)))
            activate_only(pipe, [CHECK_ADAPTER])
            outputs["file"] = _probe(pipe, resolution, prompt)
            result["output_change"] = float((outputs["file"] - outputs["base"]).abs().max())
            result["output_changed"] = result["output_change"] > 1e-6
            if "trained" in outputs:
                result.update(compare(outputs["file"], outputs["trained"], "reproduces_trained", eps,
                                             outputs["base"]))
        drop_adapter(pipe, CHECK_ADAPTER)
        if diffusers_file is not None and config.variant in ("lora", "dora") and "trained" in outputs:
            error, _ = _try_load(pipe, diffusers_file, with_peft=False, family=family)
            if error:
                result["diffusers_file_error"] = error
            else:
                activate_only(pipe, [CHECK_ADAPTER])
                got = _probe(pipe, resolution, prompt)
                result.update(compare(got, outputs["trained"], "diffusers_file_reproduces", eps,
                                             outputs["base"]))
    finally:
        drop_adapter(pipe, CHECK_ADAPTER)
        activate_only(pipe, [ADAPTER] if trained_adapter else [])
    if config.variant in ("loha", "lokr"):
        result["notes"].append(f"diffusers cannot load {config.variant} files for SD; ComfyUI and A1111 can")
    if config.variant == "dora":
        result["notes"].append("diffusers drops DoRA magnitudes from kohya files (use the .diffusers file there); "
                               "A1111 normalises DoRA per input column, so its images differ from these")
    result["ok"] = bool(
        "load_error" not in result and "diffusers_file_error" not in result
        and not result["unexpected_keys"] and not result["missing_keys"]
        and result.get("output_changed") and result.get("reproduces_trained", True)
        and result.get("weights_reproduce_trained", True)
        and result.get("diffusers_file_reproduces", True)
        and result["alpha_matches_config"] and not result["a1111_unmapped"] and not result["comfyui_unmapped"])
    return result


def compare(got: torch.Tensor, want: torch.Tensor, name: str, eps: float,
            base: torch.Tensor | None = None) -> dict[str, Any]:
    diff, allowed = float((got - want).abs().max()), tolerance(want, eps, base)
    return {f"{name}_max_diff": diff, f"{name}_tolerance": allowed, name: diff <= allowed}


def problem(result: dict[str, Any]) -> str | None:
    """One line saying why a verified file must not ship, or None."""
    if result.get("ok"):
        return None
    for key, why in (("load_error", "does not load"), ("diffusers_file_error", "(diffusers format) does not load"),
                     ("diffusers_kohya_error", "does not load through diffusers' kohya converter"),
                     ("unexpected_keys", "has keys the loader does not use"),
                     ("missing_keys", "lacks keys"), ("modules_not_in_file", "lacks trained modules"),
                     ("a1111_unmapped", "has keys A1111 cannot map"),
                     ("comfyui_unmapped", "has keys ComfyUI cannot map")):
        if result.get(key):
            detail = result[key] if isinstance(result[key], str) else ", ".join(result[key][:3])
            return f"{result['file']} {why}: {detail}"
    if not result.get("alpha_matches_config"):
        return f"{result['file']} carries alpha {result.get('alpha_in_file')} instead of the config's"
    if not result.get("output_changed"):
        return f"{result['file']} loads but does not change the output"
    if not result.get("reproduces_trained", True):
        return f"{result['file']} does not reproduce the trained model's output"
    if not result.get("weights_reproduce_trained", True):
        return (f"{result['file']} does not reproduce the trained weight changes "
                f"(relative difference {result.get('weights_max_rel_diff', 0):.2g})")
    if not result.get("diffusers_kohya_reproduces", True):
        return f"{result['file']} read by diffusers' kohya converter does not reproduce the trained model's output"
    return f"{result['file']}: the diffusers-format file does not reproduce the trained model's output"
