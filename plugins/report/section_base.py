"""Before your photos: how the base itself was made — shown when the base is candy-mini,
the one base whose making is on this computer (plugins/candy_mini/pretraining/).

Every trainer starts from a base someone else trained and says nothing of how. Here the
record is at hand: the recipe, the three training curves, and the same prompts drawn at
points of pretraining — a model learning to draw a jellybean from nothing.
"""

from __future__ import annotations

import json
import re

from PIL import Image

from clood_candy_plugins.report.media import chart_figure, chart_uri, img
from clood_candy_plugins.report.page import Section, esc, figure, lesson, number
from clood_candy_plugins.report.rundata import RunData

TITLE = "Before your photos: how candy-mini was made"


def _curves(stages: dict) -> str:
    fig = chart_figure(9.0, 2.8)
    panels = [("clip", "loss", "CLIP: contrastive loss"), ("vae", "psnr_db", "VAE: PSNR on unseen shots (dB)"),
              ("unet", "loss", "UNet: denoising loss")]
    for k, (stage, key, label) in enumerate(panels):
        ax = fig.add_subplot(1, 3, k + 1)
        rows = stages.get(stage, {}).get("evals" if key == "psnr_db" else "log", [])
        points = [(r["step"], r[key]) for r in rows if key in r]
        if points:
            ax.plot(*zip(*points), color="#c2185b")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return f'<img class="chart" alt="pretraining curves" src="{chart_uri(fig)}">'


def build(run: RunData) -> Section | None:
    from clood_candy_plugins import candy_mini
    from clood_candy_plugins.pretrain.unet import SNAPSHOT_PROMPTS

    folder = candy_mini.folder("pretraining")
    if run.config.base != candy_mini.NAME or folder is None:
        return None
    record = json.loads((folder / "record.json").read_text(encoding="utf-8"))
    figures, recipe = record.get("figures", {}), record.get("recipe", {})
    params = figures.get("parameters_m", {})
    hours = sum(figures.get("seconds", {}).values()) / 3600
    body = [lesson(
        "Your LoRA adds to a base model that already draws jellybeans. Real bases (Stable Diffusion, Flux) were "
        "trained by their makers on billions of pictures for weeks on thousands of GPUs. candy-mini was trained by "
        f"clood itself, on this kind of computer, in {hours:.1f} hours: {number(figures.get('shots', 0))} pictures "
        f"rendered by clood's candy studio at {recipe.get('side', 64)} px, each with captions drawn from what the "
        "studio knows it put in the picture (colours, background, light, framing).",
        "It was made the way Stable Diffusion was, in three steps: first a CLIP model learned which words go with "
        "which pictures; then a VAE learned to squeeze a picture into a small grid of numbers and back; last the "
        "UNet learned to turn noise into those numbers, steered by CLIP's reading of the caption. Small and simple "
        "pictures — but learned, not random.")]
    rows = [("CLIP (text + image)", params.get("clip")), ("VAE", params.get("vae")),
            ("text encoder (CLIP's text half)", params.get("text_encoder")), ("UNet", params.get("unet"))]
    body.append("<p>" + "; ".join(f"{esc(name)}: {value} million parameters" for name, value in rows if value)
                + f". The VAE rebuilds pictures it never saw at {esc(figures.get('vae_psnr_db', '?'))} dB PSNR.</p>")
    body.append(figure(_curves(record.get("stages", {})), "Each curve falls (or, for PSNR, rises) as that part learns."))
    snaps = sorted((folder / "snapshots").glob("step_*.png"))
    if snaps:
        cells = []
        for path in snaps:
            step = int(path.stem.split("_")[1])
            with Image.open(path) as strip:
                cells.append(f"<tr><td>step {step}</td><td>{img(strip.copy(), f'step {step}', max_side=640)}</td></tr>")
        prompts = ", ".join(f"“{esc(p) or '(empty prompt)'}”" for p in SNAPSHOT_PROMPTS)
        body.append(figure(f'<table class="snapshots">{"".join(cells)}</table>',
                           f"The same prompts and seeds at points of the UNet's training, left to right: {prompts}."))
    command = re.sub(r"--out \S+", "--out DIR", record.get("command", ""))  # where it was built is no part of it
    body.append(f'<p>Rebuild it yourself: <span class="code">{esc(command)}</span> '
                f"(seed {esc(recipe.get('seed', 0))}; the recipe is plugins/pretrain/recipe.py).</p>")
    section = Section("base", TITLE)
    section.body = "".join(body)
    return section
