"""What training, validation and the diffusion-likelihood judge share: captions → text
conditioning, photos → latents, and the denoising error at fixed noise and timesteps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageOps


@dataclass
class Cond:
    """Text conditioning for a batch. SDXL adds a pooled embedding and six time ids."""

    embeds: torch.Tensor
    pooled: torch.Tensor | None = None
    time_ids: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.embeds.shape[0]

    def select(self, index: torch.Tensor | Sequence[int]) -> "Cond":
        index = torch.as_tensor(index, dtype=torch.long)
        pick = lambda t: None if t is None else t[index.to(t.device)]  # noqa: E731
        return Cond(pick(self.embeds), pick(self.pooled), pick(self.time_ids))

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Cond":
        move = lambda t: None if t is None else t.to(device=device, dtype=dtype or t.dtype)  # noqa: E731
        return Cond(move(self.embeds), move(self.pooled), move(self.time_ids))

    @staticmethod
    def cat(parts: Sequence["Cond"]) -> "Cond":
        join = lambda ts: None if ts[0] is None else torch.cat(ts)  # noqa: E731
        return Cond(join([p.embeds for p in parts]), join([p.pooled for p in parts]), join([p.time_ids for p in parts]))


def encode_text(pipe, captions: list[str], resolution: int) -> Cond:
    """The pipeline's own prompt encoding (so training sees what sampling sees). Not
    wrapped in no_grad: a trained text encoder needs the gradient."""
    device = pipe.unet.device
    if hasattr(pipe, "text_encoder_2"):
        embeds, _, pooled, _ = pipe.encode_prompt(prompt=captions, device=device, num_images_per_prompt=1,
                                                  do_classifier_free_guidance=False)
        # SDXL's micro-conditioning: original size, crop top-left, target size.
        ids = torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]], dtype=embeds.dtype, device=device)
        return Cond(embeds, pooled, ids.repeat(len(captions), 1))
    embeds, _ = pipe.encode_prompt(captions, device, 1, False)
    return Cond(embeds)


def load_image(path: Path, resolution: int) -> torch.Tensor:
    """A photo as a (3, r, r) tensor in [-1, 1]: shorter side to ``resolution``, centre crop."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img).convert("RGB")
        img = ImageOps.fit(img, (resolution, resolution), Image.Resampling.LANCZOS)
        data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    return data.view(resolution, resolution, 3).permute(2, 0, 1).float() / 127.5 - 1.0


@torch.no_grad()
def encode_images(vae, images: torch.Tensor, batch: int = 8) -> torch.Tensor:
    """Pixels → scaled latents (the distribution's mean: deterministic, cacheable)."""
    scale = vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    out = []
    for chunk in images.split(batch):
        dist = vae.encode(chunk.to(device=vae.device, dtype=vae.dtype)).latent_dist
        out.append(((dist.mean - shift) * scale).float().cpu())
    return torch.cat(out)


def predict(unet, noisy: torch.Tensor, timesteps: torch.Tensor, cond: Cond) -> torch.Tensor:
    extra = {}
    if cond.pooled is not None:
        extra["added_cond_kwargs"] = {"text_embeds": cond.pooled, "time_ids": cond.time_ids}
    return unet(noisy, timesteps, encoder_hidden_states=cond.embeds, return_dict=False, **extra)[0]


def to_epsilon(pred: torch.Tensor, noisy: torch.Tensor, timesteps: torch.Tensor, scheduler,
               prediction_type: str) -> torch.Tensor:
    """The model's noise estimate whatever it predicts, so errors compare across configs.
    For v: eps = sqrt(a)·v + sqrt(1−a)·x_t, with a the cumulative alpha at t."""
    if prediction_type == "epsilon":
        return pred
    if prediction_type != "v_prediction":
        raise ValueError(f"unsupported prediction type {prediction_type}")
    a = scheduler.alphas_cumprod.to(pred.device)[timesteps].float().view(-1, 1, 1, 1)
    return a.sqrt() * pred + (1 - a).sqrt() * noisy


def eval_plan(seed: int, count: int, latent_shape: Sequence[int], t_low: int = 0,
              t_high: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed noise draws and stratified timesteps (one per equal slice of [t_low, t_high)),
    from the seed alone: the same for every image, so errors compare across captions."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((count, *latent_shape), generator=gen)
    offsets = torch.rand(count, generator=gen)
    width = (t_high - t_low) / count
    timesteps = (t_low + (torch.arange(count) + offsets) * width).long().clamp(t_low, t_high - 1)
    return noise, timesteps


@torch.no_grad()
def denoising_errors(unet, scheduler, latents: torch.Tensor, cond: Cond, *, seed: int, draws: int,
                     prediction_type: str, chunk: int = 16) -> torch.Tensor:
    """Mean squared error of the predicted noise, per image, over ``draws`` fixed
    (noise, timestep) pairs. latents: (N, C, h, w) on any device, or aspect-bucketed
    latents (bucketed.BucketedLatents: each bucket measured on its own, with its items'
    time ids); cond: N rows."""
    if not isinstance(latents, torch.Tensor):
        cond = cond if cond.time_ids is None else Cond(cond.embeds, cond.pooled, latents.time_ids.to(cond.time_ids))
        errors = torch.zeros(len(latents))
        for group in latents.groups():
            errors[group] = denoising_errors(unet, scheduler, latents[group].stack(), cond.select(group), seed=seed,
                                             draws=draws, prediction_type=prediction_type, chunk=chunk)
        return errors
    n = latents.shape[0]
    noise, timesteps = eval_plan(seed, draws, latents.shape[1:])
    rows_img = torch.arange(n).repeat_interleave(draws)
    rows_draw = torch.arange(draws).repeat(n)
    device, dtype = unet.device, unet.dtype
    errors = []
    for start in range(0, n * draws, chunk):
        img, drw = rows_img[start:start + chunk], rows_draw[start:start + chunk]
        x0 = latents[img].to(device=device, dtype=torch.float32)
        eps = noise[drw].to(device)
        t = timesteps[drw].to(device)
        noisy = scheduler.add_noise(x0, eps, t)
        pred = predict(unet, noisy.to(dtype), t, cond.select(img).to(device, dtype)).float()
        est = to_epsilon(pred, noisy, t, scheduler, prediction_type)
        errors.append(((est - eps) ** 2).mean(dim=(1, 2, 3)).cpu())
    return torch.cat(errors).view(n, draws).mean(dim=1)
