"""How well candy-mini learned, measured on images it draws: does the prompt control the
bean's colour and the background? Read by the project's own pixel analysis (vision-stats:
colour and background namers, not a learned model), so the measure cannot share the
model's mistakes. Also the VAE's PSNR on shots the training never saw.

Used by the tests (thresholds there) and by ``bench/candy_mini_bench.py`` (figures in
BENCHMARKS.md).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

# Eight of the studio's ten colours: white and black beans on a white sweep are read by
# contrast rather than hue, a different test.
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown")
BACKGROUNDS = {"white": "white background", "wood": "wooden surface", "blue cloth": "blue cloth",
               "red cloth": "red cloth"}  # in the caption renderer's words, as the base learned them
SEEDS = (0, 1, 2, 3)


def load(base: str = "candy-mini"):
    """An SDBase for candy-mini (or a folder holding one), at its 64 px, on the CPU."""
    import torch

    from clood_candy_plugins.sd.base import SDBase
    from clood_candy_plugins.sd.loading import TINY_RESOLUTION, load_pipeline

    return SDBase(load_pipeline(base, "sd1"), base, device=torch.device("cpu"), resolution=TINY_RESOLUTION)


def _read(images) -> list:
    from clood_candy_plugins.captioners.vision_stats import analyse

    with tempfile.TemporaryDirectory() as tmp:
        reports = []
        for k, image in enumerate(images):
            path = Path(tmp) / f"{k}.png"
            image.save(path)
            reports.append(analyse(path))
    return reports


def dominant(report) -> str | None:
    shares = report.colour_shares or {}
    if shares:
        return max(shares, key=shares.get)
    return report.colours[0] if report.colours else None


def colour_control(base, seeds=SEEDS, guidance: float | None = None) -> dict:
    """Share of "jellybean, <colour>, white background" samples whose main bean colour is read as
    <colour> (``guidance``: classifier-free guidance; None: the base's own)."""
    cases = [(c, s) for c in COLOURS for s in seeds]
    images = [base.draw(f"jellybean, {c}, white background", seed=s, guidance=guidance) for c, s in cases]
    read = [dominant(r) for r in _read(images)]
    hits = [got == c for (c, _), got in zip(cases, read)]
    return {"share": float(np.mean(hits)), "n": len(cases),
            "misses": [f"{c} (seed {s}) read as {got}" for (c, s), got, ok in zip(cases, read, hits) if not ok],
            "images": images}


def background_control(base, seeds=SEEDS, guidance: float | None = None) -> dict:
    """Share of "jellybean, <background>" samples whose background is read as asked."""
    cases = [(b, s) for b in BACKGROUNDS for s in seeds]
    images = [base.draw(f"jellybean, {BACKGROUNDS[b]}", seed=s, guidance=guidance) for b, s in cases]
    read = [r.background for r in _read(images)]
    hits = [got == b for (b, _), got in zip(cases, read)]
    return {"share": float(np.mean(hits)), "n": len(cases),
            "misses": [f"{b} (seed {s}) read as {got}" for (b, s), got, ok in zip(cases, read, hits) if not ok],
            "images": images}


def teal_share(image) -> float:
    """Share of an image's pixels that have the held-out teal look (studio/looks.py)."""
    from clood_candy.studio.looks import TEAL_HUE, TEAL_MIN_CHROMA
    from clood_candy_plugins.captioners.colour_space import lch, linear_to_oklab, to_linear

    rgb = np.asarray(image.convert("RGB"), np.float32) / 255.0
    lightness, chroma, hue = lch(linear_to_oklab(to_linear(rgb)))
    inside = (hue >= TEAL_HUE[0]) & (hue <= TEAL_HUE[1]) & (chroma >= TEAL_MIN_CHROMA) & (lightness > 0.25)
    return float(inside.mean())


def vae_psnr(vae, count: int = 64, seed: int = 999_983, render_side: int = 96, side: int = 64) -> float:
    """Mean PSNR (dB) of the VAE's reconstructions of fresh studio shots (a seed training never used)."""
    import torch
    from PIL import Image

    from clood_candy.studio.batch import shoot_many

    shots = [np.asarray(im.resize((side, side), Image.Resampling.LANCZOS))
             for im, _ in shoot_many(count, seed=seed, size=(render_side, render_side))]
    pixels = torch.from_numpy(np.stack(shots)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    pixels = pixels.to(vae.dtype)
    with torch.no_grad():
        rec = vae.decode(vae.encode(pixels).latent_dist.mode()).sample.clamp(-1, 1)
    mse = ((rec.float() - pixels.float()) / 2).pow(2).flatten(1).mean(1)
    return float((10 * torch.log10(1 / mse.clamp_min(1e-10))).mean())


TEAL_PRESENT = 0.005  # a sample "has the look" when this share of its pixels is teal (a bean of ~1/200 of the frame)


def look_arrival(run_root: Path) -> dict:
    """Share of a run's final-LoRA samples that show the teal look, per LoRA weight: the demo's
    LoRA should bring it (weight 1) where the base alone (weight 0) does not."""
    from PIL import Image

    from clood_candy import fsutil
    from clood_candy.records import SampleSet

    samples = SampleSet.model_validate(fsutil.read_json(run_root / "samples" / "samples.json"))
    by_weight: dict[float, list[float]] = {}
    for s in samples.images:
        if s.checkpoint in ("final", "base"):  # weight 0 is the base alone, sampled once
            with Image.open(run_root / s.image) as image:
                by_weight.setdefault(s.weight, []).append(teal_share(image))
    return {w: {"present": float(np.mean([v >= TEAL_PRESENT for v in shares])), "n": len(shares),
                "mean_teal_share": float(np.mean(shares))} for w, shares in sorted(by_weight.items())}
