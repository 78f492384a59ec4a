"""Prior preservation (DreamBooth): alongside the photos, train on pictures the base itself
makes of the class ("a photo of jellybean"), so the LoRA learns *this* jellybean without
forgetting what jellybeans in general look like.

The class images are generated once per (base, prompt, resolution, seed) and kept in the
run (``train/class_images/<key>/class-0000.png`` …), so every config of a fight and every
continued run reuses them; only missing ones are drawn.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from clood_candy import fsutil
from clood_candy.records import TrainConfig, TrainSet
from clood_candy.runstore import fingerprint
from clood_candy_plugins.sd.data import step_seed

if TYPE_CHECKING:
    from clood_candy.context import StageContext
    from clood_candy_plugins.sd.base import SDBase
    from clood_candy_plugins.sd.distributed import Processes


@dataclass
class PriorSet:
    prompt: str
    images: list[Path]
    latents: torch.Tensor
    weight: float
    folder: Path


def class_prompt(config: TrainConfig, data: TrainSet) -> str:
    return config.class_prompt or f"a photo of {data.class_word}"


def class_count(config: TrainConfig, data: TrainSet) -> int:
    """``num_class_images``, or one class image per training photo when it is 0."""
    return config.num_class_images if config.num_class_images > 0 else len(data.train)


def class_images(base: "SDBase", data: TrainSet, config: TrainConfig, resolution: int, ctx: "StageContext",
                 processes: "Processes") -> PriorSet:
    """The class images (generating the missing ones, each process its share) and their latents."""
    prompt, count = class_prompt(config, data), class_count(config, data)
    steps = 8 if base.is_toy else 25
    key = fingerprint(base.base, prompt, resolution, steps, ctx.config.seed)[:12]
    folder = ctx.run.path("train", "class_images", key)
    paths = [folder / f"class-{i:04d}.png" for i in range(count)]
    missing = [i for i in processes.mine(count) if not paths[i].is_file()]
    if missing:
        task = ctx.progress.task(f"Class images for prior preservation ({prompt!r})", total=len(missing))
        with base.lock, task as advance:
            base.adapters.activate(None, 0.0)  # the base alone: these show what it knew before training
            for i in missing:
                # Seeded by the image number alone: the same set however many processes draw it.
                gen = torch.Generator("cpu").manual_seed(step_seed(ctx.config.seed, -3, i))
                with torch.no_grad():
                    image = base.pipe(prompt=prompt, num_inference_steps=steps, guidance_scale=base.guidance_scale, height=resolution,
                                      width=resolution, generator=gen,
                                      guidance_rescale=getattr(base, "guidance_rescale", 0.0)).images[0]
                buffer = io.BytesIO()
                image.save(buffer, format="PNG")
                fsutil.write_bytes(paths[i], buffer.getvalue())
                advance(1)
    processes.wait()  # every process's share is on disk
    return PriorSet(prompt=prompt, images=paths, latents=base.latents(paths, resolution),
                    weight=config.prior_loss_weight, folder=folder)
