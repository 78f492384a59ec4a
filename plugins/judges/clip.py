"""The ``clip`` judge: CLIPScore of each candidate caption against its photo.

CLIPScore (Hessel et al. 2021, "CLIPScore: A Reference-free Evaluation Metric for Image
Captioning") is ``w · max(cos(image embedding, text embedding), 0)`` with ``w = 2.5``: how
well the caption's words match what a CLIP model sees in the prepared image. It rewards
captions that name what is visible and knows nothing about training-caption craft (tags,
what to leave unsaid so the LoRA learns it), so it is best as one voice on a panel.

The trigger word (``trigger`` in clood.toml, e.g. "jlybn") is removed before scoring: CLIP
has never seen it, so it would only add noise, and every candidate carries it anyway.
Text longer than the model's window (77 tokens for OpenAI's CLIPs) is cut there and the
reason says so. A photo that cannot be read gets no scores (no verdict), not a crash.

Options, ``[plugins.clip]``: ``model`` (hub id or local folder, default
``openai/clip-vit-base-patch32``; on ``--base candy-mini`` the CLIP trained with it), ``revision``, ``batch_size`` (photos encoded together),
``weight`` (w), ``device`` and ``dtype`` ("auto": CUDA with fp16/bf16 when there is a GPU,
else CPU fp32).
"""

from __future__ import annotations

import functools
import re
from typing import Any

from PIL import Image, ImageOps
from pydantic import Field

from clood_candy.fighters import Judge
from clood_candy.hookspecs import hookimpl
from clood_candy.records import FightItem, Score
from clood_candy_plugins.hf_models import HfModelOptions, availability, pick_device, unavailable_reason

PLUGIN = "clip"
DEFAULT_MODEL = "openai/clip-vit-base-patch32"


class ClipOptions(HfModelOptions):
    model: str = DEFAULT_MODEL
    batch_size: int = Field(16, ge=1, le=1024)
    weight: float = Field(2.5, gt=0)


def load_options(ctx) -> ClipOptions:
    """The options; on candy-mini, the CLIP trained beside it unless the user named a model
    (OpenAI's CLIP has never seen 64 px studio candy; this one has seen nothing else)."""
    from clood_candy_plugins import candy_mini

    opts = ctx.typed_options(PLUGIN, ClipOptions)
    shipped = candy_mini.folder("clip") if ctx.config.base == candy_mini.NAME else None
    if shipped is not None and "model" not in opts.model_fields_set:
        opts = opts.model_copy(update={"model": str(shipped)})
    return opts


def strip_trigger(text: str, trigger: str) -> str:
    """The caption without the trigger word (a whole word, any case) and the comma after it."""
    if not trigger.strip():
        return " ".join(text.split())
    cut = re.sub(rf"(?<!\w){re.escape(trigger.strip())}(?!\w)\s*[,;:]?", " ", text, flags=re.IGNORECASE)
    cut = re.sub(r"\s+([,;:.])", r"\1", " ".join(cut.split()))  # no space left before punctuation
    return cut.lstrip(",;: ").strip()


@functools.lru_cache(maxsize=1)  # one model in memory; later fights reuse it
def load_model(model_id: str, revision: str | None, device: str, dtype: Any, local_only: bool):
    from transformers import CLIPModel, CLIPProcessor

    common = {"revision": revision, "local_files_only": local_only}
    processor = CLIPProcessor.from_pretrained(model_id, **common)
    model = CLIPModel.from_pretrained(model_id, dtype=dtype, **common)
    return processor, model.to(device).eval()


def _embedding(output: Any):
    """Projected features: a tensor in transformers 4, an output with ``pooler_output`` in 5."""
    return getattr(output, "pooler_output", output)


