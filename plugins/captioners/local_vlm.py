"""The ``local-vlm`` captioner: a captioning model run locally with transformers.

Three families, told apart by ``family`` (default "auto": the folder's config.json, else the
model's name):

- ``blip``: ``BlipForConditionalGeneration`` (the default model,
  ``Salesforce/blip-image-captioning-base``); ``prompt`` is a conditioning prefix such as
  "a photography of".
- ``florence``: Florence-2 (natively converted ones load as
  ``Florence2ForConditionalGeneration``; Microsoft's originals run modelling code from their
  own repository, which happens only with ``trust_remote_code = true``); ``task`` such as
  "<DETAILED_CAPTION>".
- ``chat``: instruction-following VLMs through their chat template and
  ``AutoModelForImageTextToText`` — the LLaVA family (``llava-hf/llava-1.5-7b-hf``), JoyCaption
  (``fancyfeast/llama-joycaption-beta-one-hf-llava``, what seed 001's Flux guide captions
  with), Qwen2-VL and the like. ``prompt`` is the instruction, ``system`` an optional system
  message, and ``temperature`` / ``top_p`` the guide's sampling settings (0.7 / 0.9; a
  temperature of 0 decodes greedily), seeded by the run's seed.

Other options, ``[plugins.local-vlm]``: ``model`` (hub id or local folder), ``batch_size``,
``max_new_tokens`` (default 40, chat 1024 as the guide), ``min_new_tokens``, ``num_beams``
(default 3, chat 1), ``device`` and ``dtype`` ("auto": CUDA with bf16/fp16 when there is a
GPU, else CPU fp32), ``revision``, ``trust_remote_code`` (default false).
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any, Literal

from PIL import Image, ImageOps
from pydantic import Field

from clood_candy_plugins.hf_models import (HfModelOptions, availability, pick_device, ships_own_code,
                                           unavailable_reason)
from clood_candy.fighters import Captioner
from clood_candy.hookspecs import hookimpl
from clood_candy.records import CaptionResult, Photo

PLUGIN = "local-vlm"
DEFAULT_MODEL = "Salesforce/blip-image-captioning-base"


CHAT_PROMPT = ("Write one paragraph that captions this photo for training an image model: the candy, its "
               "colours, how many there are and how they lie, the surface, the light and the framing.")
CHAT_NAMES = ("llava", "joycaption", "qwen", "idefics", "smolvlm", "paligemma", "gemma-3", "pixtral", "molmo")


class LocalVlmOptions(HfModelOptions):
    model: str = DEFAULT_MODEL
    family: Literal["auto", "blip", "florence", "chat"] = "auto"
    batch_size: int = Field(8, ge=1, le=256)
    max_new_tokens: int | None = Field(None, ge=1, le=4096)
    min_new_tokens: int = Field(0, ge=0, le=256)
    num_beams: int | None = Field(None, ge=1, le=16)
    prompt: str | None = None
    system: str | None = None
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(0.9, gt=0, le=1)
    task: str = "<DETAILED_CAPTION>"
    # Running code from a model's repository is the user's call, never implied by its name.
    trust_remote_code: bool = False

    @functools.cached_property  # read once: every batch asks
    def kind(self) -> str:
        """The family this model is run as: the folder's config.json says, else the name."""
        if self.family != "auto":
            return self.family
        name, config = self.model.lower(), Path(self.model).expanduser() / "config.json"
        if config.is_file():
            model_type = str(json.loads(config.read_text(encoding="utf-8")).get("model_type", ""))
            return "blip" if model_type == "blip" else "florence" if "florence" in model_type + name else "chat"
        if "florence" in name:
            return "florence"
        return "chat" if any(n in name for n in CHAT_NAMES) else "blip"

    @property
    def florence(self) -> bool:
        return self.kind == "florence"

    def generation(self) -> dict[str, Any]:
        chat = self.kind == "chat"
        settings = {"max_new_tokens": self.max_new_tokens or (1024 if chat else 40),
                    "min_new_tokens": self.min_new_tokens, "num_beams": self.num_beams or (1 if chat else 3),
                    "do_sample": chat and self.temperature > 0}
        if settings["do_sample"]:
            settings.update(temperature=self.temperature, top_p=self.top_p)
        return settings


