"""Flow matching, as Flux and SD3 learn it: a straight line from the photo's latent (σ = 0) to
pure noise (σ = 1); the model is shown a point on it and asked for the line's direction,
noise − latent. How often each σ is drawn is the main choice users of kohya, ai-toolkit
and SimpleTuner make (``timestep_sampling``):

- ``uniform``: every σ alike;
- ``logit_normal`` / ``sigmoid``: σ = sigmoid(N(mean, std)), mostly mid-way (SD3's paper,
  kohya's "sigmoid");
- ``shift``: sigmoid, then shifted toward noise by ``discrete_flow_shift`` (kohya's 3.1582
  for Flux; SD3 uses 3.0): σ' = sσ / (1 + (s − 1)σ);
- ``flux_shift``: the shift Flux.1-dev samples with, larger for images with more tokens
  (the scheduler's base_shift/max_shift over base/max_image_seq_len).

Draws come from the step's generator, so a resumed run repeats them exactly; diffusers'
``compute_density_for_timestep_sampling`` draws from the global generator instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from clood_candy.errors import UserError
from clood_candy.records import TrainConfig
from clood_candy_plugins.sd.denoise import Cond

SAMPLINGS = ("uniform", "logit_normal", "sigmoid", "shift", "flux_shift")
WEIGHTINGS = ("none", "sigma_sqrt", "cosmap")


@dataclass
class FlowSettings:
    """``[plugins.flux]`` / ``[plugins.sd3]`` options for training (defaults here: kohya's for
    Flux.1-dev; a family passes its own)."""

    timestep_sampling: str = "flux_shift"
    discrete_flow_shift: float = 3.1582
    logit_mean: float = 0.0
    logit_std: float = 1.0
    loss_weighting: str = "none"
    guidance: float = 1.0  # what dev's guidance embedding is fed while training (kohya and ai-toolkit: 1.0)

    @classmethod
    def from_options(cls, options: dict[str, Any], table: str = "flux") -> "FlowSettings":
        known = {k: options[k] for k in cls.__dataclass_fields__ if k in options}
        settings = cls(**known)
        if settings.timestep_sampling not in SAMPLINGS:
            raise UserError(f"[plugins.{table}] timestep_sampling must be one of {', '.join(SAMPLINGS)}, "
                            f"not {settings.timestep_sampling!r}")
        if settings.loss_weighting not in WEIGHTINGS:
            raise UserError(f"[plugins.{table}] loss_weighting must be one of {', '.join(WEIGHTINGS)}, "
                            f"not {settings.loss_weighting!r}")
        if settings.discrete_flow_shift <= 0 or settings.logit_std <= 0:
            raise UserError(f"[plugins.{table}] discrete_flow_shift and logit_std must be positive")
        return settings


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) → (B, h/2 · w/2, 4C): Flux reads the latent as 2×2 patches, one token each."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    b, _, d = tokens.shape
    x = tokens.view(b, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, d // 4, h, w)


def image_ids(h: int, w: int, device, dtype) -> torch.Tensor:
    """Each patch's (0, row, column): the rotary position the transformer gives it."""
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] = torch.arange(h // 2)[:, None]
    ids[..., 2] = torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


@dataclass
class FlowMatching:
    settings: FlowSettings
    scheduler_config: dict[str, Any]  # the base's FlowMatchEulerDiscreteScheduler config (flux_shift's line)
    packed: bool  # Flux: the latent goes in as 2×2-patch tokens with position ids; SD3 patches it itself
    guidance_embeds: bool = False  # Flux.1-dev has a guidance embedding; schnell and SD3 have none

    def _shift_mu(self, tokens: int) -> float:
        c = self.scheduler_config
        lo, hi = c.get("base_image_seq_len", 256), c.get("max_image_seq_len", 4096)
        slope = (c.get("max_shift", 1.15) - c.get("base_shift", 0.5)) / (hi - lo)
        return c.get("base_shift", 0.5) + slope * (tokens - lo)

    def draw_sigmas(self, gen: torch.Generator, count: int, tokens: int) -> torch.Tensor:
        s = self.settings
        if s.timestep_sampling == "uniform":
            return torch.rand(count, generator=gen)
        sigma = torch.sigmoid(torch.randn(count, generator=gen) * s.logit_std + s.logit_mean)
        if s.timestep_sampling == "shift":
            k = s.discrete_flow_shift
            sigma = k * sigma / (1 + (k - 1) * sigma)
        elif s.timestep_sampling == "flux_shift":
            mu = math.exp(self._shift_mu(tokens))
            sigma = mu / (mu + (1 / sigma - 1))
        return sigma

    # --- the four things the shared training loop asks (see clood_candy_plugins.sd.objective)

    def draw_times(self, gen: torch.Generator, count: int, config: TrainConfig, latent_shape=None) -> torch.Tensor:
        tokens = (latent_shape[-1] // 2) * (latent_shape[-2] // 2) if latent_shape is not None else 256
        return self.draw_sigmas(gen, count, tokens)

    def noised(self, x0: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = sigmas.view(-1, 1, 1, 1).to(x0)
        return (1 - s) * x0 + s * noise, noise - x0

    def predict(self, model, noisy: torch.Tensor, sigmas: torch.Tensor, cond: Cond) -> torch.Tensor:
        b, _, h, w = noisy.shape
        device, dtype = noisy.device, noisy.dtype
        if not self.packed:  # SD3: the latent as it is, the timestep on the scheduler's 0–1000 scale
            return model(hidden_states=noisy, encoder_hidden_states=cond.embeds, pooled_projections=cond.pooled,
                         timestep=(sigmas * 1000).to(device, dtype), return_dict=False)[0]
        guidance = (torch.full((b,), self.settings.guidance, device=device, dtype=torch.float32)
                    if self.guidance_embeds else None)
        text_ids = torch.zeros(cond.embeds.shape[1], 3, device=device, dtype=dtype)
        out = model(hidden_states=pack(noisy), encoder_hidden_states=cond.embeds, pooled_projections=cond.pooled,
                    timestep=sigmas.to(device, dtype), img_ids=image_ids(h, w, device, dtype), txt_ids=text_ids,
                    guidance=guidance, return_dict=False)[0]
        return unpack(out, h, w)

    def loss_items(self, pred: torch.Tensor, target: torch.Tensor, sigmas: torch.Tensor,
                   config: TrainConfig) -> torch.Tensor:
        if config.loss == "huber":
            c = config.huber_c
            per = 2 * c * (torch.sqrt((pred - target) ** 2 + c * c) - c)
        else:
            per = (pred - target) ** 2
        per = per.mean(dim=tuple(range(1, per.ndim)))
        if self.settings.loss_weighting != "none":
            from diffusers.training_utils import compute_loss_weighting_for_sd3

            per = per * compute_loss_weighting_for_sd3(self.settings.loss_weighting, sigmas.to(per)).flatten()
        return per

    @torch.no_grad()
    def errors(self, model, latents, cond: Cond, *, seed: int, draws: int, chunk: int = 16) -> torch.Tensor:
        """Mean squared error of the predicted direction per image, over ``draws`` fixed
        (noise, σ) pairs, σ stratified over (0, 1): comparable from step to step."""
        if not isinstance(latents, torch.Tensor):  # aspect buckets: each measured at its own size
            errors = torch.zeros(len(latents))
            for group in latents.groups():
                errors[group] = self.errors(model, latents[group].stack(), cond.select(group), seed=seed,
                                            draws=draws, chunk=chunk)
            return errors
        n = latents.shape[0]
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn((draws, *latents.shape[1:]), generator=gen)
        sigmas = (torch.arange(draws) + torch.rand(draws, generator=gen)) / draws
        rows_img, rows_draw = torch.arange(n).repeat_interleave(draws), torch.arange(draws).repeat(n)
        device, dtype = model.device, model.dtype
        out = []
        for start in range(0, n * draws, chunk):
            img, drw = rows_img[start:start + chunk], rows_draw[start:start + chunk]
            x0 = latents[img].to(device, torch.float32)
            noisy, target = self.noised(x0, noise[drw].to(device), sigmas[drw].to(device))
            pred = self.predict(model, noisy.to(dtype), sigmas[drw].to(device), cond.select(img).to(device, dtype))
            out.append(((pred.float() - target) ** 2).mean(dim=(1, 2, 3)).cpu())
        return torch.cat(out).view(n, draws).mean(dim=1)
