"""What the SD families tell the plan: starting points per LoRA type from the user's
sources (seed 004's "Training Parameter Quick Reference"), the device training will use,
and the sizes of a step (sizing.py). Nothing here loads a model."""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING

from clood_candy.plan.records import DeviceInfo, TrainingDefaults

if TYPE_CHECKING:
    from clood_candy.config import CloodConfig

GB = 1024**3
NATIVE = {"sd1": 512, "sdxl": 1024}
LABEL = {"sd1": "SD1.5", "sdxl": "SDXL"}
# seed 004: SD1.5 "1e-4 | 1500-3000 (character) | 3000-6000 (style) | rank 4-16 | batch 1-2";
# SDXL "1e-4 to 5e-5 | 1500-4000 | 3000-8000 | rank 8-32 | batch 1-4". Within each range: the
# top rank for what has much to hold (a character, a style; seed 001 gives styles and
# characters the higher ranks too), the lower one for one object; SDXL's lower rate for the
# types trained longest on the most photos ("Lower LR + more steps = safer").
RANKS = {"sd1": {"object": 8, "scene": 8, "concept": 8, "character": 16, "style": 16},
         "sdxl": {"object": 16, "scene": 16, "concept": 16, "character": 32, "style": 32}}
RATES = {"sd1": {}, "sdxl": {"style": 5e-5, "concept": 5e-5, "scene": 5e-5}}
STEPS = {"sd1": {"character": (1500, 3000), "style": (3000, 6000)},
         "sdxl": {"character": (1500, 4000), "style": (3000, 8000)}}
SOURCE = {"sd1": "seed 004: SD1.5 LoRAs train at 1e-4, rank 4–16, batch 1–2",
          "sdxl": "seed 004: SDXL LoRAs train at 1e-4 to 5e-5, rank 8–32, batch 1–4"}
# Held before any model: the CUDA context and kernels (typical of recent drivers, not
# measured here); on the CPU the process's libraries (torch, diffusers, transformers, peft:
# 435 MB RSS) and what its allocator keeps once a step has run, measured by bench/memory_bench.py.
CUDA_RUNTIME = int(0.5 * GB)
CPU_RUNTIME = int(0.7 * GB)
# Scratch as a share of the full forward's activations (memory.py): fitted to the CPU's peak
# RSS of real-size SD1.5 steps, fp32 and bf16, with and without checkpointing, 256 and 512 px
# (BENCHMARKS.md); on a GPU the fused kernels need less, and nothing here has measured it yet.
CPU_WORKSPACE, CUDA_WORKSPACE = 0.6, 0.1


def training_defaults(family: str, config: "CloodConfig") -> TrainingDefaults:
    from clood_candy_plugins.sd.loading import SMALL_BASES, TINY_NAMES, TINY_RESOLUTION

    lora_type = config.caption.lora_type
    rank = RANKS[family][lora_type]
    small = config.base in SMALL_BASES
    sized = " (the toy base is sized like it)" if config.base in TINY_NAMES else " (the miniature base is sized like it)"
    return TrainingDefaults(learning_rate=RATES[family].get(lora_type, 1e-4), rank=rank, alpha=float(rank),
                            batch_size=1, steps_range=STEPS[family].get(lora_type),
                            resolution=TINY_RESOLUTION if small else NATIVE[family],
                            source=SOURCE[family] + (sized if small else ""))


def device_info(config: "CloodConfig") -> DeviceInfo:
    """The device load() will pick ([plugins.sd] device, else this process's GPU, else the
    CPU); ``train.gpu_memory`` caps it, or describes a GPU this machine does not have."""
    import torch

    wanted = config.plugins.get("sd", {}).get("device")
    planned = int(config.train.gpu_memory * GB) if config.train.gpu_memory else None
    eight_bit = importlib.util.find_spec("bitsandbytes") is not None
    device = torch.device(wanted or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(device.index or 0)
        return DeviceInfo(kind="cuda", name=props.name, memory_bytes=planned or props.total_memory,
                          bf16=props.major >= 8, fp16=True, runtime_bytes=CUDA_RUNTIME, eight_bit_adam=eight_bit,
                          workspace_share=CUDA_WORKSPACE)
    if planned:  # planning on a laptop for the GPU box: the GPU the user describes
        return DeviceInfo(kind="cuda", name=f"a GPU with {config.train.gpu_memory:g} GB", memory_bytes=planned,
                          bf16=True, fp16=True, runtime_bytes=CUDA_RUNTIME, eight_bit_adam=eight_bit, assumed=True,
                          workspace_share=CUDA_WORKSPACE)
    if device.type == "mps":
        return DeviceInfo(kind="mps", name="Apple GPU", memory_bytes=_ram(), fp16=True, runtime_bytes=CPU_RUNTIME,
                          workspace_share=CPU_WORKSPACE)
    return DeviceInfo(kind="cpu", name=f"CPU, {os.cpu_count()} cores", memory_bytes=_ram(), runtime_bytes=CPU_RUNTIME,
                      workspace_share=CPU_WORKSPACE, measured=True)


def _ram() -> int | None:
    """The machine's total memory: not what is free this minute, so that planning the same
    run twice gives the same plan (and a resumed run continues its own checkpoints)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
