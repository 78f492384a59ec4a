"""What a family's model learns to predict, as the training loop sees it: how a step draws
its noise levels, noises the latents, asks the model and scores the answer, and the error
at fixed noise that validation and the denoising-error judge compare. SD1/SDXL predict the
noise (or v) on DDPM's schedule; a flow-matching family (Flux) brings its own objective
with the same four methods."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from clood_candy.records import TrainConfig
from clood_candy_plugins.sd import recipe
from clood_candy_plugins.sd.denoise import Cond, denoising_errors, predict


@dataclass
class NoisePrediction:
    scheduler: Any  # DDPMScheduler with the base's schedule
    prediction_type: str  # epsilon or v_prediction

    def draw_times(self, gen: torch.Generator, count: int, config: TrainConfig, latent_shape=None) -> torch.Tensor:
        """Noise levels for ``count`` items (``latent_shape``: for objectives whose levels
        depend on the image's size)."""
        t_high = min(config.timestep_max, self.scheduler.config.num_train_timesteps)
        return torch.randint(config.timestep_min, t_high, (count,), generator=gen)

    def noised(self, x0: torch.Tensor, noise: torch.Tensor, times: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the model's input, what it should answer)."""
        noisy = self.scheduler.add_noise(x0, noise, times)
        target = noise if self.prediction_type == "epsilon" else self.scheduler.get_velocity(x0, noise, times)
        return noisy, target

    def predict(self, model, noisy: torch.Tensor, times: torch.Tensor, cond: Cond) -> torch.Tensor:
        return predict(model, noisy, times, cond)

    def loss_items(self, pred: torch.Tensor, target: torch.Tensor, times: torch.Tensor,
                   config: TrainConfig) -> torch.Tensor:
        return recipe.loss_items(pred, target, times, self.scheduler, config, self.prediction_type)

    def errors(self, model, latents, cond: Cond, *, seed: int, draws: int) -> torch.Tensor:
        return denoising_errors(model, self.scheduler, latents, cond, seed=seed, draws=draws,
                                prediction_type=self.prediction_type)
