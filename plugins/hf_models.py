"""Shared by the plugins that run a Hugging Face model locally (local-vlm, clip, wd14): is the
model at hand, and on which device and dtype to run it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TRUE = ("1", "on", "yes", "true")


class HfModelOptions(BaseModel):
    """What every local-model plugin's ``[plugins.<name>]`` table has; plugins add their own
    fields and the ``model`` default."""

    model_config = ConfigDict(extra="forbid")

    model: str
    revision: str | None = None
    device: str = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"


def offline() -> bool:
    return any(os.environ.get(name, "").lower() in TRUE for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def is_cached(model: str, revision: str | None, needs: tuple[str, ...] | None = None) -> bool:
    """Config and weights (or every file in ``needs``) are in the local Hugging Face cache (no network)."""
    from huggingface_hub import try_to_load_from_cache

    def cached(name: str) -> bool:
        return isinstance(try_to_load_from_cache(model, name, revision=revision), str)

    if needs is not None:
        return all(cached(name) for name in needs)
    return cached("config.json") and any(cached(name) for name in WEIGHT_FILES)


def availability(model: str, revision: str | None, needs: tuple[str, ...] | None = None) -> tuple[str | None, bool]:
    """(reason it cannot load or None, whether to load from local files only). ``needs``:
    the files a model that is not a transformers one (an ONNX tagger) must have instead of
    config.json and weights."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        missing = [name for name in (needs or ("config.json",)) if not (folder / name).is_file()]
        if missing:
            return f"model folder {folder} has no {missing[0]}", True
        return None, True
    if is_cached(model, revision, needs):
        return None, True
    if offline():
        return (f"model {model} is not in the Hugging Face cache and HF_HUB_OFFLINE is set "
                "(download it once with internet, or name a local folder)"), True
    from huggingface_hub import HfApi

    try:  # a short probe, so an unreachable hub is reported at once instead of after long retries
        HfApi().model_info(model, revision=revision, timeout=5)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        return f"model {model} is not cached and the hub cannot provide it ({type(exc).__name__}: {first})", True
    return None, False


def ships_own_code(model: str, revision: str | None, local_only: bool) -> bool:
    """The model's config.json maps its classes to code in its own repository (``auto_map``):
    loading it as its authors meant runs that code. Only config.json is read."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        path = folder / "config.json"
    else:
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(model, "config.json", revision=revision, local_files_only=local_only))
    return bool(json.loads(path.read_text(encoding="utf-8")).get("auto_map"))


def unavailable_reason(load_options, ctx, refusal=None) -> str | None:
    """Why a local-model plugin cannot run (its options are invalid, its model cannot be
    found, or ``refusal(opts, local_only)`` says why it may not load), or None: the
    ``unavailable`` of every plugin built on HfModelOptions."""
    try:
        opts = load_options(ctx)
    except ValueError as exc:
        return str(exc)
    reason, local_only = availability(opts.model, opts.revision)
    return reason or (refusal(opts, local_only) if refusal else None)


def pick_device(device: str, dtype: str) -> tuple[str, Any]:
    """'auto': CUDA with bf16 (fp16 where bf16 is missing) when there is a GPU, else CPU fp32."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype != "auto":
        return device, getattr(torch, dtype)
    if device.startswith("cuda"):
        return device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return device, torch.float32
