"""Take the captioned dataset to the trainer a user already knows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pydantic import BaseModel

from clood_candy import fsutil
from clood_candy.concepts import read as read_concepts
from clood_candy.errors import UserError
from clood_candy.records import TrainConfig

# ai-toolkit's model.arch per clood family, and the network types it trains.
AI_TOOLKIT_ARCH = {"sd1": "sd1", "sdxl": "sdxl", "sd3": "sd3", "flux": "flux"}
AI_TOOLKIT_NETWORKS = {"lora": "lora", "lokr": "lokr"}


class TrainerJob(BaseModel):
    """What a trainer's own job file needs from the run beside the dataset."""

    name: str
    base: str
    family: str
    recipe: TrainConfig
    recipe_source: str  # which record the recipe came from, said in the file's header
    resolution: int
    prompts: list[str]
    seed: int = 0
    guidance_scale: float | None = None  # the run's [sample] guidance_scale; None: the family's usual


def _rows(dataset: Path) -> list[dict]:
    meta = dataset / "metadata.jsonl"
    if not meta.is_file():
        raise UserError(f"no captioned dataset in {dataset}: run the caption stage first")
    return [json.loads(line) for line in meta.read_text(encoding="utf-8").splitlines() if line.strip()]


def export_dataset(dataset: Path, fmt: str, dest: Path, *, trigger: str, class_word: str, repeats: int = 10,
                   job: TrainerJob | None = None) -> Path:
    """kohya: ``<dest>/<repeats>_<trigger> <class>/`` with image + .txt (sd-scripts' DreamBooth
    folder naming), a folder per concept with its balancing repeats multiplied in, and a
    ``dataset_config.toml`` for --dataset_config saying the same; ai-toolkit: one folder of
    image + .txt (a subfolder per concept) and, given ``job``, a ``config.yaml`` that
    ai-toolkit's ``run.py`` trains from (a dataset per concept with its trigger and repeats);
    imagefolder: images + ``metadata.jsonl`` (file_name, text) as HF ``datasets`` reads it."""
    rows = _rows(dataset)
    concepts = read_concepts(dataset).concepts  # trigger → balancing repeats, and its own class word
    concept_repeats = {c.trigger: c.repeats for c in concepts}
    concept_classes = {c.trigger: c.class_word for c in concepts if c.class_word}
    if fmt not in ("kohya", "ai-toolkit", "imagefolder"):
        raise UserError(f"unknown export format '{fmt}' (kohya, ai-toolkit, imagefolder)")
    if fmt == "kohya" and repeats < 1:
        raise UserError("--repeats must be at least 1")

    def folder_of(row: dict) -> tuple[Path, int, str]:
        concept = row.get("concept") if fmt != "imagefolder" else None
        tokens = f"{trigger} {concept}" if concept else trigger
        if fmt == "kohya":
            times = repeats * concept_repeats.get(concept, 1)
            word = concept_classes.get(concept, class_word)
            return dest / f"{times}_{tokens} {word}", times, f"{tokens} {word}"
        return (dest / concept if concept else dest), 1, tokens

    lines, folders = [], {}
    for row in rows:
        target, times, tokens = folder_of(row)
        target.mkdir(parents=True, exist_ok=True)
        folders[target] = (times, tokens)
        image = dataset / row["file_name"]
        shutil.copyfile(image, target / image.name)
        if fmt == "imagefolder":
            lines.append(json.dumps({"file_name": image.name, "text": row["text"]}, ensure_ascii=False))
        else:
            fsutil.write_text(target / f"{image.stem}.txt", row["text"] + "\n")
    if fmt == "imagefolder":
        fsutil.write_text(dest / "metadata.jsonl", "\n".join(lines) + "\n")
    if fmt == "kohya":
        subsets = "".join(f"\n  [[datasets.subsets]]\n  image_dir = {json.dumps(str(f.resolve()))}\n"
                          f"  num_repeats = {t}\n  class_tokens = {json.dumps(tokens)}\n"
                          for f, (t, tokens) in sorted(folders.items()))
        fsutil.write_text(dest / "dataset_config.toml",
                          "# sd-scripts: --dataset_config dataset_config.toml (the captions are the .txt files)\n"
                          "[general]\ncaption_extension = \".txt\"\nkeep_tokens = 1\n\n[[datasets]]\n" + subsets)
    if fmt == "ai-toolkit" and job is not None:
        datasets = [(f, concept_repeats.get(f.name, 1) if f != dest else 1, tokens)
                    for f, (_, tokens) in sorted(folders.items())]
        fsutil.write_text(dest / "config.yaml", ai_toolkit_config(job, datasets))
    return next(iter(folders)) if len(folders) == 1 else dest


