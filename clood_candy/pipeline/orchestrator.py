"""Runs the stages in order, skipping the ones whose inputs and config are unchanged,
recording status and timings in run.json."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any

from clood_candy import edits
from clood_candy.captions.strategy import STRATEGIES
from clood_candy.config import CloodConfig
from clood_candy.context import StageContext, find_family
from clood_candy.errors import UserError
from clood_candy.pipeline import caption_stage, prep_stage, report_stage, sample_stage, train_stage
from clood_candy.pipeline.planning import announce
from clood_candy.plugins import Registry
from clood_candy.runstore import STAGES, fingerprint, without_secrets

# (ctx, photos folder, force) → the stage's outputs; with force the caption stage also
# asks its judges afresh rather than reusing the verdicts on file.
RUNNERS = {
    "prep": lambda ctx, source, force: prep_stage.run(ctx, source),
    "caption": lambda ctx, source, force: caption_stage.run(ctx, force=force),
    "train": lambda ctx, source, force: train_stage.run(ctx),
    "sample": lambda ctx, source, force: sample_stage.run(ctx),
    "report": lambda ctx, source, force: report_stage.run(ctx),
}


class StageFailed(Exception):
    def __init__(self, stage: str, message: str, log: Path):
        super().__init__(message)
        self.stage, self.log = stage, log


def stage_inputs(ctx: StageContext, stage: str, source: Path | None) -> list[Any]:
    """What a stage's result depends on, beyond the stages before it."""
    cfg = ctx.config
    # No secret: its hash would sit in run.json, and a new key (or the same one now read
    # from the environment) changes no result.
    common = [cfg.base, cfg.family, cfg.seed, without_secrets(cfg.plugins)]
    if stage == "prep":
        # An upscaler's own table ([plugins.<name>]: its model, tiles) changes the prepared pixels.
        upscaler = [without_secrets(cfg.plugins.get(cfg.prep.upscaler, {}))] if cfg.prep.upscaler else []
        return [str(source), prep_stage.source_listing(source) if source else None, cfg.prep.model_dump(mode="json")] + upscaler
    if stage == "caption":
        # Concepts only when there are some, so a run from before they existed keeps its fingerprint.
        concepts = [cfg.concepts_from, [c.model_dump(mode="json") for c in cfg.concepts]]
        return common + [cfg.trigger, cfg.class_word, cfg.caption.model_dump(mode="json")] + (
            concepts if cfg.concepts_from != "none" or cfg.concepts else [])
    if stage == "train":
        # Captions edited by hand (clood review) change what trains, not what the caption stage
        # made: only training and what follows it run again. Left out when there are none.
        hand = edits.digest(ctx.run.root)
        return common + [cfg.train.model_dump(mode="json")] + ([hand] if hand else [])
    if stage == "sample":
        # A guidance left to the base is left out, so runs from before the setting keep their fingerprint.
        return common + [cfg.sample.model_dump(mode="json", exclude=None if cfg.sample.guidance_scale is not None
                                               else {"guidance_scale"})]
    return [cfg.reporter]


def check_plugins(ctx: StageContext, stages: list[str]) -> None:
    """Unknown plugin names are a user mistake: say so before any work starts."""
    cfg, reg = ctx.config, ctx.registry
    wanted: list[tuple[str, str]] = []
    if "prep" in stages:
        wanted.append(("preparer", cfg.prep.preparer))
    if "caption" in stages:
        wanted += [("captioner", n) for n in cfg.caption.captioners] + [("judge", n) for n in cfg.caption.judges]
    if "sample" in stages:
        wanted.append(("sampler", cfg.sample.sampler))
    if "report" in stages:
        wanted.append(("reporter", cfg.reporter))
    for kind, name in wanted:
        reg.get(kind, name)
    unknown = [s for s in cfg.caption.strategies if s not in STRATEGIES] if "caption" in stages else []
    if unknown:
        raise UserError(f"unknown caption strategy '{unknown[0]}' (known: {', '.join(STRATEGIES)})")
    if {"train", "sample"} & set(stages):
        ctx.family()


def check_inputs(ctx: StageContext, source: Path | None, stages: list[str]) -> None:
    """Mistakes that need no model, found before one loads (for a hub id, a download of
    gigabytes): a resolution the family cannot train at, no photos at all."""
    if {"prep", "train"} & set(stages):
        check_resolutions(ctx.config, ctx.registry)
    if "train" in stages and ctx.config.fight.executor == "ray":
        from clood_candy.fight.ray_rounds import import_ray

        import_ray()  # without the extra: one line naming it, before any model loads
    if "prep" not in stages:
        return
    if source is None:
        raise UserError("no photos folder: give PHOTOS_DIR or --demo")
    problem = ctx.registry.get("preparer", ctx.config.prep.preparer).check_source(source)
    if problem:
        raise UserError(problem)


def check_resolutions(config: CloodConfig, registry: Registry) -> None:
    """Every resolution the user set, asked of the model family (no model loaded)."""
    if not config.resolutions():
        return
    family = find_family(config, registry)
    for where, resolution in config.resolutions():
        problem = family.check_resolution(resolution, config.prep.buckets)
        if problem:
            raise UserError(f"{where} {resolution} does not suit the {family.name} family: {problem}")


def run_pipeline(ctx: StageContext, source: Path | None, stages: list[str], *, force: bool = False) -> None:
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise UserError(f"unknown stage(s) {', '.join(unknown)} (stages: {', '.join(STAGES)})")
    check_plugins(ctx, stages)
    check_inputs(ctx, source, stages)
    if "train" in stages:  # what training will do, said before any work (nothing is loaded for it)
        announce(ctx, source)
    log_path = ctx.run.path("log.txt")
    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    ctx.log.addHandler(handler)
    ctx.log.setLevel(logging.INFO)
    try:
        upstream = ""
        for stage in STAGES:
            fp = fingerprint(upstream, stage_inputs(ctx, stage, source))
            upstream = fp
            if stage not in stages:
                continue
            if not force and ctx.run.is_fresh(stage, fp):
                ctx.progress.say(f"[{stage}] up to date, skipped")
                continue
            ctx.progress.say(f"[{stage}]")
            began = ctx.run.start(stage, fp)
            ctx.log.info("stage %s started", stage)
            try:
                outputs = RUNNERS[stage](ctx, source, force)
            except UserError as exc:
                ctx.run.fail(stage, began, str(exc))
                raise
            except KeyboardInterrupt:
                ctx.run.fail(stage, began, "interrupted")
                raise
            except Exception as exc:
                ctx.log.error("stage %s failed:\n%s", stage, traceback.format_exc())
                ctx.run.fail(stage, began, f"{type(exc).__name__}: {exc}")
                raise StageFailed(stage, f"{type(exc).__name__}: {exc}", log_path) from exc
            ctx.run.finish(stage, began, outputs)
            ctx.log.info("stage %s done", stage)
    finally:
        ctx.log.removeHandler(handler)
        handler.close()
