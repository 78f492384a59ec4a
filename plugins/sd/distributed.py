"""Training in several processes at once (``accelerate launch``, one process per GPU, or
two or more on a CPU with the gloo backend).

Each process holds the whole model and trains on its slice of every batch; after the
step's micro-batches the gradients are averaged in ONE all-reduce (with the step's loss
and an "I failed" flag riding along), so every process applies the same update and the
adapters stay identical. The main process alone writes files; the others learn its
result through a broadcast. A plain (not launched) run never touches torch.distributed.

Why not ``accelerator.prepare``: batches come from (seed, step) rather than a DataLoader
(that is what makes a resumed run replay exactly), accelerate's scheduler wrapper would
advance the learning-rate schedule once per process, and DDP would all-reduce after every
micro-batch instead of once per optimizer step.
"""

from __future__ import annotations

import os
from typing import Any

import torch


def launched() -> bool:
    """Started by accelerate launch / torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def launched_device() -> torch.device | None:
    """This process's device under a launcher (cuda:<local rank> or cpu), else None."""
    if not launched():
        return None
    from accelerate import PartialState

    device = PartialState(cpu=not torch.cuda.is_available()).device
    return torch.device("cpu") if device.type == "cpu" else device


class Processes:
    """Who this process is among those training together, and what they share."""

    def __init__(self, device: torch.device):
        self.state = None
        if launched():
            from accelerate import PartialState

            self.state = PartialState(cpu=device.type == "cpu")
        self.count = self.state.num_processes if self.state else 1
        self.index = self.state.process_index if self.state else 0
        self.is_main = self.index == 0
        self.device = device

    def __repr__(self) -> str:
        return f"Processes(index={self.index}, count={self.count})"

    def average_gradients(self, params: list[torch.nn.Parameter], loss: float, failed: bool) -> tuple[float, bool]:
        """Average gradients and loss over processes; True when any process failed."""
        if self.count == 1:
            return loss, failed
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        extra = torch.tensor([loss, float(failed)], dtype=torch.float32, device=self.device)
        flat = torch.cat([g.detach().reshape(-1).float() for g in grads] + [extra])
        torch.distributed.all_reduce(flat)
        offset = 0
        for p, g in zip(params, grads):
            part = flat[offset:offset + g.numel()].view_as(g) / self.count
            if p.grad is None:
                p.grad = part.to(p.dtype)
            else:
                p.grad.copy_(part)
            offset += g.numel()
        return float(flat[-2]) / self.count, bool(flat[-1] > 0)

    def sum(self, values: torch.Tensor, failed: bool = False) -> tuple[torch.Tensor, bool]:
        """Element-wise sum over processes, and whether any process says it failed (one
        all-reduce, so a process that failed still meets the others here)."""
        if self.count == 1:
            return values, failed
        flat = torch.cat([values.to(self.device, torch.float32).reshape(-1),
                          torch.tensor([float(failed)], device=self.device)])
        torch.distributed.all_reduce(flat)
        return flat[:-1].view_as(values).cpu(), bool(flat[-1] > 0)

    def any_failed(self, failed: bool) -> bool:
        """True in every process when any of them failed."""
        return self.sum(torch.zeros(0), failed)[1]

    def from_main(self, value: Any) -> Any:
        """The main process's ``value`` in every process (also a barrier)."""
        if self.count == 1:
            return value
        box = [value if self.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def wait(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def mine(self, count: int) -> list[int]:
        """This process's share of ``count`` items (every count-th, from its index)."""
        return list(range(self.index, count, self.count))
