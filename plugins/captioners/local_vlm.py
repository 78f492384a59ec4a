"""The ``local-vlm`` captioner: a captioning model run locally with transformers.

BLIP-class models (``BlipForConditionalGeneration``, the default
``Salesforce/blip-image-captioning-base``) and Florence-2-class models (any id containing
"florence": natively converted ones load as ``Florence2ForConditionalGeneration``;
Microsoft's originals run modelling code from their own repository, which happens only
with ``trust_remote_code = true``). Options, ``[plugins.local-vlm]``: ``model``
(hub id or local folder), ``batch_size``, ``max_new_tokens``, ``min_new_tokens``,
``num_beams``, ``prompt`` (BLIP: a conditioning prefix such as "a photography of"),
``task`` (Florence-2: e.g. "<DETAILED_CAPTION>"), ``device`` and ``dtype`` ("auto": CUDA
with bf16/fp16 when there is a GPU, else CPU fp32), ``revision``, ``trust_remote_code``
(default false).
"""

from __future__ import annotations

import functools
import time
from typing import Any

from PIL import Image, ImageOps
from pydantic import Field

from clood_candy_plugins.hf_models import (HfModelOptions, availability, pick_device, ships_own_code,
                                           unavailable_reason)
from clood_candy.fighters import Captioner
from clood_candy.hookspecs import hookimpl
from clood_candy.records import CaptionResult, Photo

PLUGIN = "local-vlm"
DEFAULT_MODEL = "Salesforce/blip-image-captioning-base"


class LocalVlmOptions(HfModelOptions):
    model: str = DEFAULT_MODEL
    batch_size: int = Field(8, ge=1, le=256)
    max_new_tokens: int = Field(40, ge=1, le=1024)
    min_new_tokens: int = Field(0, ge=0, le=256)
    num_beams: int = Field(3, ge=1, le=16)
    prompt: str | None = None
    task: str = "<DETAILED_CAPTION>"
    # Running code from a model's repository is the user's call, never implied by its name.
    trust_remote_code: bool = False

    @property
    def florence(self) -> bool:
        return "florence" in self.model.lower()


def load_options(ctx) -> LocalVlmOptions:
    return ctx.typed_options(PLUGIN, LocalVlmOptions)


def needs_trust(model: str) -> str:
    return (f"cannot load {model} without running code from its repository: "
            f"set trust_remote_code = true under [plugins.{PLUGIN}] if you trust {model}")


def refusal(opts: LocalVlmOptions, local_only: bool) -> str | None:
    """Why the model may not load as it is configured: it ships its own code and the user
    has not said to trust it. BLIP loads through transformers' own class, never repo code."""
    if not opts.florence or opts.trust_remote_code:
        return None
    try:
        return needs_trust(opts.model) if ships_own_code(opts.model, opts.revision, local_only) else None
    except Exception:  # an unreadable config.json: loading it says what is wrong
        return None


@functools.lru_cache(maxsize=1)  # one model in memory; a second fight call reuses it
def load_model(model_id: str, revision: str | None, florence: bool, trust_remote_code: bool, device: str, dtype: Any,
               local_only: bool):
    from transformers import AutoProcessor, BlipForConditionalGeneration, BlipProcessor

    common = {"revision": revision, "local_files_only": local_only}
    if florence:
        from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

        processor = AutoProcessor.from_pretrained(model_id, trust_remote_code=trust_remote_code, **common)
        model = None
        if trust_remote_code:
            try:  # Microsoft's repos ship their own modelling code
                model = AutoModelForCausalLM.from_pretrained(model_id, trust_remote_code=True, dtype=dtype, **common)
            except ValueError:  # natively converted checkpoints (model_type florence2)
                pass
        if model is None:
            model = AutoModelForImageTextToText.from_pretrained(model_id, trust_remote_code=False, dtype=dtype, **common)
    else:
        processor = BlipProcessor.from_pretrained(model_id, **common)
        model = BlipForConditionalGeneration.from_pretrained(model_id, dtype=dtype, **common)
    return processor, model.to(device).eval()


