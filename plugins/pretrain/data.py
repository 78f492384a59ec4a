"""The pretraining set: studio shots rendered in chunks (resumable), captions drawn from
their ground-truth labels.

A chunk is an .npz of uint8 images plus its labels; a killed render loses at most the
chunk in progress. Captions are drawn afresh at every step from the labels (a random subset
of the facts, written by clood's caption renderer), so the model learns each word on its own;
the training loop leaves some empty, for classifier-free guidance.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
from PIL import Image

from clood_candy.captions.render import Chosen, render
from clood_candy.progress import Progress
from clood_candy.studio.batch import shoot_many
from clood_candy.studio.labels import StudioLabels

CHUNK = 500
SUBJECT = "jellybean"
# Studio labels in the caption vocabulary's canonical values (clood_candy/captions/vocab.py),
# so the base learns the very words clood's captioners write for a user's photos.
LIGHTING = {"daylight": "daylight", "indoor": "warm indoor light", "night": "dim light"}
FRAMING = {"macro": "macro close-up", "medium": "medium shot", "wide": "wide shot"}
VIEW = {"top-down": "top-down view", "angled": "three quarter view"}
STYLES = (("tags", 0.75), ("natural", 0.25))  # SD1's tag lists, and sentences now and then


def chosen(labels: StudioLabels) -> Chosen:
    """Every fact the labels state, as the caption renderer's Chosen."""
    background = f"{labels.background_colour} cloth" if labels.background == "cloth" else labels.background
    return Chosen(colours=list(labels.colours), speckled=labels.speckled, count=labels.count,
                  arrangement=labels.arrangement, background=background,
                  lighting="flash" if labels.flash else LIGHTING[labels.lighting], framing=FRAMING[labels.zoom],
                  view=VIEW[labels.view], time_of_day="night" if labels.lighting == "night" else None)


def caption_facts(labels: StudioLabels) -> list[str]:
    """The tag-style words of every fact (what a full caption of the shot says)."""
    return render(chosen(labels), "tags", trigger="", class_word=SUBJECT).split(", ")[1:]


def draw_caption(labels: StudioLabels, rng: random.Random, keep: float = 0.8) -> str:
    """A caption of a random subset of the facts (colours nearly always), in a random style,
    by clood's own caption renderer."""
    facts = chosen(labels)
    for concept in facts.present():
        if rng.random() > (0.9 if concept == "colours" else keep):
            facts = facts.without(concept)
    rng.shuffle(facts.colours)
    style = "tags" if rng.random() < STYLES[0][1] else "natural"
    return render(facts, style, trigger="", class_word=SUBJECT)


def render_chunks(folder: Path, shots: int, seed: int, render_side: int, side: int, progress: Progress) -> None:
    """Render ``shots`` planned shots into folder/chunk_*.npz, skipping chunks already there."""
    folder.mkdir(parents=True, exist_ok=True)
    chunks = (shots + CHUNK - 1) // CHUNK
    with progress.task("rendering studio shots", chunks) as advance:
        for k in range(chunks):
            path = folder / f"chunk_{k:03d}.npz"
            if path.exists():
                advance()
                continue
            count = min(CHUNK, shots - k * CHUNK)
            images, labels = [], []
            for image, label in shoot_many(count, seed=seed * 100_000 + k, size=(render_side, render_side)):
                images.append(np.asarray(image.resize((side, side), Image.Resampling.LANCZOS)))
                labels.append(label.model_dump(mode="json"))
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, images=np.stack(images), labels=json.dumps(labels))
            tmp.rename(path)
            advance()


class ShotSet:
    """All rendered shots in memory: images (N, 3, H, W) uint8 and their labels."""

    def __init__(self, folder: Path):
        images, labels = [], []
        for path in sorted(folder.glob("chunk_*.npz")):
            with np.load(path) as data:
                images.append(data["images"])
                labels += [StudioLabels.model_validate(x) for x in json.loads(str(data["labels"]))]
        self.images = np.ascontiguousarray(np.concatenate(images).transpose(0, 3, 1, 2))
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def split(self, holdout: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices of training and held-out shots (held out: the last ones rendered)."""
        n = len(self)
        return np.arange(0, n - holdout), np.arange(n - holdout, n)

    def pixels(self, index: np.ndarray):
        """Images as float tensors in [-1, 1], as the VAE sees them."""
        import torch

        return torch.from_numpy(self.images[index]).float().div_(127.5).sub_(1.0)
