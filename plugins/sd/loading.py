"""Turn what the user named as a base into a diffusers pipeline.

A base is one of: ``tiny`` / ``tiny-sdxl`` (built offline, random weights), ``candy-mini``
(the project's own learned miniature, shipped), a local diffusers folder, a
single-file ``.safetensors`` checkpoint (A1111 / ComfyUI style), or a Hugging Face id
(downloaded by diffusers, as on a user's machine with internet).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clood_candy.errors import UserError
from clood_candy_plugins.sd.cache import build_once, cache_dir
from clood_candy_plugins.sd.hub_ids import is_not_unet, known_family, maintained_id

if TYPE_CHECKING:
    import torch

SAFE_SUFFIXES = {".safetensors"}
PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin"}
HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
PIPELINE_FAMILY = {"StableDiffusionPipeline": "sd1", "StableDiffusionXLPipeline": "sdxl"}
CONFIG_NAMES = {"sd1": "sd15", "sdxl": "sdxl"}
TINY_NAMES = {"tiny": "sd1", "tiny-sdxl": "sdxl"}  # toy bases built offline (see tiny.py)
TINY_RESOLUTION = 64  # measured: keeps the demo's training and sampling within seconds on 2 cores
MINIATURES = {"candy-mini": "sd1"}  # learned, trained at TINY_RESOLUTION (clood pretrain)
SMALL_BASES = {**TINY_NAMES, **MINIATURES}  # bases that run at TINY_RESOLUTION, on one thread


@dataclass
class LoadedPipeline:
    pipe: Any
    family: str
    kind: str  # tiny, miniature, folder, single-file, hub
    is_toy: bool  # random weights: the mechanics, not art
    loaded_from: str = ""  # the Hub id actually downloaded, when it is not the one named
    guidance: float | None = None  # the classifier-free guidance the base itself recommends, if it says


def _looks_like_file(base: str) -> bool:
    return Path(base).suffix.lower() in SAFE_SUFFIXES | PICKLE_SUFFIXES


def _single_file_family(path: Path) -> str | None:
    """Read only the safetensors header: the text-encoder keys say which architecture."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
    except Exception:
        return None
    if any(k.startswith("conditioner.embedders.1.") for k in keys):
        return "sdxl"
    if any(k.startswith("cond_stage_model.") for k in keys) or any(k.startswith("model.diffusion_model.") for k in keys):
        return "sd1"  # SD1.x (and SD2.x, which the sd1 family refuses with a clear message)
    return None


def _cached_index(repo_id: str) -> Path | None:
    """The Hub's model_index.json for ``repo_id`` when it is in the local cache."""
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo_id, "model_index.json")
    except Exception:
        return None
    return Path(cached) if isinstance(cached, str) else None


def _hub_family(repo_id: str) -> str | None:
    """From a cached model_index.json when there is one, else the ids clood knows, else
    by the name (…xl…); None for a transformer base no UNet family can train."""
    index = _cached_index(repo_id)
    if index is not None:
        try:
            return PIPELINE_FAMILY.get(json.loads(index.read_text()).get("_class_name", ""))
        except (OSError, ValueError):
            pass
    if known_family(repo_id):
        return known_family(repo_id)
    if is_not_unet(repo_id):
        return None
    return "sdxl" if "xl" in repo_id.lower() else "sd1"


def detect_family(base: str) -> str | None:
    """Which family (``sd1``/``sdxl``) a base belongs to, or None when it is not an SD base.

    A path that does not exist still gets a family (by its name), so that loading it
    fails with "file not found" rather than "no family can load".
    """
    if base in SMALL_BASES:
        return SMALL_BASES[base]
    path = Path(base).expanduser()
    if path.is_dir():
        index = path / "model_index.json"
        if index.is_file():
            try:
                return PIPELINE_FAMILY.get(json.loads(index.read_text()).get("_class_name", ""))
            except (OSError, ValueError):
                return None
        return None
    if path.is_file() and path.suffix.lower() in SAFE_SUFFIXES:
        return _single_file_family(path)
    if path.is_file() or _looks_like_file(base):
        return "sdxl" if "xl" in path.name.lower() else "sd1"
    if HF_ID.match(base) and not base.startswith((".", "/", "~")):
        return _hub_family(base)
    return None


def configs_folder(family: str) -> Path:
    """A configs-only diffusers folder (shipped JSON + generated tokenizer files) that
    ``from_single_file`` can use offline."""
    from clood_candy_plugins.sd.tokenizer import tokenizer_folder

    name = CONFIG_NAMES[family]
    shipped = resources.files("clood_candy_plugins.sd") / "configs" / name

    def build(tmp: Path) -> None:
        shutil.copytree(str(shipped), tmp, dirs_exist_ok=True)
        shutil.copytree(tokenizer_folder(require_real=True), tmp / "tokenizer")
        if family == "sdxl":
            shutil.copytree(tokenizer_folder(pad_token="!", require_real=True), tmp / "tokenizer_2")

    stamp = sum(len(p.read_bytes()) for p in Path(str(shipped)).rglob("*.json"))  # changes when a config does
    return build_once(cache_dir() / "configs" / f"{name}-{stamp}", build)


def _pipeline_class(family: str):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    return StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "…"


