"""What the user named as a flow-matching base → its pipeline: the family's toy (built
offline), a diffusers folder, or a Hugging Face id (downloaded by diffusers, as on a
machine with internet). Nothing here claims an SD base, and the SD family claims none of
these (its hub_ids.NOT_UNET)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clood_candy.errors import UserError
from clood_candy_plugins.sd.loading import HF_ID, LoadedPipeline

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Kind:
    """One flow-matching family's bases: how to tell them and how to load them."""

    family: str  # flux, sd3
    pipeline: str  # the diffusers pipeline class (model_index.json's _class_name)
    tiny: str  # the toy's name, e.g. tiny-flux
    tiny_folder: Callable[[], Path]
    known: frozenset[str]  # Hub ids (lower case) that are this family's text-to-image bases
    hint: str  # in a Hub id, what names this family
    not_bases: tuple[str, ...]  # in a Hub id, what names another kind of model (ControlNets, inpainting…)


def _folder_class(path: Path) -> str:
    try:
        return json.loads((path / "model_index.json").read_text()).get("_class_name", "")
    except (OSError, ValueError):
        return ""


def claims(kind: Kind, base: str) -> bool:
    if base == kind.tiny:
        return True
    path = Path(base).expanduser()
    if path.is_dir():
        return _folder_class(path) == kind.pipeline
    if path.suffix.lower() in {".safetensors", ".ckpt", ".pt", ".pth"}:
        return False  # single files: not loaded by these families yet (the README says so)
    name = base.lower()
    return bool(HF_ID.match(base)) and (name in kind.known or (kind.hint in name and not any(w in name for w in kind.not_bases)))


def load(kind: Kind, base: str, *, dtype: "torch.dtype | None" = None) -> LoadedPipeline:
    import diffusers
    import torch

    cls = getattr(diffusers, kind.pipeline)
    dtype = dtype or torch.float32
    common: dict[str, Any] = {"dtype": dtype}
    if base == kind.tiny:
        return LoadedPipeline(cls.from_pretrained(kind.tiny_folder(), local_files_only=True, **common),
                              kind.family, "tiny", True)
    path = Path(base).expanduser()
    if path.is_dir():
        try:
            pipe = cls.from_pretrained(path, local_files_only=True, **common)
        except Exception as exc:
            raise UserError(f"could not load {kind.family} folder {path}: {_first_line(exc)}") from None
        return LoadedPipeline(pipe, kind.family, "folder", False)
    try:
        pipe = cls.from_pretrained(base, **common)
    except Exception as exc:
        raise UserError(f"could not load '{base}' from the Hugging Face hub (offline, misspelt, or gated: accept "
                        f"its licence on the Hub and log in): {_first_line(exc)}") from None
    return LoadedPipeline(pipe, kind.family, "hub", False)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    line = lines[0] if lines else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "…"
