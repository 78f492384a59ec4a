"""``dino-subject``: the DreamBooth paper's DINO metric (Ruiz et al. 2023) — the cosine
between the self-supervised ViT embeddings of a candidate's samples of held-out captions
and those held-out photos.

CLIP was trained to match pictures with words, so two different red beans look alike to it;
DINO was trained to tell one picture from another, so it rewards the user's own bean (its
speckles, its shape) over any bean of that colour — the paper prefers it for subject
fidelity for that reason.

Options, ``[plugins.dino]``: ``model`` (hub id or local folder of a transformers vision
backbone, default ``facebook/dinov2-small``), ``revision``, ``batch_size``, ``device``,
``dtype``. Without the model at hand (offline, not cached) it sits out, saying why.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from pydantic import Field

from clood_candy.fighters import SampleJudge
from clood_candy.hookspecs import hookimpl
from clood_candy.records import PickSheet, Score
from clood_candy_plugins.hf_models import HfModelOptions, availability, pick_device, unavailable_reason
from clood_candy_plugins.judges.clip_samples import embed_images, held_out_cosines

PLUGIN = "dino"
DEFAULT_MODEL = "facebook/dinov2-small"


class DinoOptions(HfModelOptions):
    model: str = DEFAULT_MODEL
    batch_size: int = Field(16, ge=1, le=1024)


def load_options(ctx) -> DinoOptions:
    return ctx.typed_options(PLUGIN, DinoOptions)


@functools.lru_cache(maxsize=1)  # one model in memory: the rounds and the pick reuse it
def load_model(model_id: str, revision: str | None, device: str, dtype: Any, local_only: bool):
    from transformers import AutoImageProcessor, AutoModel

    common = {"revision": revision, "local_files_only": local_only}
    processor = AutoImageProcessor.from_pretrained(model_id, **common)
    model = AutoModel.from_pretrained(model_id, dtype=dtype, **common)
    return processor, model.to(device).eval()


class DinoEmbedder:
    """Image → unit vector: the class token after the final layer norm (what DINO's paper
    and DreamBooth's metric compare)."""

    def __init__(self, ctx):
        opts = load_options(ctx)
        reason, local_only = availability(opts.model, opts.revision)
        if reason:
            raise RuntimeError(reason)
        self.device, self.dtype = pick_device(opts.device, opts.dtype)
        self.processor, self.model = load_model(opts.model, opts.revision, self.device, self.dtype, local_only)
        self.batch = opts.batch_size

    def images(self, paths: list[str]) -> np.ndarray:
        def encode(pictures):
            pixels = self.processor(images=pictures, return_tensors="pt")["pixel_values"]
            out = self.model(pixel_values=pixels.to(self.device, self.dtype))
            pooled = getattr(out, "pooler_output", None)
            return pooled if pooled is not None else out.last_hidden_state[:, 0]

        return embed_images(paths, self.batch, encode)


class DinoSubject(SampleJudge):
    name = "dino-subject"
    description = "DINO: self-supervised image-embedding similarity of samples of held-out captions to those photos."
    runs_a_model = True

    def unavailable(self, ctx) -> str | None:
        return unavailable_reason(load_options, ctx)

    def score_samples(self, sheet: PickSheet, ctx) -> dict[str, Score]:
        cosines = held_out_cosines(sheet, ctx, DinoEmbedder(ctx).images)
        return {c: Score(score=float(np.mean(v)), reason=f"DINO {np.mean(v):.3f} over {len(v)} held-out sample(s)")
                for c, v in cosines.items()}


@hookimpl
def register_judges(register):
    register(DinoSubject())