def load_options(ctx) -> LocalVlmOptions:
    return ctx.typed_options(PLUGIN, LocalVlmOptions)


def needs_trust(model: str) -> str:
    return (f"cannot load {model} without running code from its repository: "
            f"set trust_remote_code = true under [plugins.{PLUGIN}] if you trust {model}")


def refusal(opts: LocalVlmOptions, local_only: bool) -> str | None:
    """Why the model may not load as it is configured: it ships its own code and the user
    has not said to trust it. BLIP loads through transformers' own class, never repo code."""
    if opts.kind == "blip" or opts.trust_remote_code:
        return None
    try:
        return needs_trust(opts.model) if ships_own_code(opts.model, opts.revision, local_only) else None
    except Exception:  # an unreadable config.json: loading it says what is wrong
        return None


@functools.lru_cache(maxsize=1)  # one model in memory; a second fight call reuses it
def load_model(model_id: str, revision: str | None, kind: str, trust_remote_code: bool, device: str, dtype: Any,
               local_only: bool):
    from transformers import AutoProcessor, BlipForConditionalGeneration, BlipProcessor

    common = {"revision": revision, "local_files_only": local_only}
    if kind == "chat":
        from transformers import AutoModelForImageTextToText

        processor = AutoProcessor.from_pretrained(model_id, **common)
        processor.tokenizer.padding_side = "left"  # a decoder-only model continues the last token of each row
        model = AutoModelForImageTextToText.from_pretrained(model_id, trust_remote_code=False, dtype=dtype, **common)
    elif kind == "florence":
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
    description = "A local captioning model (BLIP, Florence-2, or a chat VLM such as LLaVA/JoyCaption) run with transformers; no API, no facts."
    runs_a_model = True

    def unavailable(self, ctx) -> str | None:
        return unavailable_reason(load_options, ctx, refusal)

    def caption(self, photos: list[Photo], ctx) -> dict[str, CaptionResult]:
        import torch

        opts = load_options(ctx)
        reason, local_only = availability(opts.model, opts.revision)
        reason = reason or refusal(opts, local_only)
        if reason:
            return {p.id: CaptionResult(error=reason) for p in photos}
        device, dtype = pick_device(opts.device, opts.dtype)
        ctx.progress.say(f"Loading {opts.model} on {device} ({str(dtype).removeprefix('torch.')}) …")
        try:
            processor, model = load_model(opts.model, opts.revision, opts.kind, opts.trust_remote_code, device,
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
        details = {"model": opts.model, "family": opts.kind, "device": device,
                   "dtype": str(dtype).removeprefix("torch."), **opts.generation()}
        with ctx.progress.task(f"{self.name} captions ({opts.model})", len(images)) as advance:
            for start in range(0, len(images), opts.batch_size):
                chunk = images[start:start + opts.batch_size]
                began = time.perf_counter()
                torch.manual_seed(ctx.config.seed + start)  # sampled captions are the same on a rerun
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

        generate = opts.generation()
        if opts.kind == "chat":
            messages = [{"role": "system", "content": opts.system}] if opts.system else []
            messages.append({"role": "user", "content": [{"type": "image"},
                                                         {"type": "text", "text": opts.prompt or CHAT_PROMPT}]})
            text = processor.apply_chat_template(messages, add_generation_prompt=True)
            inputs = processor(images=images, text=[text] * len(images), padding=True, return_tensors="pt").to(device)
            inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
            with torch.inference_mode():
                out = model.generate(**inputs, **generate)
            return processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
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
