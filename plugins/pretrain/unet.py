"""The last stage: the UNet learns to denoise latents, conditioned on the text encoder
(started from CLIP's text half and trained along, slowly), with an EMA copy for sampling
and snapshot grids of fixed prompts along the way — the base learning to draw."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import torch

from clood_candy.progress import Progress
from clood_candy_plugins.pretrain.data import ShotSet, draw_caption
from clood_candy_plugins.pretrain.loop import run_stage
from clood_candy_plugins.pretrain.recipe import SCHEDULE, Recipe, unet_model
from clood_candy_plugins.sd.base import GUIDANCE_RESCALE
from clood_candy_plugins.pretrain.stages import batch_index

# The same prompts at every snapshot (and in the report): colour, background, layout, nothing.
SNAPSHOT_PROMPTS = [
    "jellybean, red, white background", "jellybean, blue, white background",
    "jellybean, yellow, wooden surface", "jellybean, green, blue cloth",
    "jellybean, orange, pink, pile, white background", "jellybean, purple, in a bowl",
    "jellybean, speckled, scattered, wooden surface", "",
]


def text_encoder_from(clip):
    from transformers import CLIPTextModel

    encoder = CLIPTextModel(clip.config.text_config)
    encoder.load_state_dict(clip.text_model.state_dict())  # transformers 5: no text_model level
    return encoder


def sample(unet, text_encoder, vae, tokenizer, prompts: list[str], seed: int, steps: int = 25,
           guidance: float = 5.0):
    """PIL images of prompts, one seed each (seed + row), through diffusers' own pipeline."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=DDIMScheduler(**SCHEDULE), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    gens = [torch.Generator().manual_seed(seed + k) for k in range(len(prompts))]
    side = unet.config.sample_size * pipe.vae_scale_factor
    with torch.no_grad():
        return pipe(prompts, generator=gens, num_inference_steps=steps, guidance_scale=guidance,
                    guidance_rescale=GUIDANCE_RESCALE, height=side, width=side).images


def strip(images) -> "Image.Image":
    from PIL import Image

    w, h = images[0].size
    sheet = Image.new("RGB", (w * len(images), h))
    for k, im in enumerate(images):
        sheet.paste(im, (k * w, 0))
    return sheet


