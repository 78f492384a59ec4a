"""Write the trained parts as the folders users load: a diffusers Stable Diffusion folder
(``StableDiffusionPipeline.from_pretrained`` opens it), the CLIP model with its processor,
and the record of how they were made (recipe, curves, snapshots). Weights in fp16."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from clood_candy_plugins.pretrain.recipe import SCHEDULE, Recipe

BASE, CLIP, RECORD = "base", "clip", "pretraining"


def slim_tokenizer(folder: Path, source: Path) -> None:
    """The tokenizer as vocab.json + merges.txt (what it was built from), not the 3.6 MB
    tokenizer.json transformers writes: the same tokens, in less than half the bytes."""
    (folder / "tokenizer.json").unlink(missing_ok=True)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy2(source / name, folder / name)


def write_base(folder: Path, unet, text_encoder, vae, tokenizer) -> None:
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=DDPMScheduler(**SCHEDULE), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.to(torch.float16).save_pretrained(folder, safe_serialization=True)
    pipe.to(torch.float32)  # the caller's modules stay usable
    slim_tokenizer(folder / "tokenizer", Path(tokenizer.name_or_path))


def write_clip(folder: Path, clip, tokenizer, side: int) -> None:
    from transformers import CLIPImageProcessor, CLIPProcessor

    # The studio's pixels in [-1, 1], as the model was trained on them.
    images = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side},
                                image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    clip.to(torch.float16).save_pretrained(folder, safe_serialization=True)
    clip.to(torch.float32)
    slim_tokenizer(folder, Path(tokenizer.name_or_path))


def write_record(folder: Path, recipe: Recipe, stages: dict, figures: dict, snapshots: Path, command: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "snapshots").mkdir(exist_ok=True)
    for png in sorted(snapshots.glob("*.png")):
        shutil.copy2(png, folder / "snapshots" / png.name)
    record = {"command": command, "recipe": recipe.model_dump(mode="json"), "figures": figures, "stages": stages}
    (folder / "record.json").write_text(json.dumps(record, indent=2) + "\n")


def folder_megabytes(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def ship(out: Path) -> Path:
    """Copy base/, clip/ and pretraining/ from a finished run into the installed package."""
    from clood_candy_plugins import candy_mini

    for part in candy_mini.PARTS:
        if not (out / part).is_dir():
            raise FileNotFoundError(f"{out / part} is missing: the run has not finished")
    for part in candy_mini.PARTS:
        shutil.rmtree(candy_mini.HERE / part, ignore_errors=True)
        shutil.copytree(out / part, candy_mini.HERE / part)
    return candy_mini.HERE
