"""pretrain(): render, then train CLIP, the VAE and the UNet, then export — each step
resumable, so a killed run continues where it stopped (same batches, same result)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from clood_candy.progress import Progress
from clood_candy_plugins.pretrain import export
from clood_candy_plugins.pretrain.data import ShotSet, render_chunks
from clood_candy_plugins.pretrain.recipe import Recipe
from clood_candy_plugins.pretrain.stages import cache_latents, train_clip, train_vae, tune_vae_decoder
from clood_candy_plugins.pretrain.unet import held_out_loss, train_unet


def pretrain(recipe: Recipe, out: Path, progress: Progress, command: str,
             device: torch.device = torch.device("cpu")) -> dict:
    from transformers import CLIPTokenizer

    from clood_candy_plugins.sd.tokenizer import tokenizer_folder

    started = time.perf_counter()
    work = out / "work"
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_folder(require_real=True))
    t0 = time.perf_counter()
    render_chunks(work / "shots", recipe.shots, recipe.seed, recipe.render_side, recipe.side, progress)
    shots = ShotSet(work / "shots")
    progress.say(f"{len(shots)} studio shots ({recipe.side} px), {recipe.holdout} held out "
                 f"({time.perf_counter() - t0:.0f} s this run)")
    clip, clip_record = train_clip(recipe, shots, work, tokenizer, progress, device)
    vae, vae_record = train_vae(recipe, shots, work, progress, device)
    progress.say(f"VAE: {vae_record['psnr_db']} dB PSNR on held-out shots")
    decoder_record = tune_vae_decoder(recipe, vae, shots, work, progress, device) if recipe.vae_decoder else None
    if decoder_record:
        progress.say(f"VAE decoder, any colour: {decoder_record['psnr_db']} dB on held-out shots, "
                     f"{decoder_record['turned_psnr_db']} dB on them with their colours turned")
    latents = cache_latents(vae, shots, work, progress)
    # register_to_config, not config.x = …: a set attribute is read but never saved to config.json
    vae.register_to_config(scaling_factor=float(latents["scaling_factor"]))
    unet, text_encoder, unet_record, _ = train_unet(recipe, shots, latents, clip, vae, tokenizer, work, progress)
    figures = {
        "shots": len(shots), "vae_psnr_db": (decoder_record or vae_record)["psnr_db"],
        "unet_held_out_mse": round(held_out_loss(unet, text_encoder, latents, shots, tokenizer, recipe), 4),
        "parameters_m": {name: round(sum(p.numel() for p in m.parameters()) / 1e6, 3)
                         for name, m in (("unet", unet), ("vae", vae), ("text_encoder", text_encoder),
                                         ("clip", clip))},
        "seconds": {"clip": round(clip_record["seconds"]), "vae": round(vae_record["seconds"]),
                    "vae_decoder": round(decoder_record["seconds"]) if decoder_record else 0,
                    "unet": round(unet_record["seconds"])},
        "threads": torch.get_num_threads(), "device": str(device),
    }
    unet, text_encoder, vae, clip = (m.cpu() for m in (unet, text_encoder, vae, clip))
    for name in (export.BASE, export.CLIP, export.RECORD):
        shutil.rmtree(out / name, ignore_errors=True)
    export.write_base(out / export.BASE, unet, text_encoder, vae, tokenizer)
    export.write_clip(out / export.CLIP, clip, tokenizer, recipe.side)
    figures["megabytes"] = round(export.folder_megabytes(out / export.BASE) + export.folder_megabytes(out / export.CLIP), 1)
    stages = {"clip": clip_record, "vae": vae_record, "unet": unet_record}
    if decoder_record:
        stages["vae_decoder"] = decoder_record
    export.write_record(out / export.RECORD, recipe, stages, figures, work / "snapshots", command)
    progress.say(f"done in {time.perf_counter() - started:.0f} s this run: {out / export.BASE} "
                 f"({figures['megabytes']} MB with the CLIP model)")
    return figures
