"""A loaded Stable Diffusion base: the pipeline, its caches, tokens and denoising error
(what judges and the report use without knowing the family)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import torch

from clood_candy.stages import LoadedBase
from clood_candy.records import TrainItem
from clood_candy_plugins.sd.adapters import AdapterSlots
from clood_candy_plugins.sd.bucketed import Fitted, bucket_of, latents_for, load_fitted
from clood_candy_plugins.sd.denoise import Cond, encode_images, encode_text, load_image
from clood_candy_plugins.sd.loading import TINY_RESOLUTION, LoadedPipeline
from clood_candy_plugins.sd import lora
from clood_candy_plugins.sd.lora import activate_only
from clood_candy_plugins.sd.objective import NoisePrediction
from clood_candy_plugins.sd.teaching import TeachingMixin

NATIVE_RESOLUTION = {"sd1": 512, "sdxl": 1024}
# The guidance rescale Lin et al. pair with a zero-terminal-SNR schedule: plain CFG on such a
# model overexposes (its strongest guidance lands on the noisiest step).
GUIDANCE_RESCALE = 0.7
GUIDANCE_SCALE = 7.0  # SD1.5/SDXL's usual classifier-free guidance (A1111's default)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def quiet_libraries() -> None:
    """diffusers/transformers progress bars and notices would bury our own progress."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.set_verbosity_error()
    dlog.disable_progress_bar()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()


class ModelLock:
    """A re-entrant lock around use of the shared modules that also sets torch's thread
    count while held. Tiny models run far faster on one thread: their ops are so small
    that a second thread only adds hand-off cost, and on a busy 2-core machine OpenMP
    spin-waiting made a training step 20x slower (3.4 s vs 0.17 s, measured)."""

    def __init__(self, threads: int | None):
        self.threads = threads
        self._lock = threading.RLock()
        self._depth = 0
        self._before = 0

    def __enter__(self) -> "ModelLock":
        self._lock.acquire()
        self._depth += 1
        if self._depth == 1 and self.threads:
            self._before = torch.get_num_threads()
            torch.set_num_threads(self.threads)
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0 and self.threads:
            torch.set_num_threads(self._before)
        self._lock.release()


