"""One optimizer step: which photos, noise and timesteps, the UNet's guess, the loss, and
the gradients averaged over processes.

Every random draw comes from (seed, step, micro-batch) and is made for the batch of ALL
processes at once, each process keeping its slice. So a continued run replays exactly
what an uninterrupted one did, and two processes with batch 1 see what one process with
batch 2 sees.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from clood_candy.records import TrainConfig, TrainSet
from clood_candy_plugins.sd.bucketed import BucketedLatents, bucket_batch_indices, with_time_ids
from clood_candy_plugins.sd.data import batch_indices, step_generator, step_seed, vary_caption
from clood_candy_plugins.sd.failures import free_memory, is_out_of_memory, out_of_memory_message

if TYPE_CHECKING:
    from clood_candy_plugins.sd.base import SDBase
    from clood_candy_plugins.sd.distributed import Processes
    from clood_candy_plugins.sd.prior import PriorSet


class TrainingStopped(Exception):
    """The loss went NaN/inf, or memory ran out: stop, keep the last good checkpoint, report."""


@dataclass
class Stepper:
    base: "SDBase"
    data: TrainSet
    config: TrainConfig
    latents: "torch.Tensor | BucketedLatents"  # the training photos' latents, on CPU (per bucket with prep.buckets)
    objective: Any  # what the model predicts and how it is scored (objective.py, or the family's own)
    model: Any  # the denoiser (UNet or transformer), or its torch.compile'd form
    params: list[torch.nn.Parameter]
    resolution: int
    autocast: Any
    scaler: Any
    processes: "Processes"
    prior: "PriorSet | None" = None

    def __post_init__(self) -> None:
        # A diffusers model's .dtype walks every module: 6 ms a call on the tiny UNet, once.
        self.dtype = self.base.denoiser.dtype
        self.bucketed = isinstance(self.latents, BucketedLatents)

    def step(self, step: int) -> float:
        """Gradients for one optimizer step (over gradient_accumulation micro-batches),
        averaged over processes; returns the step's loss. Raises TrainingStopped."""
        total, failed = 0.0, False
        try:
            for micro in range(self.config.gradient_accumulation):
                total += self._micro(step, micro)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            failed = True  # the others must hear of it before they wait on our gradients
            for p in self.params:
                p.grad = None
            free_memory()
        loss, failed = self.processes.average_gradients(self.params, total, failed)
        if failed:
            raise TrainingStopped(out_of_memory_message(self.config, self.resolution, self.base.device, step))
        if not math.isfinite(loss):
            raise TrainingStopped(f"loss became {loss} at step {step} (learning rate {self.config.learning_rate} "
                                  "too high?)")
        return loss

    def _draws(self, step: int, micro: int, count: int, gen: torch.Generator, *, stream: int):
        """Item indices, noise and timesteps for every process's share; returns this one's."""
        config, n = self.config, self.processes.count
        if stream == 0 and self.bucketed:  # one bucket a batch: its images share a size
            index = bucket_batch_indices(self.latents.sizes, config, step, micro, n)
            latent_shape = self.latents.latents[index[0]].shape
        else:
            index = batch_indices(count, config, step, micro, n, stream=stream, repeats=None if stream == 0 else 1)
            latent_shape = (self.latents if stream == 0 else self.prior.latents).shape[1:]
        shape = (len(index), *latent_shape)
        noise = torch.randn(shape, generator=gen)
        if config.noise_offset:  # lets the model learn overall brightness shifts
            noise = noise + config.noise_offset * torch.randn((shape[0], shape[1], 1, 1), generator=gen)
        timesteps = self.objective.draw_times(gen, shape[0], config, latent_shape)
        mine = slice(self.processes.index * config.batch_size, (self.processes.index + 1) * config.batch_size)
        return index, index[mine], noise[mine], timesteps[mine], mine

    def _micro(self, step: int, micro: int) -> float:
        config = self.config
        gen = step_generator(config.seed, step, micro)
        rng = random.Random(step_seed(config.seed, step, micro))
        everyone, index, noise, timesteps, mine = self._draws(step, micro, len(self.data.train), gen, stream=0)
        captions = [vary_caption(self.data.train[i].caption, config, rng) for i in everyone][mine]
        if self.bucketed:
            batch = self.latents[index]
            x0, ids = batch.stack(), batch.time_ids
        else:
            x0, ids = self.latents[index], None
        own = len(index)
        parts = [(x0, noise, timesteps, captions, ids)]
        if self.prior is not None:  # the class images' half of the batch, drawn after the photos'
            _, c_index, c_noise, c_timesteps, _ = self._draws(step, micro, len(self.prior.latents), gen, stream=1)
            c_x0, c_captions = self.prior.latents[c_index], [self.prior.prompt] * len(c_index)
            if c_x0.shape[1:] == x0.shape[1:]:  # one UNet call for both halves
                parts = [(torch.cat([x0, c_x0]), torch.cat([noise, c_noise]), torch.cat([timesteps, c_timesteps]),
                          captions + c_captions, ids)]
            else:  # square class images beside a photo bucket of another size
                parts.append((c_x0, c_noise, c_timesteps, c_captions, None))
        per = torch.cat([self._losses(*part) for part in parts])
        if self.prior is None:
            loss = per.mean()
        else:
            loss = per[:own].mean() + self.prior.weight * per[own:].mean()
        loss = loss / config.gradient_accumulation
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        return float(loss.detach())

    def _losses(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, captions: list[str],
                ids: torch.Tensor | None) -> torch.Tensor:
        """The loss of each item: noise the latents, let the model guess. ``ids``: the
        first items' SDXL time ids, when they are not the square default."""
        config, base, device = self.config, self.base, self.base.device
        x0, noise, timesteps = x0.to(device), noise.to(device), timesteps.to(device)
        noisy, target = self.objective.noised(x0, noise, timesteps)
        # Frozen encoder: cached conditioning (computed outside autocast, so the cache stays fp32).
        cond = None if config.train_text_encoder else base.cond(captions, self.resolution)
        dtype = self.dtype
        with self.autocast:
            if cond is None:
                cond = base.encode_text(captions, self.resolution)
            cond = with_time_ids(cond, ids)
            pred = self.objective.predict(self.model, noisy.to(dtype), timesteps, cond.to(device, dtype))
        return self.objective.loss_items(pred.float(), target.float(), timesteps, config)
