"""The ``wd14`` captioner: SmilingWolf's WD14 v3 taggers (booru-style tags) run locally.

``SmilingWolf/wd-swinv2-tagger-v3`` is the default (seed 004: the most accurate);
``wd-vit-tagger-v3``, ``wd-convnext-tagger-v3`` and ``wd-eva02-large-tagger-v3`` load the
same way. Each of those repositories ships ``model.onnx`` and ``selected_tags.csv``
(tag_id, name, category, count; category 9 = rating, 0 = general, 4 = character), and that
is what runs here, through onnxruntime, as the authors' own demo and kohya's tagger do.
Why not the repos' timm weights: timm needs torchvision, whose PyPI wheel is built against
the CUDA torch and does not import beside the CPU torch this project installs.

``model`` is a hub id or a local folder holding those two files. Tags are kept from 0.35
(``strict = true``: 0.5; or set ``threshold``), character tags from 0.85
(``character_threshold``); rating and score tags never. Seed 004 keeps character tags for
a character LoRA and removes them for a style LoRA: ``characters = "auto"`` does that, or
"keep" / "drop". ``exclude``: tags to remove (the seed's fixed-feature tags), ``max_tags``,
``batch_size``, ``device`` ("auto": CUDA where onnxruntime-gpu has it, else CPU), ``revision``.

The raw caption is "trigger, class word, tags by confidence"; the caption strategy turns
it into the run's style (tags, hybrid, or a sentence for T5-conditioned bases).
"""

from __future__ import annotations

import csv
import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps
from pydantic import BaseModel, ConfigDict, Field, model_validator

from clood_candy.fighters import Captioner
from clood_candy.hookspecs import hookimpl
from clood_candy.records import CaptionResult, Photo
from clood_candy_plugins.hf_models import availability

PLUGIN = "wd14"
DEFAULT_MODEL = "SmilingWolf/wd-swinv2-tagger-v3"
FILES = ("model.onnx", "selected_tags.csv")
GENERAL, CHARACTER, RATING = 0, 4, 9
GENERAL_THRESHOLD, STRICT_THRESHOLD, CHARACTER_THRESHOLD = 0.35, 0.5, 0.85
NO_RUNTIME = "onnxruntime is not installed (pip install 'clood-candy[wd14]'; onnxruntime-gpu for CUDA)"


class Wd14Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = DEFAULT_MODEL
    revision: str | None = None
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    batch_size: int = Field(8, ge=1, le=256)
    threshold: float | None = Field(None, gt=0, lt=1)  # general tags; None: 0.35, or 0.5 when strict
    strict: bool = False
    character_threshold: float = Field(CHARACTER_THRESHOLD, gt=0, le=1)
    characters: Literal["auto", "keep", "drop"] = "auto"
    exclude: list[str] = Field(default_factory=list)
    max_tags: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_threshold(self):
        # Two ways of saying the same number: a silent winner would surprise someone.
        if self.strict and self.threshold is not None:
            raise ValueError("set threshold or strict, not both")
        return self

    @property
    def general_threshold(self) -> float:
        if self.threshold is not None:
            return self.threshold
        return STRICT_THRESHOLD if self.strict else GENERAL_THRESHOLD


def load_options(ctx) -> Wd14Options:
    return ctx.typed_options(PLUGIN, Wd14Options)


@dataclass(frozen=True)
class Tag:
    name: str  # as the caption writes it: spaces, not underscores
    category: int


def display_name(raw: str) -> str:
    """Underscores → spaces, except in kaomoji ("^_^", "o_o", "0_0"), where the underscore
    is the mouth: a tag is a kaomoji when no part between underscores has two letters."""
    parts = raw.split("_")
    if len(parts) > 1 and all(sum(ch.isalpha() for ch in part) <= 1 for part in parts):
        return raw
    return raw.replace("_", " ").strip()


def never_kept(raw: str, category: int) -> bool:
    """Rating tags (category 9, or named ``rating:*``) and score tags say nothing about the photo."""
    low = raw.lower()
    return category == RATING or low.startswith(("rating:", "rating_", "score:", "score_"))