class ClipJudge(Judge):
    name = "clip"
    description = "CLIPScore: how well each caption matches its photo in a local CLIP model (trigger word removed)."

    def unavailable(self, ctx) -> str | None:
        return unavailable_reason(load_options, ctx)

    def score(self, items: list[FightItem], ctx) -> dict[str, dict[str, Score]]:
        opts = load_options(ctx)
        reason, local_only = availability(opts.model, opts.revision)
        if reason:
            raise RuntimeError(reason)  # the engine seats the panel without this judge
        device, dtype = pick_device(opts.device, opts.dtype)
        ctx.progress.say(f"Loading {opts.model} on {device} ({str(dtype).removeprefix('torch.')}) …")
        try:
            processor, model = load_model(opts.model, opts.revision, device, dtype, local_only)
        except Exception as exc:
            raise RuntimeError(f"cannot load {opts.model}: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"[:300]) from None

        scorer = _Scorer(processor, model, device, dtype, opts.weight, ctx.config.trigger)
        results: dict[str, dict[str, Score]] = {}
        problems: list[str] = []
        images: dict[str, Image.Image | str] = {}  # photo image path → pixels or why not
        ready: list[tuple[FightItem, str]] = []
        for item in items:
            if item.photo is None:
                problems.append(f"{item.id}: no photo")
                continue
            key = item.photo.image
            if key not in images:
                try:
                    with Image.open(ctx.run.path(key)) as im:
                        images[key] = ImageOps.exif_transpose(im).convert("RGB")
                except Exception as exc:
                    images[key] = f"cannot read image {key}: {type(exc).__name__}: {exc}"
            if isinstance(images[key], str):
                problems.append(f"{item.id}: {images[key]}")
            elif item.candidates:
                ready.append((item, key))

        with ctx.progress.task(f"clip judging ({opts.model})", len(ready)) as advance:
            for start in range(0, len(ready), opts.batch_size):
                chunk = ready[start:start + opts.batch_size]
                try:
                    results.update(scorer.score(chunk, images))
                except Exception:
                    # One item can break a batch (or memory can run out): go one by one.
                    for one in chunk:
                        try:
                            results.update(scorer.score([one], images))
                        except Exception as exc:
                            problems.append(f"{one[0].id}: {type(exc).__name__}: {exc}"[:300])
                advance(len(chunk))
        if problems:
            ctx.log.warning("clip judge: %d of %d photos have no scores (first: %s)", len(problems), len(items), problems[0])
        return results


class _Scorer:
    """One batch: each distinct image encoded once, all the batch's captions in one text pass."""

    def __init__(self, processor, model, device: str, dtype: Any, weight: float, trigger: str):
        self.processor, self.model, self.device, self.dtype = processor, model, device, dtype
        self.weight, self.trigger = weight, trigger
        tokenizer = processor.tokenizer
        window = model.config.text_config.max_position_embeddings
        limit = getattr(tokenizer, "model_max_length", window) or window
        self.max_length = min(window, limit) if limit < 1_000_000 else window  # huge: "no limit" sentinel

    def score(self, chunk: list[tuple[FightItem, str]], images: dict[str, Any]) -> dict[str, dict[str, Score]]:
        import torch

        keys = list(dict.fromkeys(key for _, key in chunk))
        texts = [strip_trigger(c.text, self.trigger) for item, _ in chunk for c in item.candidates]
        tokenizer = self.processor.tokenizer
        full_lengths = [len(ids) for ids in tokenizer(texts, truncation=False, verbose=False)["input_ids"]]
        with torch.inference_mode():
            pixels = self.processor(images=[images[k] for k in keys], return_tensors="pt")["pixel_values"]
            image_emb = _embedding(self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype)))
            tokens = tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
            text_emb = _embedding(self.model.get_text_features(**tokens.to(self.device)))
        image_emb = torch.nn.functional.normalize(image_emb.float(), dim=-1).cpu()
        text_emb = torch.nn.functional.normalize(text_emb.float(), dim=-1).cpu()

        results: dict[str, dict[str, Score]] = {}
        row = 0
        for item, key in chunk:
            image = image_emb[keys.index(key)]
            for cand in item.candidates:
                cosine = float(text_emb[row] @ image)
                reason = f"CLIPScore {self.weight * max(cosine, 0.0):.2f} (cosine {cosine:.3f})"
                if full_lengths[row] > self.max_length:
                    reason += f"; caption cut at the model's {self.max_length}-token limit ({full_lengths[row]} tokens)"
                results.setdefault(item.id, {})[cand.fighter] = Score(score=self.weight * max(cosine, 0.0), reason=reason)
                row += 1
        return results


@hookimpl
def register_judges(register):
    register(ClipJudge())
