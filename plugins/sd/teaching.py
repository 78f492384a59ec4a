"""What the report shows of a Stable Diffusion model's parts: the VAE's latents and
reconstruction, the forward (noising) process and the UNet's one-step guess of the clean
image, and the UNet's size.

A mixin for the SD family's LoadedBase: it needs ``self.pipeline`` (or ``self.pipe``), a
diffusers SD1 or SDXL pipeline, and ``self.resolution``. All of it runs without gradients
on whatever device and dtype the pipeline already sits.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDPMScheduler
from PIL import Image

from clood_candy_plugins.sd.denoise import encode_images, encode_text, load_image, predict


class TeachingMixin:
    resolution: int

    # --- the parts -----------------------------------------------------------

    def _teaching_pipeline(self) -> Any:
        for name in ("pipeline", "pipe"):
            pipe = getattr(self, name, None)
            if pipe is not None:
                return pipe
        raise AttributeError(f"{type(self).__name__} has no diffusers pipeline (.pipeline) to teach from")

    def _vae_place(self) -> tuple[torch.device, torch.dtype]:
        param = next(self._teaching_pipeline().vae.parameters())
        return param.device, param.dtype

    def _forward_schedule(self) -> DDPMScheduler:
        # The training (DDPM) view of the base's own noise schedule: add_noise and
        # alphas_cumprod are what training uses, whatever sampler the pipeline carries.
        own = getattr(self, "noise_scheduler", None)
        if callable(own):
            return own()
        return DDPMScheduler.from_config(self._teaching_pipeline().scheduler.config)

    @contextmanager
    def _base_alone(self) -> Iterator[None]:
        """Hold the base's lock (when it has one) with no LoRA applied: the report shows
        what the base model itself does."""
        lock = getattr(self, "lock", None) or nullcontext()
        with lock:
            adapters = getattr(self, "adapters", None)
            if adapters is not None:
                adapters.activate(None, 0.0)
            yield

    def _scale_shift(self) -> tuple[float, float]:
        config = self._teaching_pipeline().vae.config
        return float(config.scaling_factor), float(getattr(config, "shift_factor", None) or 0.0)

    def _to_pil(self, pixels: torch.Tensor) -> Image.Image:
        array = ((pixels[0].float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        return Image.fromarray(array)

    # --- what the report calls ---------------------------------------------

    @torch.no_grad()
    def encode_latents(self, image: Path) -> np.ndarray:
        """The VAE's latent of an image (channels, h, w), scaled as the UNet sees it."""
        # The training path's own loading and encoding (the distribution's mean, scaled),
        # so the report shows exactly what the trainer fed the UNet.
        pixels = load_image(Path(image), self.resolution - self.resolution % 8)
        return encode_images(self._teaching_pipeline().vae, pixels[None])[0].numpy()

    @torch.no_grad()
    def decode_latents(self, latents: Any) -> Image.Image:
        vae = self._teaching_pipeline().vae
        device, dtype = self._vae_place()
        scale, shift = self._scale_shift()
        z = torch.as_tensor(np.asarray(latents), dtype=dtype, device=device)
        if z.ndim == 3:
            z = z[None]
        return self._to_pil(vae.decode(z / scale + shift).sample)

    @torch.no_grad()
    def denoise_steps(self, image: Path, caption: str, timesteps: list[int], *,
                      seed: int = 0) -> list[tuple[int, Image.Image, Image.Image]]:
        """The image's latent noised to each timestep with one fixed noise draw, and the
        UNet's one-step estimate of the clean latent from it (the x0 it implies), decoded."""
        pipe = self._teaching_pipeline()
        schedule = self._forward_schedule()
        unet = pipe.unet
        device, unet_dtype = next(unet.parameters()).device, next(unet.parameters()).dtype
        # A base configured as v-prediction (SD2-768 style) says so itself; else its scheduler does.
        prediction = getattr(self, "prediction_type", None) or schedule.config.prediction_type
        alphas = schedule.alphas_cumprod.to(device=device, dtype=torch.float32)
        last = schedule.config.num_train_timesteps - 1
        latents = []
        with self._base_alone():
            clean = torch.from_numpy(self.encode_latents(image))[None].to(device=device, dtype=torch.float32)
            noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed)).to(device)
            conditioning = encode_text(pipe, [caption], self.resolution).to(device, unet_dtype)
            for t in (int(min(max(t, 0), last)) for t in timesteps):
                step = torch.tensor([t], device=device, dtype=torch.long)
                noisy = schedule.add_noise(clean, noise, step)
                predicted = predict(unet, noisy.to(unet_dtype), step, conditioning).float()
                a = alphas[t]
                if prediction == "epsilon":
                    guess = (noisy - (1 - a).sqrt() * predicted) / a.sqrt()
                elif prediction == "v_prediction":
                    guess = a.sqrt() * noisy - (1 - a).sqrt() * predicted
                else:  # "sample": the model predicts the clean latent itself
                    guess = predicted
                latents.append((t, noisy[0].cpu().numpy(), guess[0].cpu().numpy()))
        return [(t, self.decode_latents(noisy), self.decode_latents(guess)) for t, noisy, guess in latents]

    def signal_share(self, timesteps: list[int]) -> list[float]:
        """How much of the noised latent's variance is still the image at each timestep
        (alpha-bar of the schedule): 1 is the clean image, 0 is pure noise."""
        alphas = self._forward_schedule().alphas_cumprod
        last = len(alphas) - 1
        return [float(alphas[min(max(int(t), 0), last)]) for t in timesteps]

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self._teaching_pipeline().unet.parameters())
