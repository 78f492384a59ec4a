"""One resumable training loop for every pretraining stage.

A stage gives its modules, its optimizer and a ``step(i)`` that draws batch i from a
generator seeded by (seed, i) — so a resumed stage draws exactly the batches it would have
drawn, and no RNG state needs saving. The loop owns the learning-rate schedule (linear
warmup, cosine to a tenth), the loss log, checkpoints (written aside, then renamed), the
progress bar and the elapsed time across resumes.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from clood_candy.progress import Progress
from clood_candy_plugins.pretrain.recipe import StageSteps

LOG_EVERY = 10


def lr_factor(step: int, cfg: StageSteps) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    span = max(1, cfg.steps - cfg.warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - cfg.warmup) / span))


def run_stage(name: str, folder: Path, cfg: StageSteps, modules: dict[str, torch.nn.Module],
              optimizer: torch.optim.Optimizer, step: Callable[[int], dict[str, float]], progress: Progress,
              on_checkpoint: Callable[[int], dict | None] | None = None) -> dict:
    """Train to cfg.steps (or load the finished stage); return its record (losses, time).

    ``on_checkpoint(step)`` runs before each checkpoint; what it returns joins record["evals"].
    """
    folder.mkdir(parents=True, exist_ok=True)
    state_path, done_path = folder / "state.pt", folder / "done.json"
    record = {"stage": name, "steps": cfg.steps, "log": [], "seconds": 0.0, "step": 0}
    if state_path.exists():
        # Saved on whatever device trained it; loaded onto the modules' own (a CPU run resumes a GPU one).
        state = torch.load(state_path, weights_only=False, map_location="cpu")
        for key, module in modules.items():
            module.load_state_dict(state["modules"][key])
        optimizer.load_state_dict(state["optimizer"])
        record = state["record"]
    if done_path.exists() and record["step"] >= cfg.steps:
        return record
    base_lrs = [group.get("initial_lr", group["lr"]) for group in optimizer.param_groups]
    for group, lr in zip(optimizer.param_groups, base_lrs):
        group["initial_lr"] = lr

    def save() -> None:
        tmp = state_path.with_suffix(".tmp")
        torch.save({"modules": {k: m.state_dict() for k, m in modules.items()},
                    "optimizer": optimizer.state_dict(), "record": record}, tmp)
        tmp.replace(state_path)

    window: dict[str, list[float]] = {}
    started = time.perf_counter()
    with progress.task(f"pretraining {name}", cfg.steps) as advance:
        advance(record["step"])
        for i in range(record["step"], cfg.steps):
            for group, lr in zip(optimizer.param_groups, base_lrs):
                group["lr"] = lr * lr_factor(i, cfg)
            for key, value in step(i).items():
                window.setdefault(key, []).append(value)
            record["step"] = i + 1
            if record["step"] % LOG_EVERY == 0 or record["step"] == cfg.steps:
                means = {k: sum(v) / len(v) for k, v in window.items()}
                record["log"].append({"step": record["step"], **{k: round(v, 6) for k, v in means.items()}})
                window.clear()
                advance(0, note=" ".join(f"{k} {v:.4f}" for k, v in means.items()))
            advance()
            if record["step"] % cfg.checkpoint_every == 0 or record["step"] == cfg.steps:
                record["seconds"] += time.perf_counter() - started
                started = time.perf_counter()
                found = on_checkpoint(record["step"]) if on_checkpoint else None
                if found:  # measurements along the way (PSNR, snapshots) live in the record
                    record.setdefault("evals", []).append({"step": record["step"], **found})
                save()
    done_path.write_text(json.dumps({k: v for k, v in record.items() if k != "log"}, indent=2) + "\n")
    return record
