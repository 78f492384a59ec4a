"""Where an upscaler's weights come from (a local file, or a file in a Hugging Face Hub
repository) and which network they make: spandrel's reading of them where spandrel
imports, else the built-in Real-ESRGAN RRDBNet. Every failure is one line (Unavailable)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors", ".bin")
WRAPPERS = ("params_ema", "params", "state_dict", "model")  # what training scripts nest the weights under


class Unavailable(Exception):
    """Why the upscaler cannot run, in one line."""


@dataclass
class Network:
    module: Any  # called on a (1, C, H, W) float tensor in [0, 1]
    scale: int
    source: str  # the file, for the record
    arch: str
    loader: str  # "spandrel" or "built-in"
    multiple_of: int = 1  # input sides must be a multiple of this (Real-ESRGAN 2×: 2)
    minimum: int = 1
    square: bool = False  # the model takes square inputs only
    half_ok: bool = True
    tiles_ok: bool = True  # False: the model mixes the whole image (tiling would change it)

    def describe(self) -> str:
        return f"{Path(self.source).name}, {self.arch} {self.scale}x via {self.loader}"


def one_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def hub_reference(model: str) -> tuple[str, str] | None:
    """(repo id, file in it) for ``hf://owner/repo/file.pth`` or a bare ``owner/repo/file.pth``
    that is no local path; None: a local path."""
    explicit = model.startswith("hf://")
    ref = model.removeprefix("hf://")
    if not explicit and (Path(ref).expanduser().exists() or ref.startswith(("/", ".", "~")) or "\\" in ref):
        return None
    parts = ref.split("/")
    if len(parts) < 3 or not all(parts) or not parts[-1].lower().endswith(WEIGHT_SUFFIXES):
        if explicit:
            raise Unavailable(f"'{model}' is not hf://<owner>/<repo>/<file ending {'/'.join(WEIGHT_SUFFIXES)}>")
        return None
    return "/".join(parts[:2]), "/".join(parts[2:])


def locate(model: str, revision: str | None = None) -> Path:
    """The weights file on this machine: the path itself, or the Hub file downloaded into
    (or found in) the Hugging Face cache."""
    ref = hub_reference(model)
    if ref is None:
        path = Path(model).expanduser()
        if not path.is_file():
            raise Unavailable(f"model file not found: {path} ([plugins.realesrgan] model: a .pth/.safetensors "
                              "file, or <owner>/<repo>/<file> on the Hugging Face Hub)")
        return path
    repo, filename = ref
    from huggingface_hub import HfApi, hf_hub_download

    from clood_candy_plugins.hf_models import offline

    try:  # the cache first: no network, and it is what HF_HUB_OFFLINE allows
        return Path(hf_hub_download(repo, filename, revision=revision, local_files_only=True))
    except Exception:
        pass
    if offline():
        raise Unavailable(f"{filename} from the Hub repo {repo} is not in the Hugging Face cache and HF_HUB_OFFLINE "
                          "is set (download it once with internet, or set a local file)")
    try:  # a short probe: an unreachable Hub is said at once, not after the download's retries
        HfApi().model_info(repo, revision=revision, timeout=5)
        return Path(hf_hub_download(repo, filename, revision=revision))
    except Exception as exc:
        raise Unavailable(f"cannot get {filename} from the Hub repo {repo} ({one_line(exc)}); "
                          "download it once with internet, or set a local file") from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors in ``path``; pickled .pth files load with torch's weights-only unpickler,
    which refuses code, so a hostile file is an error, not a program."""
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise Unavailable(f"cannot read {path.name}: {one_line(exc)}") from None
    for key in WRAPPERS:  # the first wrapper holding tensors (params_ema: the averaged weights, best)
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise Unavailable(f"{path.name} holds no state dict of tensors")
    return state


def spandrel_problem() -> str | None:
    """Why spandrel cannot be used here, or None."""
    try:
        import spandrel  # noqa: F401
    except Exception as exc:  # missing, or its torchvision does not fit this torch
        return one_line(exc)
    return None


def _with_spandrel(state: dict[str, torch.Tensor], source: str) -> Network:
    from spandrel import ImageModelDescriptor, ModelLoader, ModelTiling

    try:
        desc = ModelLoader().load_from_state_dict(state)
    except Exception as exc:
        raise Unavailable(f"spandrel cannot read {Path(source).name}: {one_line(exc)}") from None
    if not isinstance(desc, ImageModelDescriptor) or desc.scale < 2 or desc.input_channels != 3:
        raise Unavailable(f"{Path(source).name} is a {desc.architecture.name} model of scale {getattr(desc, 'scale', '?')}, "
                          "not an RGB upscaler")
    need = desc.size_requirements
    return Network(module=desc.eval(), scale=desc.scale, source=source, arch=desc.architecture.name, loader="spandrel",
                   multiple_of=max(1, need.multiple_of), minimum=max(1, need.minimum), square=need.square, half_ok=desc.supports_half,
                   tiles_ok=desc.tiling != ModelTiling.INTERNAL)


def _built_in(state: dict[str, torch.Tensor], source: str, why_not_spandrel: str) -> Network:
    from clood_candy_plugins.upscalers.rrdbnet import from_state_dict

    try:
        net = from_state_dict(state)
    except (ValueError, RuntimeError) as exc:  # RuntimeError: load_state_dict's shape mismatches
        raise Unavailable(f"{Path(source).name}: {one_line(exc)}; other architectures need spandrel "
                          f"(pip install 'clood-candy[upscale]'; here: {why_not_spandrel})") from None
    return Network(module=net, scale=net.scale, source=source, arch="RRDBNet", loader="built-in",
                   multiple_of=net.unshuffle)


def load_network(model: str, revision: str | None = None, *, use_spandrel: bool = True) -> Network:
    """The network ``model`` names, on the CPU in eval mode."""
    path = locate(model, revision)
    state = read_state_dict(path)
    why_not = spandrel_problem() if use_spandrel else "not asked for"
    if why_not is None:
        return _with_spandrel(state, str(path))
    return _built_in(state, str(path), why_not)
