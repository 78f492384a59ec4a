"""Sample judges on a CLIP model, the DreamBooth paper's metrics (Ruiz et al. 2023):

- ``clip-subject`` (CLIP-I): the cosine between the image embeddings of a candidate's
  samples of held-out captions and those held-out photos — is it the user's candy?
- ``clip-prompt`` (CLIP-T): the cosine between a novel prompt (trigger word removed: CLIP
  never saw it) and the sample drawn from it — does "on a sandy beach" still put a beach
  there, or has the LoRA learned to draw only the photos?

They share ``[plugins.clip]`` (model, revision, device, dtype, batch_size) with the caption
judge ``clip``, and one loaded model. Without the model at hand they sit out, saying why.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageOps

from clood_candy.fighters import SampleJudge
from clood_candy.hookspecs import hookimpl
from clood_candy.records import PickSheet
from clood_candy.records import Score
from clood_candy_plugins.hf_models import availability, pick_device, unavailable_reason
from clood_candy_plugins.judges.clip import _embedding, load_model, load_options, strip_trigger


class ClipModel:
    def __init__(self, ctx):
        opts = load_options(ctx)
        reason, local_only = availability(opts.model, opts.revision)
        if reason:
            raise RuntimeError(reason)
        device, dtype = pick_device(opts.device, opts.dtype)
        self.processor, self.model = load_model(opts.model, opts.revision, device, dtype, local_only)
        self.device, self.dtype, self.batch = device, dtype, opts.batch_size
        window = self.model.config.text_config.max_position_embeddings
        self.max_length = min(window, getattr(self.processor.tokenizer, "model_max_length", window) or window)

    def images(self, paths: list[str]) -> np.ndarray:
        def encode(pictures):
            pixels = self.processor(images=pictures, return_tensors="pt")["pixel_values"]
            return _embedding(self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype)))

        return embed_images(paths, self.batch, encode)

    def texts(self, texts: list[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            tokens = self.processor.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                              return_tensors="pt")
            out = _embedding(self.model.get_text_features(**tokens.to(self.device)))
        return torch.nn.functional.normalize(out.float(), dim=-1).cpu().numpy()


def embed_images(paths: list[str], batch: int, encode: Callable) -> np.ndarray:
    """Unit vectors, one row per image file: ``encode`` (a list of RGB pictures → a tensor
    of embeddings) over batches of ``batch``, without gradients."""
    import torch

    rows = []
    for start in range(0, len(paths), batch):
        pictures = []
        for path in paths[start:start + batch]:
            with Image.open(path) as im:
                pictures.append(ImageOps.exif_transpose(im).convert("RGB"))
        with torch.inference_mode():
            out = encode(pictures)
        rows.append(torch.nn.functional.normalize(out.float(), dim=-1).cpu().numpy())
    return np.concatenate(rows) if rows else np.zeros((0, 1), np.float32)


class _ClipSampleJudge(SampleJudge):
    runs_a_model = True

    def unavailable(self, ctx) -> str | None:
        return unavailable_reason(load_options, ctx)


class ClipSubject(_ClipSampleJudge):
    name = "clip-subject"
    description = "CLIP-I: image-embedding similarity of samples of held-out captions to those photos."

    def score_samples(self, sheet: PickSheet, ctx) -> dict[str, Score]:
        cosines = held_out_cosines(sheet, ctx, ClipModel(ctx).images)
        return {c: Score(score=float(np.mean(v)), reason=f"CLIP-I {np.mean(v):.3f} over {len(v)} held-out sample(s)")
                for c, v in cosines.items()}


def held_out_cosines(sheet: PickSheet, ctx, embed: Callable[[list[str]], np.ndarray]) -> dict[str, list[float]]:
    """Candidate → the cosine of each of its samples of a held-out caption with that photo,
    in the image embedding ``embed`` makes (unit vectors, one row per path)."""
    pairs = [(c.name, str(ctx.run.path(i.image)), sheet.prompts[i.prompt].photo)
             for c in sheet.candidates for i in sheet.of(c.name, "held-out") if sheet.prompts[i.prompt].photo]
    if not pairs:
        return {}
    photos = sorted({photo for _, _, photo in pairs})
    photo_emb = dict(zip(photos, embed(photos)))
    cosines: dict[str, list[float]] = {}
    for (cand, _, photo), emb in zip(pairs, embed([image for _, image, _ in pairs])):
        cosines.setdefault(cand, []).append(float(emb @ photo_emb[photo]))
    return cosines


class ClipPrompt(_ClipSampleJudge):
    name = "clip-prompt"
    description = "CLIP-T: text–image similarity of the novel prompts (trigger removed) to their samples."

    def score_samples(self, sheet: PickSheet, ctx) -> dict[str, Score]:
        clip = ClipModel(ctx)
        found = [(c.name, str(ctx.run.path(i.image)), i.prompt) for c in sheet.candidates
                 for i in sheet.of(c.name, "novel")]
        if not found:
            return {}
        wanted = sorted({p for _, _, p in found})
        text_emb = dict(zip(wanted, clip.texts([strip_trigger(sheet.prompts[p].text, sheet.trigger) for p in wanted])))
        sample_emb = clip.images([image for _, image, _ in found])
        cosines: dict[str, list[float]] = {}
        for (cand, _, p), emb in zip(found, sample_emb):
            cosines.setdefault(cand, []).append(float(emb @ text_emb[p]))
        return {c: Score(score=float(np.mean(v)), reason=f"CLIP-T {np.mean(v):.3f} over {len(v)} novel prompt(s)")
                for c, v in cosines.items()}


@hookimpl
def register_judges(register):
    register(ClipSubject())
    register(ClipPrompt())
