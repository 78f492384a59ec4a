"""The default sampler: the same fixed seeds through prompts × LoRA weights, and through
checkpoints × weights, so every difference between two images is the LoRA's doing.

Weight 0 is the base model alone; it is generated once per prompt and seed and shared
by every checkpoint's row (it cannot differ between them). A checkpoint whose file is the
shipped LoRA byte for byte (the pick shipped it) is not drawn twice: its row shows the
shipped LoRA's images.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from clood_candy import fsutil
from clood_candy.errors import UserError
from clood_candy.hookspecs import hookimpl
from clood_candy.records import SampleImage, SampleSet
from clood_candy.stages import LoadedBase, ModelFamily, Sampler
from clood_candy_plugins.sampler.grid import labelled_grid

if TYPE_CHECKING:
    from clood_candy.context import StageContext

BASE = "base"  # the checkpoint name of weight-0 images: no LoRA applied


@dataclass(frozen=True)
class Job:
    prompt_index: int
    prompt: str
    seed: int
    weight: float
    checkpoint: str
    lora: Path | None

    @property
    def key(self) -> tuple[int, int, float, str]:
        return self.prompt_index, self.seed, self.weight, self.checkpoint

    def file_name(self) -> str:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.checkpoint)
        tail = "base" if self.lora is None else f"{safe}-w{self.weight:g}"
        return f"p{self.prompt_index + 1}-seed{self.seed}-{tail}.png"


def weight_label(weight: float) -> str:
    return "0 (base alone)" if weight == 0 else f"LoRA {weight:g}"


def primary_of(loras: dict[str, Path]) -> str:
    """The checkpoint the prompt grids use: 'final' unless the caller picked one."""
    return "final" if "final" in loras else list(loras)[-1]


def same_files(loras: dict[str, Path]) -> dict[str, str]:
    """Checkpoint → the earlier one (the primary first) whose file has the same bytes."""
    primary = primary_of(loras)
    seen: dict[str, str] = {}
    same = {}
    for name in [primary, *(n for n in loras if n != primary)]:
        digest = hashlib.sha256(Path(loras[name]).read_bytes()).hexdigest()
        if digest in seen:
            same[name] = seen[digest]
        else:
            seen[digest] = name
    return same


def plan(prompts: list[str], loras: dict[str, Path], weights: list[float], seeds: list[int],
         same: dict[str, str] | None = None) -> tuple[list[Job], str]:
    """Every image to make (none for a checkpoint in ``same``: it has another's images),
    and the name of the checkpoint the prompt grids use."""
    primary = primary_of(loras)
    same = same or {}
    jobs: list[Job] = []
    for p, prompt in enumerate(prompts):
        for seed in seeds:
            for weight in weights:
                if weight == 0:
                    jobs.append(Job(p, prompt, seed, 0.0, BASE, None))
                else:
                    jobs.append(Job(p, prompt, seed, weight, primary, loras[primary]))
    # Which checkpoint is best: the other checkpoints on the first prompt, same seeds.
    for name, path in loras.items():
        if name == primary or name in same:
            continue
        for seed in seeds:
            for weight in weights:
                if weight != 0:
                    jobs.append(Job(0, prompts[0], seed, weight, name, path))
    return jobs, primary


class DefaultSampler(Sampler):
    name = "default"

    def sample(self, family: ModelFamily, base: LoadedBase, loras: dict[str, Path], prompts: list[str],
               out_dir: Path, ctx: "StageContext", *, weights: list[float], seeds: list[int],
               negative_prompt: str = "") -> SampleSet:
        prompts = [p for p in (s.strip() for s in prompts) if p]
        if not prompts:
            raise UserError("no prompts to sample: give at least one --prompt or [sample] prompts")
        if not loras:
            raise UserError("no LoRA to sample: the run has no trained LoRA or checkpoints")
        missing = [f"{name} ({path})" for name, path in loras.items() if not Path(path).is_file()]
        if missing:
            raise UserError(f"LoRA file(s) missing: {', '.join(missing)}")
        weights = sorted(dict.fromkeys(float(w) for w in weights))
        seeds = list(dict.fromkeys(int(s) for s in seeds)) or [0]
        if not weights:
            raise UserError("no LoRA weights to sample")
        same = same_files(loras)
        jobs, primary = plan(prompts, loras, weights, seeds, same)
        out_dir.mkdir(parents=True, exist_ok=True)
        made: dict[tuple[int, int, float, str], Image.Image | None] = {}
        records: list[SampleImage] = []
        failures: list[str] = []
        with ctx.progress.task("Sampling", total=len(jobs)) as advance:
            for job in jobs:
                try:
                    image = family.generate(base, job.prompt, seed=job.seed, lora=job.lora, weight=job.weight,
                                            negative_prompt=negative_prompt, steps=ctx.config.sample.steps,
                                            guidance=ctx.config.sample.guidance_scale)
                except Exception as exc:  # one bad checkpoint costs its cells, not the whole stage
                    ctx.log.exception("sampling %s failed", job.file_name())
                    failures.append(f"{job.file_name()}: {type(exc).__name__}: {exc}")
                    made[job.key] = None
                    advance(note="failed")
                    continue
                path = out_dir / job.file_name()
                _save_png(image, path)
                made[job.key] = image
                records.append(SampleImage(image=_rel(ctx, path), prompt=job.prompt, seed=job.seed,
                                           weight=job.weight, checkpoint=job.checkpoint))
                advance(note=f"{job.checkpoint} w{job.weight:g}")
        for name, original in same.items():  # the same file: its row is the original's images
            for seed in seeds:
                for weight in (w for w in weights if w != 0):
                    source = Job(0, prompts[0], seed, weight, original, loras[original])
                    copy = Job(0, prompts[0], seed, weight, name, loras[name])
                    made[copy.key] = made.get(source.key)
                    if made[copy.key] is not None:
                        shutil.copyfile(out_dir / source.file_name(), out_dir / copy.file_name())
                        records.append(SampleImage(image=_rel(ctx, out_dir / copy.file_name()), prompt=copy.prompt,
                                                   seed=seed, weight=weight, checkpoint=name))
        if not records:
            raise RuntimeError(f"every sample failed; first error: {failures[0]}")
        for line in failures:
            ctx.progress.say(f"  sample failed: {line}")
        grids = self._grids(prompts, loras, primary, weights, seeds, made, out_dir / "grids", ctx)
        return SampleSet(images=records, grids=grids, negative_prompt=negative_prompt)

    def _grids(self, prompts, loras, primary, weights, seeds, made, grid_dir: Path, ctx) -> dict[str, str]:
        def cell(p: int, seed: int, weight: float, checkpoint: str) -> Image.Image | None:
            return made.get((p, seed, 0.0, BASE) if weight == 0 else (p, seed, weight, checkpoint))

        cols = [weight_label(w) for w in weights]
        grids: dict[str, str] = {}
        for p, prompt in enumerate(prompts):
            cells = [[cell(p, seed, w, primary) for w in weights] for seed in seeds]
            sheet = labelled_grid(cells, [f"seed {s}" for s in seeds], cols, title=f"{prompt}  ({primary})")
            grids[f"prompt-{p + 1}"] = _rel(ctx, _save_png(sheet, grid_dir / f"prompt-{p + 1}.png"))
        if len(prompts) > 1:  # a row per prompt, side by side: with concepts, a row per trigger
            cells = [[cell(p, seeds[0], w, primary) for w in weights] for p in range(len(prompts))]
            sheet = labelled_grid(cells, list(prompts), cols, title=f"every prompt, seed {seeds[0]}  ({primary})")
            grids["prompts"] = _rel(ctx, _save_png(sheet, grid_dir / "prompts.png"))
        if len(loras) > 1:
            order = [n for n in loras if n != primary] + [primary]
            rows = [(name, seed) for name in order for seed in seeds]
            cells = [[cell(0, seed, w, name) for w in weights] for name, seed in rows]
            sheet = labelled_grid(cells, [f"{name} · seed {seed}" for name, seed in rows], cols,
                                  title=f"checkpoints: {prompts[0]}")
            grids["checkpoints"] = _rel(ctx, _save_png(sheet, grid_dir / "checkpoints.png"))
        return grids


def _rel(ctx: "StageContext", path: Path) -> str:
    """Relative to the run folder, as the run store promises; absolute when a caller
    chose an out_dir outside it."""
    try:
        return ctx.run.rel(path)
    except ValueError:
        return str(Path(path).resolve())


def _save_png(image: Image.Image, path: Path) -> Path:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return fsutil.write_bytes(path, buffer.getvalue())


@hookimpl
def register_samplers(register):
    register(DefaultSampler())
