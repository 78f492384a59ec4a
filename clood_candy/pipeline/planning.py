"""The plan in a run: made from the photo source before any stage runs (printed, and kept
as RUN/plan.json), and again by the train stage from the photos that survived prep, whose
choices it then trains with (RUN/train/plan.json)."""

from __future__ import annotations

from pathlib import Path

from clood_candy import fsutil
from clood_candy.config import CloodConfig
from clood_candy.context import StageContext, find_family
from clood_candy.fight.halving import default_grid
from clood_candy.plan.build import make_plan
from clood_candy.plan.records import Plan
from clood_candy.plan.render import render
from clood_candy.plugins import Registry
from clood_candy.concepts import read as read_concepts, resolve
from clood_candy.records import ConceptSet, Photo, TrainConfig, TrainSet


def plan_from_source(config: CloodConfig, registry: Registry, source: Path | None) -> Plan:
    """The plan for a photo source, from the preparer's survey (no model loaded)."""
    family = find_family(config, registry)
    survey = registry.get("preparer", config.prep.preparer).survey(source) if source is not None else None
    photos = None if survey is None else len(survey.photos)
    concepts = _concepts(config, survey.photos) if survey is not None else None
    return make_plan(config, family, family.device(config), photos=photos, sizes=survey.sizes if survey else None,
                     concepts=concepts)


def _concepts(config: CloodConfig, paths: list[str]) -> ConceptSet | None:
    """The concepts the caption stage will find, from the photos' paths alone (prep may cull a
    few: the train stage's plan counts what survived)."""
    if not config.concepts and config.concepts_from == "none":
        return None
    photos = [Photo(id=rel, source=rel, image=rel, width=1, height=1, folders=rel.split("/")[:-1]) for rel in paths]
    return resolve(config, photos)


def announce(ctx: StageContext, source: Path | None) -> Plan:
    """The plan before the run starts: printed and written to RUN/plan.json."""
    plan = plan_from_source(ctx.config, ctx.registry, source)
    if source is None or not Path(source).exists():  # a resumed run past prep: its dataset says
        kept = _dataset_size(ctx)
        if kept is not None:
            family = ctx.family()
            plan = make_plan(ctx.config, family, family.device(ctx.config), photos=kept)
    for line in render(plan):
        ctx.progress.say(line, style="yellow" if line.startswith("Warning") else None)
    fsutil.write_json(ctx.run.path("plan.json"), plan)
    return plan


def _dataset_size(ctx: StageContext) -> int | None:
    meta = ctx.run.path("dataset", "metadata.jsonl")
    if not meta.is_file():
        return None
    return sum(1 for line in meta.read_text(encoding="utf-8").splitlines() if line.strip())


# Counted in steps: a config with its own length gets them in proportion to it.
PER_STEP = ("warmup_steps", "checkpoint_every", "validate_every", "sample_every")


def _fill(own: TrainConfig, defaults: TrainConfig) -> TrainConfig:
    """A [[train.fight.configs]] entry: what it sets, and [train.defaults] with the plan's
    choices for the rest (a fighter that names only a learning rate keeps the rank, steps
    and schedule every other fighter has)."""
    filled = {k: getattr(defaults, k) for k in type(defaults).model_fields if k not in own.model_fields_set}
    if "steps" in own.model_fields_set and own.steps != defaults.steps:
        scale = own.steps / max(1, defaults.steps)
        for key in PER_STEP:
            if key in filled and filled[key]:
                filled[key] = max(1, round(filled[key] * scale))
    return own.model_copy(update=filled)


def planned_recipes(ctx: StageContext, data: TrainSet) -> tuple[Plan, list[TrainConfig], list[int]]:
    """The train stage's plan from the photos it trains on, the configs to fight with the
    plan's choices filled in where neither [train.defaults] nor the config itself sets
    them, and the fight's rungs."""
    config, family = ctx.config, ctx.family()
    plan = make_plan(config, family, family.device(config), photos=len({i.image for i in data.train}) + len(data.validation),
                     training=len(data.train), concepts=read_concepts(ctx.run.path("dataset")))
    updates = plan.train_updates()
    defaults = config.train.defaults.model_copy(update=updates)
    own = config.train.fight.configs
    configs = [_fill(c, defaults) for c in own] if own else default_grid(defaults)
    budgets = plan.fight.budgets if plan.fight else list(config.train.fight.budgets or [])
    earlier = ctx.run.path("plan.json")
    steps = plan.value("train.defaults.steps")
    if earlier.is_file():
        before = Plan.model_validate(fsutil.read_json(earlier))
        if before.value("train.defaults.steps") != steps:
            ctx.progress.say(f"Plan: {steps} steps, not {before.value('train.defaults.steps')}: "
                             f"{len(data.train)} photos train now ({before.training_photos} were counted before prep)")
    fsutil.write_json(ctx.run.path("train", "plan.json"), plan)
    return plan, configs, budgets
