"""The two ways a long training run dies that a user can fix: memory and disk. Each gets
a message that says what to change; the last good checkpoint is kept either way."""

from __future__ import annotations

import errno

import torch

from clood_candy.records import TrainConfig

DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


class ProcessOutOfMemory(MemoryError):
    """This process, or another one training with it, ran out of memory outside a step
    (validation, a sample, a checkpoint): every process stops at the same point instead
    of leaving the others waiting for it."""


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    # CUDA says "out of memory"; the CPU allocator "can't allocate memory".
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def guarded(work):
    """``work()``'s result and False, or None and True when it ran out of memory (memory
    given back): the caller tells the other processes before anyone raises."""
    try:
        return work(), False
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        free_memory()
        return None, True


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL


def free_memory() -> None:
    """Give back what the failed step held, so the caller (a config fight) can go on."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def out_of_memory_message(config: TrainConfig, resolution: int, device: torch.device, step: int | None,
                          where: str | None = None) -> str:
    where = where or (f"at step {step}" if step else "before training started")
    changes = [f"lower batch_size (now {config.batch_size}; raise gradient_accumulation to keep the effective batch)",
               f"lower resolution (now {resolution})"]
    if not config.gradient_checkpointing:
        changes.append("set gradient_checkpointing = true")
    if config.mixed_precision == "no":
        changes.append('set mixed_precision = "bf16" (or "fp16" on older GPUs)')
    if config.optimizer != "adamw8bit":
        changes.append('use optimizer = "adamw8bit" (needs bitsandbytes)')
    return f"out of memory on {device.type} {where} in config {config.name}: " + "; ".join(changes)


def disk_full_message(exc: OSError, what: str, step: int) -> str:
    place = f" ({exc.filename})" if exc.filename else ""
    return (f"disk full while saving the {what} at step {step}{place}: free some space and train again "
            "to continue from the last checkpoint")
