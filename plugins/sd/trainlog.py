"""What a training run records as it goes: ``log.jsonl`` (one JSON line per step: step,
loss, val_loss, lr, seconds) and, when tensorboard is installed, the same curves as
TensorBoard events in ``tensorboard/`` (``tensorboard --logdir <run>/train``).

A continued run first drops what lay past the step it continues from, in both."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from clood_candy import fsutil

SCALARS = {"loss": "loss/train", "val_loss": "loss/validation", "lr": "learning_rate"}


def _summary_writer(folder: Path, purge_step: int | None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional (the dev extra has it)
        return None
    # purge_step: events at or past it (from a run that went further or died) are hidden.
    return SummaryWriter(log_dir=str(folder), purge_step=purge_step)


class TrainLog:
    def __init__(self, out_dir: Path, keep_through: int | None, *, tensorboard: bool = True):
        """keep_through: the step training continues from (None: nothing will be trained,
        leave the record alone)."""
        self.path = out_dir / "log.jsonl"
        self.writer = None
        if keep_through is None:
            return
        kept = []
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line)["step"] <= keep_through:
                        kept.append(line)
                except (ValueError, KeyError):
                    continue  # a torn last line from a killed run
        fsutil.write_text(self.path, "".join(line + "\n" for line in kept))
        if tensorboard:
            self.writer = _summary_writer(out_dir / "tensorboard", keep_through + 1 if keep_through else None)

    def write(self, **entry: Any) -> None:
        entry = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in entry.items()}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
        if self.writer is not None:
            for key, tag in SCALARS.items():
                if entry.get(key) is not None:
                    self.writer.add_scalar(tag, entry[key], global_step=entry["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
