"""Sample judges that need no learned model: they measure pixels, so they run anywhere and
their verdicts can be checked by eye.

- ``subject-colour``: do a candidate's samples of held-out captions have the colours of
  those held-out photos (OKLab histograms, intersection)? The brand's colours are what a
  jellybean LoRA must learn first; a barely trained LoRA draws the base's colours, an
  absurd learning rate draws noise.
- ``memorisation``: is a sample closer to a training photo than any unseen photo of the
  same shoot gets? That closeness is measured on the shoot itself (held-out photos against
  training photos), so a candidate is penalised only for copying, never for fidelity.
- ``validation-loss``: the held-out loss at the candidate's step, as one voice.
- ``user``: the person's pick (``clood pick RUN CANDIDATE``), a judge with its own weight.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from clood_candy.fighters import SampleJudge
from clood_candy.hookspecs import hookimpl
from clood_candy.pick.votes import load_votes
from clood_candy.records import PickSheet
from clood_candy.records import Score
from clood_candy_plugins.captioners.colour_space import linear_to_oklab, to_linear

SIDE = 32  # pixels compared: enough for layout and colour, blind to sampler grain
BINS_L, BINS_AB = 6, 10  # OKLab histogram: lightness × (a, b) in ±0.3


@functools.lru_cache(maxsize=512)
def _pixels(path: str) -> np.ndarray:
    """The image as SIDE × SIDE sRGB floats in [0, 1]."""
    with Image.open(path) as image:
        small = ImageOps.exif_transpose(image).convert("RGB").resize((SIDE, SIDE), Image.Resampling.BILINEAR)
    return np.asarray(small, np.float32) / 255.0


@functools.lru_cache(maxsize=512)
def _histogram(path: str) -> np.ndarray:
    lab = linear_to_oklab(to_linear(_pixels(path))).reshape(-1, 3)
    hist, _ = np.histogramdd(lab, bins=(BINS_L, BINS_AB, BINS_AB), range=((0, 1), (-0.3, 0.3), (-0.3, 0.3)))
    return hist.ravel() / max(1.0, hist.sum())


def colour_overlap(a: str, b: str) -> float:
    """Histogram intersection: 1 when the two images use the same colours in the same amounts."""
    return float(np.minimum(_histogram(a), _histogram(b)).sum())


def pixel_similarity(a: str, b: str) -> float:
    """1 − mean absolute difference at SIDE px, the better of ``b`` and its mirror (training flips)."""
    pa, pb = _pixels(a), _pixels(b)
    return 1.0 - float(min(np.abs(pa - pb).mean(), np.abs(pa - pb[:, ::-1]).mean()))


def nearest(image: str, photos: list[str]) -> tuple[float, str]:
    return max((pixel_similarity(image, p), p) for p in photos)


def _image(ctx, rel: str) -> str:
    return str(ctx.run.path(rel))


class SubjectColour(SampleJudge):
    name = "subject-colour"
    description = "Colour fidelity: samples of held-out captions against those photos (OKLab histogram overlap)."

    def unavailable(self, ctx) -> str | None:
        return None

    def score_samples(self, sheet: PickSheet, ctx) -> dict[str, Score]:
        found = {}
        for cand in sheet.candidates:
            pairs = [(_image(ctx, i.image), sheet.prompts[i.prompt].photo) for i in sheet.of(cand.name, "held-out")]
            pairs = [(img, photo) for img, photo in pairs if photo]
            if not pairs and sheet.held_out:  # no held-out captions sampled: against the held-out photos at large
                pairs = [(_image(ctx, i.image), p) for i in sheet.of(cand.name) for p in sheet.held_out]
            if pairs:
                value = float(np.mean([colour_overlap(img, photo) for img, photo in pairs]))
                found[cand.name] = Score(score=value, reason=f"colour overlap with the held-out photos {value:.2f} "
                                                             f"(1 = the same colours), {len(pairs)} sample(s)")
        return found


class Memorisation(SampleJudge):
    name = "memorisation"
    description = ("Copying: how much closer samples come to a training photo than unseen photos of the shoot do; "
                   "0 = no closer, only ever a penalty.")

    def unavailable(self, ctx) -> str | None:
        return None

    def score_samples(self, sheet: PickSheet, ctx) -> dict[str, Score]:
        found = {}
        for cand, (natural, near) in self.assess(sheet, ctx).items():
            excess = [_excess(sim, natural) for sim, _, _ in near]
            copies = sum(e >= COPY for e in excess)
            sim, photo, image = max(near)
            found[cand] = Score(score=-float(np.mean(excess)), reason=(
                f"{copies} of {len(near)} sample(s) closer to a training photo than any unseen photo of the shoot "
                f"(unseen photos reach {natural:.3f}; its closest {sim:.3f}, to {Path(photo).name})"),
                evidence={"sample": image, "photo": photo, "similarity": round(sim, 4), "unseen": round(natural, 4),
                          "copies": copies})
        return found

    def assess(self, sheet: PickSheet, ctx) -> dict[str, tuple[float, list[tuple[float, str, str]]]]:
        """Candidate → (the shoot's natural closeness, each sample's (similarity, nearest
        training photo, sample)). Natural closeness: the closest a held-out photo, which the
        model never saw, comes to a training photo."""
        if not sheet.training or not sheet.held_out:
            return {}
        natural = max(nearest(p, sheet.training)[0] for p in sheet.held_out)
        found = {}
        for cand in sheet.candidates:
            near = [(*nearest(_image(ctx, i.image), sheet.training), i.image) for i in sheet.of(cand.name)]
            if near:
                found[cand.name] = (natural, near)
        return found

    def flags(self, sheet: PickSheet, scores: dict[str, Score], ctx) -> dict[str, str]:
        found = {}
        for cand, (natural, near) in self.assess(sheet, ctx).items():
            copies = [(sim, photo) for sim, photo, _ in near if _excess(sim, natural) >= COPY]
            if cand in scores and len(copies) * 2 >= len(near):
                sim, photo = max(copies)
                found[cand] = (f"memorised: {len(copies)} of {len(near)} samples copy a training photo "
                               f"(closest: {Path(photo).name} at {sim:.3f}; unseen photos reach {natural:.3f})")
        return found


COPY = 1 / 3  # a copy: a third of the way or more from the shoot's natural closeness to identical


def _excess(similarity: float, natural: float) -> float:
    return max(0.0, similarity - natural) / max(1e-6, 1.0 - natural)


class ValidationLoss(SampleJudge):
    name = "validation-loss"
    description = "The denoising loss on held-out photos at the candidate's step (lower is better), as one voice."

    def unavailable(self, ctx) -> str | None:
        return None

    def score_samples(self, sheet: PickSheet, ctx) -> dict[str, Score]:
        return {c.name: Score(score=-c.val_loss, reason=f"validation loss {c.val_loss:.4f} at step {c.step}")
                for c in sheet.candidates if c.val_loss is not None}


class UserVote(SampleJudge):
    name = "user"
    description = "Your pick: clood pick RUN CANDIDATE (or the review page); the latest vote counts."

    def unavailable(self, ctx) -> str | None:
        return None if load_votes(ctx.run.root) else "no vote yet (clood pick RUN CANDIDATE)"

    def score_samples(self, sheet: PickSheet, ctx) -> dict[str, Score]:
        votes = load_votes(ctx.run.root)
        if not votes:
            return {}
        latest = votes[-1]
        why = f"{latest.by} picked {latest.candidate}" + (f": {latest.why}" if latest.why else "")
        return {c.name: Score(score=1.0 if c.name == latest.candidate else 0.0, reason=why) for c in sheet.candidates}


@hookimpl
def register_judges(register):
    for judge in (SubjectColour(), Memorisation(), ValidationLoss(), UserVote()):
        register(judge)
