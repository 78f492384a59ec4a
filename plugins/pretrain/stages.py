"""The first three stages: CLIP (contrastive), the VAE, and the latent cache.

Order matters and mirrors how SD was made: CLIP and the autoencoder are trained on their
own first; the UNet then learns in the VAE's latent space, conditioned on CLIP's text half.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from clood_candy.progress import Progress
from clood_candy_plugins.pretrain.data import ShotSet, draw_caption
from clood_candy_plugins.pretrain.loop import run_stage
from clood_candy_plugins.pretrain.recipe import Recipe, clip_config, vae_model


CPU = torch.device("cpu")


def batch_index(train: np.ndarray, batch: int, gen: torch.Generator) -> np.ndarray:
    return train[torch.randint(len(train), (batch,), generator=gen).numpy()]


def flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    mask = torch.rand(x.shape[0], generator=gen) < 0.5
    x = x.clone()
    x[mask] = x[mask].flip(-1)
    return x


def train_clip(recipe: Recipe, shots: ShotSet, work: Path, tokenizer, progress: Progress,
               device: torch.device = CPU):
    from transformers import CLIPModel

    torch.manual_seed(recipe.seed)
    model = CLIPModel(clip_config()).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.clip.lr, weight_decay=0.05)
    train, _ = shots.split(recipe.holdout)

    def step(i: int) -> dict[str, float]:
        gen = torch.Generator().manual_seed(recipe.seed * 1_000_003 + i)
        rng = random.Random(f"clip:{recipe.seed}:{i}")
        idx = batch_index(train, recipe.clip.batch, gen)
        tokens = tokenizer([draw_caption(shots.labels[j], rng) for j in idx], padding="longest",
                           truncation=True, max_length=77, return_tensors="pt")
        out = model(input_ids=tokens.input_ids.to(device), attention_mask=tokens.attention_mask.to(device),
                    pixel_values=flip(shots.pixels(idx), gen).to(device), return_loss=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return {"loss": out.loss.item()}

    record = run_stage("clip", work / "clip", recipe.clip, {"model": model}, optimizer, step, progress)
    return model.eval(), record


def vae_crops(recipe: Recipe, shots: ShotSet, train: np.ndarray, batch: int, gen: torch.Generator) -> torch.Tensor:
    """A batch as both VAE stages see it: random shots, one random crop, half flipped."""
    x = shots.pixels(batch_index(train, batch, gen))
    crop = recipe.vae_crop
    top, left = (int(v) for v in torch.randint(0, recipe.side - crop + 1, (2,), generator=gen))
    return flip(x[:, :, top:top + crop, left:left + crop], gen)


def psnr(vae, pixels: torch.Tensor) -> float:
    """Mean PSNR (dB, images in [0, 1]) of the VAE's reconstructions from the posterior mode."""
    with torch.no_grad():
        values = []
        for part in pixels.split(64):
            rec = vae.decode(vae.encode(part).latent_dist.mode()).sample.clamp(-1, 1)
            mse = ((rec - part) / 2).pow(2).flatten(1).mean(1)
            values.append(10 * torch.log10(1 / mse.clamp_min(1e-10)))
    return float(torch.cat(values).mean())


def train_vae(recipe: Recipe, shots: ShotSet, work: Path, progress: Progress, device: torch.device = CPU):
    torch.manual_seed(recipe.seed + 1)
    vae = vae_model().to(device)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=recipe.vae.lr, weight_decay=0.0)
    train, held = shots.split(recipe.holdout)
    held_pixels = shots.pixels(held).to(device)

    def step(i: int) -> dict[str, float]:
        gen = torch.Generator().manual_seed(recipe.seed * 1_000_033 + i)
        x = vae_crops(recipe, shots, train, recipe.vae.batch, gen).to(device)
        posterior = vae.encode(x).latent_dist
        rec = vae.decode(posterior.sample(gen)).sample  # diffusers draws a CPU generator's noise on the CPU
        mse, l1 = F.mse_loss(rec, x), F.l1_loss(rec, x)
        kl = posterior.kl().mean()
        loss = mse + 0.1 * l1 + recipe.vae_kl * kl
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return {"mse": mse.item(), "kl": kl.item()}

    def measure(at: int) -> dict:
        vae.eval()
        found = {"psnr_db": round(psnr(vae, held_pixels), 2)}
        vae.train()
        return found

    record = run_stage("vae", work / "vae", recipe.vae, {"vae": vae}, optimizer, step, progress, measure)
    vae.eval()
    record["psnr_db"] = round(psnr(vae, held_pixels), 2)
    return vae, record