def train_unet(recipe: Recipe, shots: ShotSet, latents: dict, clip, vae, tokenizer, work: Path,
               progress: Progress):
    """On the device CLIP and the VAE are on; every random draw is on a CPU generator, so a
    GPU run sees the very batches, noise and timesteps a CPU run does."""
    from diffusers import DDPMScheduler

    device = vae.device
    torch.manual_seed(recipe.seed + 2)
    unet, text_encoder = unet_model(), text_encoder_from(clip)
    models = torch.nn.ModuleDict({"unet": unet, "text": text_encoder}).to(device)
    ema = copy.deepcopy(models).requires_grad_(False)
    def adamw(lr: float) -> torch.optim.Optimizer:  # the text encoder at text_lr, scaled as the UNet's rate
        return torch.optim.AdamW([{"params": unet.parameters(), "lr": lr},
                                  {"params": text_encoder.parameters(), "lr": recipe.text_lr * lr / recipe.unet.lr}],
                                 weight_decay=0.01)

    optimizer = adamw(recipe.unet.lr)
    schedule = DDPMScheduler(**SCHEDULE)
    alpha_bar = schedule.alphas_cumprod
    weight = v_weight(alpha_bar, recipe.min_snr_gamma).to(device)
    scale = float(latents["scaling_factor"])
    train, _ = shots.split(recipe.holdout)
    snapshots = work / "snapshots"
    snapshots.mkdir(parents=True, exist_ok=True)
    ema_params, live_params = list(ema.parameters()), list(models.parameters())

    def step(i: int) -> dict[str, float]:  # i counts on across both cycles: each step its own batch
        gen = torch.Generator().manual_seed(recipe.seed * 1_000_037 + i)
        rng = random.Random(f"unet:{recipe.seed}:{i}")
        idx = batch_index(train, recipe.unet.batch, gen)
        mean, std = latents["mean"][idx].float(), latents["std"][idx].float()
        x0 = (mean + std * torch.randn(mean.shape, generator=gen)) * scale
        flips = torch.rand(len(idx), generator=gen) < 0.5
        x0[flips] = x0[flips].flip(-1)
        prompts = ["" if rng.random() < recipe.caption_dropout else draw_caption(shots.labels[j], rng) for j in idx]
        ids = tokenizer(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, schedule.config.num_train_timesteps, (len(idx),), generator=gen)
        noisy, target = schedule.add_noise(x0, noise, t).to(device), schedule.get_velocity(x0, noise, t).to(device)
        t = t.to(device)
        pred = unet(noisy, t, text_encoder(ids.to(device))[0]).sample
        per = (pred - target).pow(2).flatten(1).mean(1)
        loss = (per * weight[t]).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(models.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        decay = min(recipe.ema, (1 + i) / (10 + i))  # a short warm start, as diffusers' EMAModel
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, live_params, 1 - decay)
        return {"loss": loss.item(), "mse": per.mean().item()}

    total = recipe.unet.steps + (recipe.unet_refine.steps if recipe.unet_refine else 0)

    def snapshot(at: int) -> dict | None:
        if at % recipe.snapshot_every and at != total:
            return None
        vae.register_to_config(scaling_factor=scale)
        images = sample(ema["unet"], ema["text"], vae, tokenizer, SNAPSHOT_PROMPTS, seed=recipe.seed)
        name = f"step_{at:05d}.png"
        strip(images).save(snapshots / name)
        return {"snapshot": name}

    record = run_stage("unet", work / "unet", recipe.unet, {"models": models, "ema": ema}, optimizer, step,
                       progress, snapshot)
    if recipe.unet_refine is not None:
        # step() reads `optimizer` from this scope: the second cycle steps the new one.
        optimizer, first = adamw(recipe.unet_refine.lr), recipe.unet.steps
        refine = run_stage("unet-refine", work / "unet-refine", recipe.unet_refine, {"models": models, "ema": ema},
                           optimizer, lambda i: step(first + i), progress, lambda at: snapshot(first + at))
        record = joined(record, refine, first)
    return ema["unet"].eval(), ema["text"].eval(), record, scale


def joined(first: dict, second: dict, offset: int) -> dict:
    """One record of both cycles, steps counted on (the report draws one curve)."""
    shift = [{**row, "step": row["step"] + offset} for row in second["log"]]
    evals = [{**row, "step": row["step"] + offset} for row in second.get("evals", [])]
    return {**first, "steps": first["steps"] + second["steps"], "step": first["step"] + second["step"],
            "log": first["log"] + shift, "evals": first.get("evals", []) + evals,
            "seconds": first["seconds"] + second["seconds"], "cycles": [first["steps"], second["steps"]]}


def v_weight(alpha_bar: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-timestep loss weight on the v-error: min(SNR + 1, γ) / (SNR + 1)."""
    snr_1 = alpha_bar / (1 - alpha_bar).clamp_min(1e-12) + 1
    return snr_1.clamp(max=gamma) / snr_1


def held_out_loss(unet, text_encoder, latents: dict, shots: ShotSet, tokenizer, recipe: Recipe) -> float:
    """v-MSE on held-out shots at fixed noise and timesteps: the number the curve ends on."""
    from diffusers import DDPMScheduler

    schedule = DDPMScheduler(**SCHEDULE)
    _, held = shots.split(recipe.holdout)
    gen = torch.Generator().manual_seed(12345)
    rng = random.Random("held-out")
    x0 = latents["mean"][held].float() * float(latents["scaling_factor"])
    prompts = [draw_caption(shots.labels[j], rng, keep=1.0) for j in held]
    ids = tokenizer(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.randint(0, 1000, (len(held),), generator=gen)
    device = unet.device
    with torch.no_grad():
        pred = unet(schedule.add_noise(x0, noise, t).to(device), t.to(device), text_encoder(ids.to(device))[0]).sample
    return float((pred.cpu() - schedule.get_velocity(x0, noise, t)).pow(2).mean())

