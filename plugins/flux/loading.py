"""What the user named as a Flux base → a FluxPipeline: ``tiny-flux`` (built offline), a
diffusers folder, or a Hugging Face id (downloaded by diffusers, as on a machine with
internet). Nothing here claims an SD base, and the SD family claims none of these."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clood_candy.errors import UserError
from clood_candy_plugins.sd.loading import HF_ID, LoadedPipeline

if TYPE_CHECKING:
    import torch

TINY = "tiny-flux"
KNOWN = {"black-forest-labs/flux.1-dev", "black-forest-labs/flux.1-schnell", "black-forest-labs/flux.1-krea-dev"}
# Flux.1 repos that are not text-to-image bases a LoRA is trained on.
NOT_BASES = ("fill", "canny", "depth", "redux", "kontext")


def _folder_is_flux(path: Path) -> bool:
    try:
        return json.loads((path / "model_index.json").read_text()).get("_class_name") == "FluxPipeline"
    except (OSError, ValueError):
        return False


def is_flux(base: str) -> bool:
    if base == TINY:
        return True
    path = Path(base).expanduser()
    if path.is_dir():
        return _folder_is_flux(path)
    if path.suffix.lower() in {".safetensors", ".ckpt", ".pt", ".pth"}:
        return False  # single files: see load_flux
    name = base.lower()
    return bool(HF_ID.match(base)) and (name in KNOWN or ("flux.1" in name and not any(w in name for w in NOT_BASES)))


def load_flux(base: str, *, dtype: "torch.dtype | None" = None) -> LoadedPipeline:
    import torch
    from diffusers import FluxPipeline

    from clood_candy_plugins.flux.tiny import tiny_flux_folder

    dtype = dtype or torch.float32
    common: dict[str, Any] = {} if dtype == torch.float32 else {"torch_dtype": dtype}
    if base == TINY:
        return LoadedPipeline(FluxPipeline.from_pretrained(tiny_flux_folder(), local_files_only=True, **common),
                              "flux", "tiny", True)
    path = Path(base).expanduser()
    if path.is_dir():
        try:
            pipe = FluxPipeline.from_pretrained(path, local_files_only=True, **common)
        except Exception as exc:
            raise UserError(f"could not load Flux folder {path}: {_first_line(exc)}") from None
        return LoadedPipeline(pipe, "flux", "folder", False)
    try:
        pipe = FluxPipeline.from_pretrained(base, **common)
    except Exception as exc:
        gated = " (FLUX.1-dev is gated: accept its licence on the Hub and log in)" if "dev" in base.lower() else ""
        raise UserError(f"could not load '{base}' from the Hugging Face hub (offline, misspelt or gated?){gated}: "
                        f"{_first_line(exc)}") from None
    return LoadedPipeline(pipe, "flux", "hub", False)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    line = lines[0] if lines else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "…"
