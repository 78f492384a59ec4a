"""4. What the VAE sees: one of the photos, its latent channels as grey pictures, and the
VAE's reconstruction, with the compression in numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from clood_candy.records import Photo
from clood_candy_plugins.report.media import channel_image, img
from clood_candy_plugins.report.page import Section, esc, figure, lesson, note
from clood_candy_plugins.report.rundata import RunData


def teaching_photo(run: RunData) -> tuple[Photo, Path, str] | None:
    """The photo the model sections use: the first kept photo that has its prepared square,
    with its training caption (the dataset's; the trigger alone if it has none)."""
    captions = {row.get("id"): row["text"] for row in run.dataset}
    for photo in run.photos:
        path = run.prepared(photo)
        if path is not None:
            return photo, path, captions.get(photo.id) or f"{run.config.trigger}, {run.config.class_word}"
    return None


def no_photo(run: RunData, what: str) -> str:
    if run.prep is not None:
        return f"Prep kept none of your photos, so there is no photo to show {what} (section 1 says why)."
    return f"No prepared photo yet (prep/images): run the prep stage to see {what}."


def photo_and_base(run: RunData, section: Section, what: str):
    """(photo, prepared path, caption, base) for a model section, or None with
    ``section.missing`` saying what is not there yet."""
    chosen = teaching_photo(run)
    if chosen is None:
        section.missing = no_photo(run, what)
        return None
    base = run.base()
    if base is None:
        section.missing = f"The base model could not be loaded ({esc(run.base_error)})."
        return None
    return (*chosen, base)


def unsupported(run: RunData, what: str) -> str:
    family = getattr(run.base(), "family", "this")
    return f"The {esc(family)} model family cannot show {what} (it does not implement the report's teaching methods)."


def build(run: RunData) -> Section:
    section = Section("vae", "4. What the VAE sees")
    found = photo_and_base(run, section, "what the VAE makes of one")
    if found is None:
        return section
    photo, path, _, base = found
    try:
        latents = np.asarray(base.encode_latents(path), dtype=np.float32)
        rebuilt = base.decode_latents(latents)
    except NotImplementedError:
        section.missing = unsupported(run, "its VAE")
        return section
    with Image.open(path) as handle:
        original = handle.convert("RGB")
    side = base.resolution - base.resolution % 8
    if original.size != (side, side):  # what the VAE was given: the square at the model's resolution
        original = original.resize((side, side), Image.Resampling.LANCZOS)
    channels, h, w = latents.shape
    pixel_values = side * side * 3
    latent_values = channels * h * w
    error = float(np.abs(np.asarray(original, dtype=np.float32) -
                         np.asarray(rebuilt.convert("RGB").resize(original.size), dtype=np.float32)).mean())
    body = [lesson(
        "Stable Diffusion does not paint pixels. A second network, the VAE, first squeezes the photo into a much "
        "smaller grid of numbers, the <i>latent</i>; everything the LoRA learns, and everything generation does, "
        "happens in that grid; at the very end the VAE's decoder paints pixels back from it.",
        f"Your {side}×{side} photo is {side}×{side}×3 = <b>{pixel_values:,}</b> numbers (red, green and blue for each "
        f"pixel). Its latent is {h}×{w}×{channels} = <b>{latent_values:,}</b> numbers: {side // max(h, 1)}× smaller "
        f"on each side, <b>{pixel_values / latent_values:.0f}×</b> fewer numbers. Each latent cell stands for an "
        f"{side // max(h, 1)}×{side // max(w, 1)} patch of pixels.",
        "Detail smaller than a patch — a fine speckle, a printed logo — has to survive that squeeze to be "
        "learned at all; the reconstruction shows what survives.")]
    pictures = [figure(img(original, "the photo the VAE is given", max_side=side, cls="big"),
                       f"{esc(Path(photo.image).name)}: {side}×{side} pixels")]
    for c in range(channels):
        pictures.append(figure(img(channel_image(latents[c], w), f"latent channel {c + 1}", max_side=w, cls="big pixel"),
                               f"channel {c + 1} of {channels}: {h}×{w} cells, values {latents[c].min():.2f} to "
                               f"{latents[c].max():.2f}"))
    pictures.append(figure(img(rebuilt, "the VAE's reconstruction", max_side=side, cls="big"),
                           f"decoded back: off by {error:.0f} of 255 levels per pixel on average"))
    body.append(f'<div class="row">{"".join(pictures)}</div>')
    if base.is_toy:
        body.append(note("This VAE has random weights, so its channels show no shapes and its reconstruction is "
                         "mush. A real one (SD 1.5's) gives back a photo that is hard to tell from yours, and its "
                         "channels look like ghostly versions of the picture.", "toy"))
    else:
        body.append(note("The grey channels are not colours: each is a feature the VAE learned to keep. Bright "
                         "and dark areas still follow the shapes in your photo — the latent is a tiny, strange "
                         "picture, not a code."))
    section.body = "".join(body)
    return section