def rotate_hue(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] with their colours turned by ``angles`` (radians, one per image)
    about the grey axis of RGB: greys stay grey, every hue moves round the wheel."""
    k = torch.full((3,), 3 ** -0.5)
    cross = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    cos, sin = angles.cos().view(-1, 1, 1), angles.sin().view(-1, 1, 1)
    turn = cos * torch.eye(3) + sin * cross + (1 - cos) * torch.outer(k, k)  # Rodrigues, (B, 3, 3)
    turned = torch.einsum("bij,bjhw->bihw", turn, (x + 1) / 2).clamp(0, 1) * 2 - 1
    return torch.where(angles.view(-1, 1, 1, 1) == 0, x, turned.to(x.dtype))  # unturned: the very pixels


def tune_vae_decoder(recipe: Recipe, vae, shots: ShotSet, work: Path, progress: Progress,
                     device: torch.device = CPU) -> dict:
    """Fine-tune the decoder alone on shots with their colours turned (half of each batch):
    the studio's palette is a dozen colours, and a VAE that only ever saw them draws a bean
    it never saw (teal) in the nearest one it knows, whatever the UNet asks. A codec should
    carry any colour, as SD's does (trained on open photos). The encoder stays frozen, so
    the latents, and the UNet trained on them, do not change (sd-vae-ft-mse did the same)."""
    cfg = recipe.vae_decoder
    vae.requires_grad_(False)
    vae.decoder.requires_grad_(True)
    vae.post_quant_conv.requires_grad_(True)
    params = [p for p in vae.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    train, held = shots.split(recipe.holdout)
    held_pixels = shots.pixels(held).to(device)

    def step(i: int) -> dict[str, float]:
        gen = torch.Generator().manual_seed(recipe.seed * 1_000_039 + i)
        x = vae_crops(recipe, shots, train, cfg.batch, gen)
        turned = torch.rand(x.shape[0], generator=gen) < 0.5
        angles = torch.rand(x.shape[0], generator=gen) * 2 * torch.pi * turned
        x = rotate_hue(x, angles).to(device)
        with torch.no_grad():
            latents = vae.encode(x).latent_dist.sample(gen)
        rec = vae.decode(latents).sample
        mse, l1 = F.mse_loss(rec, x), F.l1_loss(rec, x)
        (mse + 0.1 * l1).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return {"mse": mse.item()}

    def measure(at: int) -> dict:
        vae.eval()
        turned = rotate_hue(held_pixels, torch.linspace(0.5, 5.5, len(held_pixels)))
        found = {"psnr_db": round(psnr(vae, held_pixels), 2), "turned_psnr_db": round(psnr(vae, turned), 2)}
        vae.train()
        return found

    record = run_stage("vae-decoder", work / "vae-decoder", cfg, {"vae": vae}, optimizer, step, progress, measure)
    vae.requires_grad_(False)
    vae.eval()
    record.update(measure(cfg.steps))
    return record


def cache_latents(vae, shots: ShotSet, work: Path, progress: Progress) -> dict[str, torch.Tensor]:
    """Posterior mean and std of every shot (fp16), and the scaling factor SD computes
    the same way: one over the latents' standard deviation."""
    path = work / "latents.pt"
    if path.exists():
        return torch.load(path, map_location="cpu")
    means, stds = [], []
    with torch.no_grad(), progress.task("encoding shots to latents", len(shots)) as advance:
        for start in range(0, len(shots), 256):
            index = np.arange(start, min(len(shots), start + 256))
            dist = vae.encode(shots.pixels(index).to(vae.device)).latent_dist
            means.append(dist.mean.half().cpu())
            stds.append(dist.std.half().cpu())
            advance(len(index))
    mean, std = torch.cat(means), torch.cat(stds)
    cache = {"mean": mean, "std": std, "scaling_factor": torch.tensor(1.0 / float(mean.float().std()))}
    torch.save(cache, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)
    return cache