class SDBase(TeachingMixin, LoadedBase):
    """A loaded SD pipeline with its caches. ``lock`` serialises use of the shared modules.
    TeachingMixin adds what the report shows (latents, noising, one-step guesses)."""

    def __init__(self, loaded: LoadedPipeline, base: str, *, device: torch.device, eval_draws: int = 4,
                 threads: int | None = None, buckets: bool = False, resolution: int | None = None):
        self.pipe = loaded.pipe.to(device)
        self.family = loaded.family
        self.base = base
        self.kind = loaded.kind
        self.is_toy = loaded.is_toy
        # The run's resolution when the user set one: samples, judges and the report then see
        # the model at the size it trains at (and cost what training does).
        small = loaded.kind in ("tiny", "miniature")  # bases made at 64 px, for CPUs
        self.clood_made = small
        self.resolution = resolution or (TINY_RESOLUTION if small else self.native_resolution)
        # What draw() uses unless told: the base's own recommendation, else the family's usual.
        self.guidance_scale = loaded.guidance if loaded.guidance is not None else self.default_guidance
        self.token_window = self.pipe.tokenizer.model_max_length - 2
        self.device = device
        self.eval_draws = eval_draws
        self.buckets = buckets  # prep.buckets: the denoising-error judge sees each photo at its bucket
        self.lock = ModelLock(threads if threads is not None else (1 if small else None))
        # Training adds noise with the model's own schedule; sampling uses a fast solver on it.
        self.scheduler_config = dict(self.pipe.scheduler.config)
        self.pipe.scheduler = self.sampling_scheduler()
        self.pipe.set_progress_bar_config(disable=True)
        for module in self.modules():
            module.requires_grad_(False)
            module.eval()
        self.adapters = AdapterSlots(self.pipe, self.family, reader=self.read_lora)
        self._latents: dict[tuple, torch.Tensor | Fitted] = {}
        self._cond: dict[tuple[str, int], Cond] = {}

    @property
    def native_resolution(self) -> int:
        return NATIVE_RESOLUTION[self.family]

    def modules(self) -> list[torch.nn.Module]:
        names = ("unet", "transformer", "vae", "text_encoder", "text_encoder_2")
        return [m for m in (getattr(self.pipe, n, None) for n in names) if m is not None]

    # --- what the shared training loop asks of a family's base (a family that predicts
    # something else, in another layout, overrides these: see clood_candy_plugins.flow)

    @property
    def denoiser(self) -> torch.nn.Module:
        """The model a LoRA trains: the UNet here."""
        return self.pipe.unet

    def sampling_scheduler(self):
        """The solver images are drawn with, on the model's own schedule."""
        from diffusers import DPMSolverMultistepScheduler

        return DPMSolverMultistepScheduler.from_config(self.scheduler_config)

    def read_lora(self, path: Path, adapter_name: str) -> None:
        """Load a LoRA file as a named adapter: diffusers' loader, or our peft reader for the
        kohya files diffusers cannot read for SD (LoHa, LoKr, DoRA)."""
        if lora.needs_peft_reader(path):
            lora.load_with_peft(self.pipe, path, adapter_name, self.family)
        else:
            self.pipe.load_lora_weights(str(path), adapter_name=adapter_name)

    def adapter_targets(self, config) -> list[str]:
        return lora.unet_targets(config)

    def objective(self, prediction_type: str | None = None) -> NoisePrediction:
        kind = prediction_type or self.prediction_type
        return NoisePrediction(self.noise_scheduler(kind), kind)

    def encode_text(self, captions: list[str], resolution: int) -> Cond:
        """The pipeline's own prompt encoding, with gradients (a trained text encoder needs them)."""
        return encode_text(self.pipe, captions, resolution)

    default_guidance = GUIDANCE_SCALE

    def draw(self, prompt: str, *, seed: int, steps: int | None = None, negative_prompt: str = "",
             guidance: float | None = None):
        """One image from the pipeline as it is (adapters as activated), at the base's resolution;
        ``guidance``: classifier-free guidance (None: the base's own, ``guidance_scale``)."""
        generator = torch.Generator("cpu").manual_seed(int(seed))
        return self.pipe(prompt=prompt, negative_prompt=negative_prompt or None,
                         num_inference_steps=steps or (8 if self.is_toy else 25),
                         guidance_scale=self.guidance_scale if guidance is None else guidance,
                         guidance_rescale=self.guidance_rescale,
                         height=self.resolution, width=self.resolution, generator=generator).images[0]

    def model_version(self) -> tuple[str, str]:
        """(ss_base_model_version, modelspec architecture) for the LoRA's metadata."""
        from clood_candy_plugins.sd.metadata import base_version

        return base_version(self.family, self.base, self.clood_made)

    def lora_facts(self) -> dict[str, str]:
        """Training facts a LoRA's metadata carries beyond SD's ss_* keys (none for SD)."""
        return {}

    def write_lora(self, out_base: Path, state, config, metadata: dict[str, str]) -> tuple[Path, Path]:
        """The kohya file and the diffusers-format file for an adapter state."""
        return lora.write_lora_files(self.pipe, out_base, state, config, self.family, metadata)

    def verify_lora(self, kohya: Path, *, config, resolution: int, prompt: str, diffusers_file: Path | None = None):
        from clood_candy_plugins.sd.verify import verify_lora

        return verify_lora(self.pipe, kohya, family=self.family, config=config, resolution=resolution, prompt=prompt,
                           diffusers_file=diffusers_file)

    @property
    def guidance_rescale(self) -> float:
        return GUIDANCE_RESCALE if self.scheduler_config.get("rescale_betas_zero_snr") else 0.0

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config.get("prediction_type", "epsilon")

    def noise_scheduler(self, prediction_type: str | None = None):
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_config(self.scheduler_config, prediction_type=prediction_type or self.prediction_type)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "kind": self.kind, "device": str(self.device),
                "denoiser_parameters": sum(p.numel() for p in self.denoiser.parameters())}

    # --- text and images ------------------------------------------------------

    def tokens(self, text: str) -> list[str]:
        return self.pipe.tokenizer.tokenize(text)

    def cond(self, captions: list[str], resolution: int | None = None) -> Cond:
        """Frozen-encoder conditioning, cached per distinct caption string (on CPU)."""
        res = resolution or self.resolution
        missing = sorted({c for c in captions if (c, res) not in self._cond})
        if missing:
            with self.lock, torch.no_grad():
                activate_only(self.pipe, [], text_only=True)  # the base's own text encoding
                for start in range(0, len(missing), 32):
                    part = missing[start:start + 32]
                    encoded = self.encode_text(part, res).to("cpu", torch.float32)
                    for i, caption in enumerate(part):
                        self._cond[(caption, res)] = encoded.select([i])
        return Cond.cat([self._cond[(c, res)] for c in captions])

    def latents(self, images: list[Path], resolution: int | None = None) -> torch.Tensor:
        """VAE latents per image file, cached by path, size, mtime and resolution."""
        res = resolution or self.resolution
        keys = []
        for path in images:
            stat = Path(path).stat()
            keys.append((str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size, res))
        todo = list({k: p for k, p in zip(keys, images) if k not in self._latents}.items())  # each file once
        if todo:
            pixels = torch.stack([load_image(Path(p), res) for _, p in todo])
            with self.lock:
                encoded = encode_images(self.pipe.vae, pixels)
            for (key, _), latent in zip(todo, encoded):
                self._latents[key] = latent
        return torch.stack([self._latents[k] for k in keys])

    def bucket_latents(self, images: list[Path], resolution: int | None = None) -> list[Fitted]:
        """VAE latents per image file at its aspect bucket for ``resolution`` (no square
        crop), cached by path, mtime, file size and bucket size."""
        res = resolution or self.resolution
        keys = []
        for path in images:
            stat = Path(path).stat()
            bucket = bucket_of(Path(path), res)
            keys.append((str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size, "bucket", *bucket))
        todo = {k: p for k, p in zip(keys, images) if k not in self._latents}  # each file once
        by_bucket: dict[tuple[int, int], list[tuple]] = {}
        for key in todo:
            by_bucket.setdefault(key[-2:], []).append(key)
        for bucket, group in by_bucket.items():  # one size a batch: the VAE takes a tensor
            loaded = [load_fitted(Path(todo[k]), bucket) for k in group]
            with self.lock:
                encoded = encode_images(self.pipe.vae, torch.stack([pixels for pixels, _, _ in loaded]))
            for key, (_, fit, size), latent in zip(group, loaded, encoded):
                self._latents[key] = Fitted(latent, fit, size)
        return [self._latents[k] for k in keys]

    def denoising_error(self, images: list[Path], captions: list[str], *, seed: int = 0) -> list[float]:
        if len(images) != len(captions):
            raise ValueError("denoising_error needs one caption per image")
        if not images:
            return []
        latents = (latents_for(self, [TrainItem(image=str(p), caption=c) for p, c in zip(images, captions)],
                               self.resolution, True) if self.buckets else self.latents(images))
        cond = self.cond(captions)
        with self.lock:
            self.adapters.activate(None, 0.0)
            errors = self.objective().errors(self.denoiser, latents, cond, seed=seed, draws=self.eval_draws)
        return [float(e) for e in errors]