def read_tags(path: Path) -> list[Tag]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"name", "category"} <= set(rows[0]):
        raise ValueError(f"{path.name} has no name and category columns")
    return [Tag(display_name(row["name"]), int(row["category"])) if not never_kept(row["name"], int(row["category"]))
            else Tag(row["name"], RATING) for row in rows]


def providers(device: str, available: list[str]) -> list:
    """onnxruntime execution providers for ``device``; CPU is always the last resort."""
    cuda = "CUDAExecutionProvider"
    if device == "cpu" or (device == "auto" and cuda not in available):
        return ["CPUExecutionProvider"]
    if cuda not in available:
        raise ValueError(f"device {device}: this onnxruntime has no CUDA provider (install onnxruntime-gpu)")
    index = int(device.split(":")[1]) if ":" in device else 0
    return [(cuda, {"device_id": index}), "CPUExecutionProvider"]


@functools.lru_cache(maxsize=1)  # one tagger in memory; a second fight call reuses it
def load_tagger(model: str, revision: str | None, device: str, local_only: bool):
    import onnxruntime as ort

    folder = Path(model).expanduser()
    if folder.is_dir():
        onnx_path, tags_path = folder / FILES[0], folder / FILES[1]
    else:
        from huggingface_hub import hf_hub_download

        onnx_path, tags_path = (Path(hf_hub_download(model, name, revision=revision, local_files_only=local_only))
                                for name in FILES)
    tags = read_tags(tags_path)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: a provider falling back to CPU is not the user's problem
    session = ort.InferenceSession(str(onnx_path), options,
                                   providers=providers(device, ort.get_available_providers()))
    shape = session.get_inputs()[0].shape
    # The v3 taggers take NHWC (batch, 448, 448, 3); read the side from the graph, not a constant.
    if len(shape) != 4 or shape[3] != 3 or not isinstance(shape[1], int) or shape[1] != shape[2]:
        raise ValueError(f"{onnx_path.name} takes input {shape}, not square NHWC images (batch, side, side, 3)")
    outputs = session.get_outputs()[0].shape[-1]
    if isinstance(outputs, int) and outputs != len(tags):
        raise ValueError(f"{onnx_path.name} gives {outputs} scores but {tags_path.name} lists {len(tags)} tags")
    fixed_batch = shape[0] if isinstance(shape[0], int) else None
    return session, tags, shape[1], fixed_batch