def ai_toolkit_config(job: TrainerJob, datasets: list[tuple[Path, int, str]]) -> str:
    """An ai-toolkit job (``python run.py config.yaml``) training what the run trained: its base,
    recipe, resolution and sample prompts; a dataset per (folder, repeats, trigger)."""
    import yaml

    r, flow = job.recipe, job.family in ("flux", "sd3")
    lost = [f"{name} {value}" for name, value, kept in (
        ("variant", r.variant, r.variant in AI_TOOLKIT_NETWORKS), ("loss", r.loss, r.loss == "l2"),
        ("targets", r.targets, r.targets == "full" and not r.target_modules)) if not kept]
    process = {
        "type": "sd_trainer", "training_folder": "output", "device": "cuda:0",
        "network": {"type": AI_TOOLKIT_NETWORKS.get(r.variant, "lora"), "linear": r.rank, "linear_alpha": r.alpha},
        "save": {"dtype": "float16", "save_every": r.checkpoint_every, "max_step_saves_to_keep": 4},
        "datasets": [{"folder_path": str(folder.resolve()), "caption_ext": "txt", "trigger_word": tokens,
                      "num_repeats": times, "caption_dropout_rate": r.caption_dropout, "shuffle_tokens": r.shuffle_tags,
                      "keep_tokens": r.keep_tokens, "cache_latents_to_disk": True, "resolution": [job.resolution]}
                     for folder, times, tokens in datasets],
        "train": {"batch_size": r.batch_size, "steps": r.steps, "gradient_accumulation_steps": r.gradient_accumulation,
                  "train_unet": True, "train_text_encoder": r.train_text_encoder,
                  "gradient_checkpointing": r.gradient_checkpointing, "noise_scheduler": "flowmatch" if flow else "ddpm",
                  "optimizer": r.optimizer, "lr": r.learning_rate, "lr_scheduler": r.lr_scheduler,
                  "noise_offset": r.noise_offset, "min_snr_gamma": r.snr_gamma,
                  "dtype": {"bf16": "bf16", "fp16": "fp16"}.get(r.mixed_precision, "fp32")},
        "model": {"name_or_path": job.base, "arch": AI_TOOLKIT_ARCH.get(job.family, job.family),
                  "is_v_pred": r.prediction_type == "v_prediction", "quantize": job.family == "flux"},
        "sample": {"sampler": "flowmatch" if flow else "ddpm", "sample_every": max(r.checkpoint_every, 1),
                   "width": job.resolution, "height": job.resolution, "prompts": job.prompts, "seed": job.seed,
                   "walk_seed": True, "guidance_scale": job.guidance_scale or (4 if flow else 7), "sample_steps": 20 if flow else 25},
    }
    if r.text_encoder_lr is not None:
        process["train"]["text_encoder_lr"] = r.text_encoder_lr
    header = (f"# ai-toolkit job written by clood from run {job.name!r}: python run.py config.yaml\n"
              f"# recipe: {job.recipe_source}; the captions (.txt) already carry each dataset's trigger\n")
    if lost:
        header += f"# not carried over (ai-toolkit has no such setting here): {', '.join(lost)}\n"
    body = {"job": "extension", "config": {"name": job.name, "process": [process]},
            "meta": {"name": job.name, "version": "1.0"}}
    return header + yaml.safe_dump(body, sort_keys=False, allow_unicode=True)


def trainer_job(ctx) -> TrainerJob:
    """The run's trainer job, without loading its base: the recipe its final LoRA trained with
    (train/outcome.json), else the configured defaults; the resolution prep framed for."""
    from clood_candy.pipeline.sample_stage import default_prompts
    from clood_candy.records import PrepReport, TrainOutcome

    outcome, prep = ctx.run.path("train", "outcome.json"), ctx.run.path("prep", "report.json")
    if outcome.is_file():
        recipe, source = TrainOutcome.model_validate(fsutil.read_json(outcome)).config, "what the run trained (train/outcome.json)"
    else:
        recipe, source = ctx.config.train.defaults, "the run's configured defaults (it has not trained yet)"
    framed = PrepReport.model_validate(fsutil.read_json(prep)).resolution if prep.is_file() else None
    resolution = recipe.resolution or framed or ctx.config.prep.resolution
    if resolution is None:
        raise UserError("cannot tell the training resolution: run prep first, or set prep.resolution")
    return TrainerJob(name=ctx.config.name, base=ctx.config.base, family=ctx.family().name, recipe=recipe,
                      recipe_source=source, resolution=resolution,
                      prompts=list(dict.fromkeys(ctx.config.sample.prompts + default_prompts(ctx))), seed=ctx.config.seed,
                      guidance_scale=ctx.config.sample.guidance_scale)