class LocalVlmCaptioner(Captioner):
    name = "local-vlm"
    description = "A local captioning model (BLIP or Florence-2) run with transformers; no API, no facts."
    runs_a_model = True

    def unavailable(self, ctx) -> str | None:
        return unavailable_reason(load_options, ctx, refusal)

    def caption(self, photos: list[Photo], ctx) -> dict[str, CaptionResult]:
        opts = load_options(ctx)
        reason, local_only = availability(opts.model, opts.revision)
        reason = reason or refusal(opts, local_only)
        if reason:
            return {p.id: CaptionResult(error=reason) for p in photos}
        device, dtype = pick_device(opts.device, opts.dtype)
        ctx.progress.say(f"Loading {opts.model} on {device} ({str(dtype).removeprefix('torch.')}) …")
        try:
            processor, model = load_model(opts.model, opts.revision, opts.florence, opts.trust_remote_code, device,
                                          dtype, local_only)
        except Exception as exc:  # a broken or incompatible model fails every photo, with the reason
            if "trust_remote_code" in str(exc):  # code config.json did not declare (a processor's, say)
                error = needs_trust(opts.model)
            else:
                error = f"cannot load {opts.model}: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"[:300]
            return {p.id: CaptionResult(error=error) for p in photos}

        results: dict[str, CaptionResult] = {}
        images: list[tuple[Photo, Image.Image]] = []
        for photo in photos:
            try:
                with Image.open(ctx.run.path(photo.image)) as im:
                    images.append((photo, ImageOps.exif_transpose(im).convert("RGB")))
            except Exception as exc:
                results[photo.id] = CaptionResult(error=f"cannot read image {photo.image}: {type(exc).__name__}: {exc}"[:300])
        details = {"model": opts.model, "device": device, "dtype": str(dtype).removeprefix("torch.")}
        with ctx.progress.task(f"{self.name} captions ({opts.model})", len(images)) as advance:
            for start in range(0, len(images), opts.batch_size):
                chunk = images[start:start + opts.batch_size]
                began = time.perf_counter()
                try:
                    texts = self._generate(processor, model, [im for _, im in chunk], opts, device, dtype)
                except Exception:
                    # One image can break a batch (or memory can run out): go one by one.
                    texts = [self._one(processor, model, im, opts, device, dtype) for _, im in chunk]
                seconds = round((time.perf_counter() - began) / len(chunk), 4)
                for (photo, _), text in zip(chunk, texts):
                    if isinstance(text, Exception):
                        results[photo.id] = CaptionResult(error=f"generation failed: {type(text).__name__}: {text}"[:300])
                    elif not text.strip():
                        results[photo.id] = CaptionResult(error="the model produced an empty caption")
                    else:
                        results[photo.id] = CaptionResult(caption=" ".join(text.split()), details=details,
                                                          usage={"seconds": seconds, "batch_size": len(chunk)})
                advance(len(chunk))
        return {p.id: results[p.id] for p in photos}

    def _one(self, processor, model, image, opts, device, dtype) -> str | Exception:
        try:
            return self._generate(processor, model, [image], opts, device, dtype)[0]
        except Exception as exc:
            return exc

    @staticmethod
    def _generate(processor, model, images: list[Image.Image], opts: LocalVlmOptions, device: str, dtype: Any) -> list[str]:
        import torch

        generate = {"max_new_tokens": opts.max_new_tokens, "min_new_tokens": opts.min_new_tokens,
                    "num_beams": opts.num_beams, "do_sample": False}
        if opts.florence:
            inputs = processor(text=[opts.task] * len(images), images=images, return_tensors="pt").to(device)
            inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
            with torch.inference_mode():
                out = model.generate(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"], **generate)
            raw = processor.batch_decode(out, skip_special_tokens=False)
            return [str(processor.post_process_generation(text, task=opts.task, image_size=im.size).get(opts.task, ""))
                    for text, im in zip(raw, images)]
        text = [opts.prompt] * len(images) if opts.prompt else None
        inputs = processor(images=images, text=text, return_tensors="pt").to(device)
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        with torch.inference_mode():
            out = model.generate(**inputs, **generate)
        return processor.batch_decode(out, skip_special_tokens=True)


@hookimpl
def register_captioners(register):
    register(LocalVlmCaptioner())