def prepare(image: Image.Image, side: int) -> np.ndarray:
    """What the taggers were trained on: transparency on white, padded to a square on white
    (centred, never cropped), resized to the model's side, BGR, 0–255 floats; no
    normalisation (the ONNX graph does its own)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        white.alpha_composite(rgba)
        image = white
    image = image.convert("RGB")
    longest = max(image.size)
    square = Image.new("RGB", (longest, longest), (255, 255, 255))
    square.paste(image, ((longest - image.width) // 2, (longest - image.height) // 2))
    if longest != side:
        square = square.resize((side, side), Image.Resampling.BICUBIC)
    return np.ascontiguousarray(np.asarray(square, dtype=np.float32)[:, :, ::-1])


def scores_of(session, batch: np.ndarray) -> np.ndarray:
    name = session.get_inputs()[0].name
    out = np.asarray(session.run(None, {name: batch})[0], dtype=np.float64)
    if out.size and (out.min() < 0 or out.max() > 1):  # an export that left the sigmoid out: logits
        out = 1 / (1 + np.exp(-out))
    return out


def choose(scores: np.ndarray, tags: list[Tag], opts: Wd14Options, keep_characters: bool) -> list[tuple[str, float]]:
    """The tags above their threshold, most confident first (ties in the CSV's order)."""
    excluded = {display_name(e.strip().lower()) for e in opts.exclude}
    found: dict[str, float] = {}
    for tag, score in zip(tags, scores.tolist()):
        if tag.category == RATING or tag.name.lower() in excluded or math.isnan(score):
            continue
        if tag.category == CHARACTER:
            if not keep_characters or score < opts.character_threshold:
                continue
        elif score < opts.general_threshold:
            continue
        found[tag.name] = max(score, found.get(tag.name, 0.0))
    ranked = sorted(found.items(), key=lambda kv: -kv[1])
    return ranked[:opts.max_tags] if opts.max_tags else ranked


def caption_text(ranked: list[tuple[str, float]], trigger: str, class_word: str) -> str:
    """Trigger and class word first, as every captioner's tag list starts."""
    lead = [w for w in (trigger, class_word) if w]
    seen = {w.lower() for w in lead}
    return ", ".join([*lead, *(name for name, _ in ranked if name.lower() not in seen)])


class Wd14Captioner(Captioner):
    name = "wd14"
    description = "WD14 v3 tagger (SmilingWolf's swinv2/vit/eva02, ONNX): booru-style tags by confidence."
    runs_a_model = True

    def unavailable(self, ctx) -> str | None:
        try:
            opts = load_options(ctx)
        except ValueError as exc:
            return str(exc)
        return self._problem(opts)[0]

    @staticmethod
    def _problem(opts: Wd14Options) -> tuple[str | None, bool]:
        try:
            import onnxruntime as ort
        except ImportError:
            return NO_RUNTIME, True
        reason, local_only = availability(opts.model, opts.revision, FILES)
        if reason:
            return reason, local_only
        try:
            providers(opts.device, ort.get_available_providers())
        except ValueError as exc:
            return str(exc), local_only
        return None, local_only

    def caption(self, photos: list[Photo], ctx) -> dict[str, CaptionResult]:
        try:
            opts = load_options(ctx)
        except ValueError as exc:
            return {p.id: CaptionResult(error=str(exc)) for p in photos}
        reason, local_only = self._problem(opts)
        if reason:
            return {p.id: CaptionResult(error=reason) for p in photos}
        ctx.progress.say(f"Loading {opts.model} (ONNX, {opts.device}) …")
        try:
            session, tags, side, fixed_batch = load_tagger(opts.model, opts.revision, opts.device, local_only)
        except Exception as exc:  # a broken or foreign model fails every photo, with the reason
            error = f"cannot load {opts.model}: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"[:300]
            return {p.id: CaptionResult(error=error) for p in photos}
        cfg = ctx.config
        keep_characters = opts.characters == "keep" or (opts.characters == "auto" and cfg.caption.lora_type != "style")
        batch_size = fixed_batch or opts.batch_size
        details = {"model": opts.model, "device": session.get_providers()[0].removesuffix("ExecutionProvider").lower(),
                   "threshold": opts.general_threshold, "character_threshold": opts.character_threshold,
                   "characters": keep_characters}

        results: dict[str, CaptionResult] = {}
        arrays: list[tuple[Photo, np.ndarray]] = []
        for photo in photos:
            try:
                with Image.open(ctx.run.path(photo.image)) as im:
                    arrays.append((photo, prepare(ImageOps.exif_transpose(im), side)))
            except Exception as exc:
                results[photo.id] = CaptionResult(error=f"cannot read image {photo.image}: {type(exc).__name__}: {exc}"[:300])
        with ctx.progress.task(f"{self.name} tags ({opts.model})", len(arrays)) as advance:
            for start in range(0, len(arrays), batch_size):
                chunk = arrays[start:start + batch_size]
                began = time.perf_counter()
                try:
                    scores = scores_of(session, np.stack([a for _, a in chunk]))
                except Exception as exc:
                    error = f"tagging failed: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"[:300]
                    results.update({photo.id: CaptionResult(error=error) for photo, _ in chunk})
                    advance(len(chunk))
                    continue
                seconds = round((time.perf_counter() - began) / len(chunk), 4)
                for (photo, _), row in zip(chunk, scores):
                    ranked = choose(row, tags, opts, keep_characters)
                    results[photo.id] = CaptionResult(
                        caption=caption_text(ranked, cfg.trigger, cfg.class_word),
                        details={**details, "tags": {name: round(score, 4) for name, score in ranked}},
                        usage={"seconds": seconds, "batch_size": len(chunk)})
                advance(len(chunk))
        return {p.id: results[p.id] for p in photos}


@hookimpl
def register_captioners(register):
    register(Wd14Captioner())
