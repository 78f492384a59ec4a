"""Training checkpoints: ``out_dir/checkpoints/step-N/`` holds the adapter weights, the
optimizer and lr-scheduler state, RNG states, the history so far and the LoRA as it was
at that step (``step-N.safetensors``, kohya keys, verified).
Written into a temporary folder and renamed, so a crash never leaves half a checkpoint."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


FOLDER = "checkpoints"
STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class Checkpoint:
    step: int
    folder: Path

    @property
    def lora(self) -> Path:
        # Named by step: the file name is what ComfyUI/A1111 list and what sample grids show.
        return self.folder / f"step-{self.step}.safetensors"

    def meta(self) -> dict[str, Any]:
        return json.loads((self.folder / "meta.json").read_text(encoding="utf-8"))


def checkpoints(out_dir: Path) -> list[Checkpoint]:
    """Complete checkpoints (meta.json is written last), oldest first."""
    root = out_dir / FOLDER
    found = []
    for child in root.iterdir() if root.is_dir() else []:
        m = STEP_DIR.match(child.name)
        if m and (child / "meta.json").is_file():
            found.append(Checkpoint(int(m[1]), child))
    return sorted(found, key=lambda c: c.step)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(out_dir: Path, step: int, adapter: dict[str, dict[str, torch.Tensor]], optimizer, lr_scheduler,
         meta: dict[str, Any], write_lora: Callable[[Path], None]) -> Checkpoint:
    root = out_dir / FOLDER
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".step-{step}."))
    try:
        flat = {f"{component}/{key}": value for component, tensors in adapter.items() for key, value in tensors.items()}
        save_file(flat, str(tmp / "adapter.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "lr_scheduler": lr_scheduler.state_dict(),
                    "rng": rng_state(), "step": step}, tmp / "state.pt")
        write_lora(tmp / f"step-{step}.safetensors")
        (tmp / "meta.json").write_text(json.dumps({**meta, "step": step}, indent=2), encoding="utf-8")
        final = root / f"step-{step}"
        if final.exists():  # re-saving a step (e.g. after a config change): replace it whole
            shutil.rmtree(final)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Checkpoint(step, final)


def load(checkpoint: Checkpoint) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    adapter: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in load_file(str(checkpoint.folder / "adapter.safetensors")).items():
        component, _, name = key.partition("/")
        adapter.setdefault(component, {})[name] = value
    # weights_only: a checkpoint folder is data, never code.
    state = torch.load(checkpoint.folder / "state.pt", map_location="cpu", weights_only=True)
    return adapter, state
