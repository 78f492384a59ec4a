"""What a training run leaves behind: checkpoints, the final LoRA (kohya + diffusers
files, verified before they are handed on), ``outcome.json``, and the TrainOutcome record.
Only the main process writes; a full disk stops the run with the last good checkpoint kept."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clood_candy import fsutil
from clood_candy.records import TrainConfig, TrainOutcome, TrainSet
from clood_candy_plugins.sd import checkpoint as ckpt
from clood_candy_plugins.sd import lora
from clood_candy_plugins.sd.bucketed import bucket_metadata
from clood_candy_plugins.sd.data import describe_data
from clood_candy_plugins.sd.failures import disk_full_message, is_disk_full
from clood_candy_plugins.sd.metadata import lora_metadata
from clood_candy_plugins.sd.verify import problem

if TYPE_CHECKING:
    from clood_candy.context import StageContext
    from clood_candy_plugins.sd.base import SDBase
    from clood_candy_plugins.sd.distributed import Processes
    from clood_candy_plugins.sd.prior import PriorSet


@dataclass
class Session:
    """One call of the trainer: what it trains, where, and what it has done so far."""

    base: "SDBase"
    data: TrainSet
    config: TrainConfig
    out_dir: Path
    ctx: "StageContext"
    processes: "Processes"
    target: int
    identity: str
    resolution: int
    prediction_type: str
    began: float
    prior: "PriorSet | None" = None
    prior_seconds: float = 0.0
    history: dict[str, list] = field(default_factory=lambda: {"train_loss": [], "val_loss": []})

    def elapsed(self) -> float:
        return round(self.prior_seconds + time.perf_counter() - self.began, 3)

    def rel(self, path: Path) -> str:
        try:
            return self.ctx.run.rel(path)
        except ValueError:  # out_dir outside the run folder (a caller's choice): keep it absolute
            return str(Path(path).resolve())


def output_name(ctx: "StageContext", config: TrainConfig) -> str:
    slug = lambda s: re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-") or "lora"  # noqa: E731
    return f"{slug(ctx.config.name)}-{slug(config.name)}"


def save_lora(s: Session, path_base: Path, steps: int) -> dict[str, Any]:
    """Write kohya + diffusers files for the adapter as it is now; verify the kohya file."""
    state = lora.adapter_state(s.base.pipe, s.config)
    facts = describe_data(s.data.train, s.data.validation, s.config, s.data.trigger)
    facts.update(bucket_metadata(s.data.train, s.resolution, s.data.buckets))
    if s.prior is not None:  # kohya's names for regularisation images
        facts.update(ss_num_reg_images=str(len(s.prior.images)), ss_prior_loss_weight=str(s.prior.weight),
                     ss_class_prompt=s.prior.prompt)
    meta = lora_metadata(family=s.base.family, base_name=s.base.base, config=s.config, data=s.data, steps=steps,
                         target=s.target, resolution=s.resolution, prediction_type=s.prediction_type,
                         output_name=path_base.name, data_facts={**facts, **s.base.lora_facts()}, toy=s.base.clood_made,
                         version=s.base.model_version())
    kohya, diffusers_file = s.base.write_lora(path_base, state, s.config, meta)
    prompt = f"a photo of {s.data.trigger} {s.data.class_word}"
    verification = s.base.verify_lora(kohya, config=s.config, resolution=s.resolution, prompt=prompt,
                                      diffusers_file=diffusers_file)
    return {"kohya": kohya, "diffusers": diffusers_file, "verification": verification}


def save_checkpoint(s: Session, step: int, optimizer, lr_scheduler) -> str | None:
    """Main process: write the checkpoint for ``step``; a message instead when the disk is full."""
    saved: dict[str, Any] = {}

    def write_lora(path: Path) -> None:
        saved.update(save_lora(s, path.with_suffix(""), step))

    meta = {"identity": s.identity, "history": s.history, "seconds": s.elapsed()}
    try:
        written = ckpt.save(s.out_dir, step, lora.adapter_state(s.base.pipe, s.config), optimizer, lr_scheduler,
                            {**meta, "verification_ok": None}, write_lora)
        meta_path = written.folder / "meta.json"
        stored = json.loads(meta_path.read_text(encoding="utf-8"))
        stored["verification_ok"] = saved["verification"]["ok"]
        fsutil.write_json(meta_path, stored)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        return disk_full_message(exc, "checkpoint", step)
    return None


def finish(s: Session) -> TrainOutcome:
    """Main process: the final LoRA, verified, and outcome.json."""
    try:
        saved = save_lora(s, s.out_dir / output_name(s.ctx, s.config), s.target)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        return outcome(s, s.target, error=disk_full_message(exc, "LoRA", s.target))
    verification = saved["verification"]
    result = outcome(s, s.target, error=problem(verification))
    result.lora = s.rel(saved["kohya"])
    result.lora_diffusers = s.rel(saved["diffusers"])
    result.verification = verification
    try:
        fsutil.write_json(s.out_dir / "outcome.json", {"identity": s.identity, "outcome": result.model_dump(mode="json")})
    except OSError as exc:  # the LoRA is written; only the "already done" shortcut is lost
        if not is_disk_full(exc):
            raise
    return result


def outcome(s: Session, steps_done: int, *, error: str | None) -> TrainOutcome:
    vals = s.history["val_loss"]
    return TrainOutcome(config=s.config, steps_done=steps_done,
                        checkpoints=[s.rel(c.lora) for c in ckpt.checkpoints(s.out_dir) if c.step <= steps_done],
                        train_loss=list(s.history["train_loss"]), val_loss=list(vals),
                        final_val_loss=vals[-1][1] if vals else None, error=error, seconds=s.elapsed())


def finished_outcome(out_dir: Path, identity: str, target: int) -> TrainOutcome | None:
    """This exact run already finished at ``target`` (a fight re-asking for a budget)."""
    path = out_dir / "outcome.json"
    if not path.is_file():
        return None
    stored = fsutil.read_json(path)
    result = TrainOutcome.model_validate(stored["outcome"])
    if stored.get("identity") == identity and result.steps_done == target and result.error is None:
        return result
    return None