def single_file_configs(folder: str | Path, family: str) -> Path:
    """A user's configs-only folder for single-file checkpoints of another architecture
    (``[plugins.sd] single_file_config``), checked before diffusers reads it."""
    path = Path(folder).expanduser()
    index = path / "model_index.json"
    if not index.is_file():
        raise UserError(f"[plugins.sd] single_file_config {path} has no model_index.json (a diffusers folder "
                        "without weights is enough)")
    try:
        found = PIPELINE_FAMILY.get(json.loads(index.read_text(encoding="utf-8")).get("_class_name", ""))
    except (OSError, ValueError) as exc:
        raise UserError(f"[plugins.sd] single_file_config {path}: unreadable model_index.json ({exc})") from None
    if found != family:
        raise UserError(f"[plugins.sd] single_file_config {path} describes an {found or 'unknown'} model, not {family}")
    return path


def miniature_folder(base: str) -> Path:
    """The shipped diffusers folder of a learned miniature; a one-line error when this
    install has no weights for it (a source checkout without them, say)."""
    from clood_candy_plugins import candy_mini

    folder = candy_mini.folder("base")
    if folder is None:
        raise UserError(f"this install has no weights for '{base}': rebuild them with "
                        f"`clood pretrain {base} --out DIR --ship` (or use --base DIR/base)")
    return folder


def load_pipeline(base: str, family: str, *, allow_pickle: bool = False, dtype: "torch.dtype | None" = None,
                  single_file_config: str | Path | None = None) -> LoadedPipeline:
    """Load ``base`` as a pipeline of ``family``; every failure is a one-line UserError.
    ``single_file_config``: the configs folder for a single-file checkpoint whose
    architecture is not the family's standard one (default: the shipped SD1.5/SDXL one)."""
    import torch

    from clood_candy_plugins.sd.tiny import tiny_folder

    dtype = dtype or torch.float32
    cls = _pipeline_class(family)
    # Always named: a folder saved in fp16 (candy-mini, an SD fp16 variant) would otherwise load
    # half its modules in fp16 and the rest in fp32, and fail at the first matmul.
    common: dict[str, Any] = {"dtype": dtype}
    if family == "sd1":
        common.update(safety_checker=None, requires_safety_checker=False)
    if base in TINY_NAMES:
        folder = tiny_folder(base)
        return LoadedPipeline(cls.from_pretrained(folder, local_files_only=True, **common), family, "tiny", True)
    if base in MINIATURES:
        from clood_candy_plugins import candy_mini

        return LoadedPipeline(cls.from_pretrained(miniature_folder(base), local_files_only=True, **common),
                              family, "miniature", False, guidance=candy_mini.GUIDANCE)

    path = Path(base).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise UserError(f"base folder {path} is not a diffusers model (no model_index.json)")
        try:
            pipe = cls.from_pretrained(path, local_files_only=True, **common)
        except Exception as exc:
            raise UserError(f"could not load base folder {path}: {_first_line(exc)}") from None
        return LoadedPipeline(pipe, family, "folder", False)

    if path.is_file() or _looks_like_file(base):
        if not path.is_file():
            raise UserError(f"base model file not found: {path}")
        suffix = path.suffix.lower()
        if suffix in PICKLE_SUFFIXES and not allow_pickle:
            raise UserError(f"refusing to load {path.name}: pickle checkpoints can run code when loaded; "
                            "use a .safetensors file or set allow_pickle = true in clood.toml")
        if suffix not in SAFE_SUFFIXES | PICKLE_SUFFIXES:
            raise UserError(f"base {path.name}: expected a .safetensors checkpoint")
        if suffix in SAFE_SUFFIXES and _single_file_family(path) is None:
            raise UserError(f"{path.name} is not a Stable Diffusion checkpoint (is it a LoRA?)")
        try:
            from safetensors import safe_open

            if suffix in SAFE_SUFFIXES:
                with safe_open(str(path), framework="pt") as handle:
                    if any(k.startswith("cond_stage_model.model.") for k in handle.keys()):
                        raise UserError(f"{path.name} is an SD2 checkpoint: use its diffusers folder or Hugging Face id")
            configs = single_file_configs(single_file_config, family) if single_file_config else configs_folder(family)
            pipe = cls.from_single_file(str(path), config=str(configs), local_files_only=True, **common)
        except UserError:
            raise
        except Exception as exc:
            raise UserError(f"could not load checkpoint {path.name}: {_first_line(exc)}") from None
        return LoadedPipeline(pipe, family, "single-file", False)

    if HF_ID.match(base):
        repo_id = maintained_id(base, cached=_cached_index(base) is not None)
        moved = f" ('{base}' was removed from the Hub; tried its maintained copy)" if repo_id != base else ""
        try:
            pipe = cls.from_pretrained(repo_id, **common)
        except Exception as exc:
            raise UserError(f"could not load '{repo_id}' from the Hugging Face hub (offline, misspelt or gated?)"
                            f"{moved}: {_first_line(exc)}") from None
        return LoadedPipeline(pipe, family, "hub", False, loaded_from=repo_id if moved else "")
    raise UserError(f"base '{base}' is not 'tiny', 'tiny-sdxl', 'candy-mini', a diffusers folder, a .safetensors file "
                    "or a Hugging Face id")
