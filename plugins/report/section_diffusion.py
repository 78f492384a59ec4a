"""5. What diffusion does: one photo's latent noised to several timesteps, and the model's
one-step guess of the clean photo from each."""

from __future__ import annotations

import numpy as np
from PIL import Image

from clood_candy_plugins.report.media import img
from clood_candy_plugins.report.page import Section, esc, lesson, note, table
from clood_candy_plugins.report.rundata import RunData
from clood_candy_plugins.report.section_vae import photo_and_base, unsupported

TIMESTEPS = [50, 250, 500, 750, 950]


def pixel_noised(image: Image.Image, signal: float, seed: int) -> Image.Image:
    """The forward process on pixels: sqrt(signal)·photo + sqrt(1−signal)·noise, with the
    photo scaled to [-1, 1] as the model scales it. The model noises latents, not pixels;
    this row only makes the schedule visible."""
    x = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    noise = np.random.default_rng(seed).standard_normal(x.shape).astype(np.float32)
    mixed = np.sqrt(signal) * x + np.sqrt(1.0 - signal) * noise
    return Image.fromarray(((np.clip(mixed, -1, 1) + 1) * 127.5).round().astype(np.uint8))


def build(run: RunData) -> Section:
    section = Section("diffusion", "5. What diffusion does")
    found = photo_and_base(run, section, "the noising")
    if found is None:
        return section
    photo, path, caption, base = found
    try:
        steps = base.denoise_steps(path, caption, TIMESTEPS, seed=run.config.seed)
    except NotImplementedError:
        section.missing = unsupported(run, "its noising and denoising")
        return section
    share = getattr(base, "signal_share", None)
    shares = share([t for t, _, _ in steps]) if callable(share) else None
    sample_steps = run.config.sample.steps
    words = run.words()
    body = [lesson(
        "This is how the model is trained, and what every training step in section 6 does: take a photo's latent, "
        "slide it along a straight line towards pure noise — the noise level σ, from 0 (clean) to 1 (pure noise; "
        "shown as t = 1000σ) — and ask the transformer, which also reads the caption, which way that line runs "
        "(the noise minus the photo): this is <i>flow matching</i>, how Flux and SD3 learn, where SD1 and SDXL "
        "learn to name the noise itself. The gap between its answer and the true direction is the <i>loss</i>. "
        "A LoRA is a small set of extra weights trained to shrink that gap on your photos."
        if "flow matching" in words["objective_words"] else
        "This is how the model is trained, and what every training step in section 6 does: take a photo's latent, "
        "bury it under a random amount of noise — the <i>timestep</i>, from 0 (clean) to 999 (pure noise) — and ask "
        "the UNet, which also reads the caption, to say which part is noise. The gap between its answer and the "
        "noise really added is the <i>loss</i>. A LoRA is a small set of extra weights trained to shrink that gap "
        "on your photos.",
        f"Below, the same photo and the same noise at {len(steps)} timesteps, with the caption "
        f"“{esc(caption)}”. The second row is the clean photo the model's answer implies, in a single step. "
        "Generating an image runs this backwards from pure noise, removing a little predicted noise at a time"
        + (f" ({sample_steps} steps for your samples)." if sample_steps else "."))]
    noisy_row = [img(noisy, f"noised to t={t}", max_side=base.resolution, cls="mid") for t, noisy, _ in steps]
    guess_row = [img(guess, f"guess at t={t}", max_side=base.resolution, cls="mid") for t, _, guess in steps]
    headers = ["", *(f"t = {t}" for t, _, _ in steps)]
    rows = [["the noised latent, as the VAE decodes it", *noisy_row], ["the model's guess of the clean photo", *guess_row]]
    if shares:
        rows.append(["how much is still photo", *(f"{s:.0%} photo, {1 - s:.0%} noise" for s in shares)])
        with Image.open(path) as handle:
            pixels = [pixel_noised(handle, s, run.config.seed) for s in shares]
        rows.insert(0, ["the same amount of noise on the pixels, so you can see it (the model does this to the latent)",
                        *(img(p, f"pixels at t={t}", max_side=base.resolution, cls="mid")
                          for p, (t, _, _) in zip(pixels, steps))])
    body.append(table(headers, rows))
    if base.is_toy:
        body.append(note("This model has random weights: its guesses are noise at every timestep. A trained model's "
                         "guess is sharp at small t and a blurry, plausible jellybean at large t — from pure noise "
                         "it can only guess the average picture, which is why generation takes many small steps.",
                         "toy"))
    else:
        body.append(note("At small t the guess is nearly your photo: little was hidden. At large t the model has "
                         "almost nothing to go on and guesses a blurry, average picture that fits the caption — "
                         "that is why generation takes many small steps instead of one."))
    section.body = "".join(body)
    return section
