"""The plan: every training setting chosen for this dataset, base and device, each with
its reason, before any work starts. A setting the user wrote (clood.toml, a flag,
``--demo``) always wins; the plan says so and what it would have chosen instead.

Nothing here loads a model: the photo count comes from the preparer's survey of names and
headers, the sizes from the model family's own counting (see ``ModelFamily.model_size``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from clood_candy.plan import tables
from clood_candy.plan.fight import plan_fight, plan_pick
from clood_candy.plan.memory import GB, Recipe, fit, gib
from clood_candy.plan.records import Choice, DeviceInfo, Plan, TrainingDefaults
from clood_candy.records import ConceptSet, TrainConfig

if TYPE_CHECKING:
    from clood_candy.config import CloodConfig
    from clood_candy.stages import ModelFamily

DEFAULT_GRID_SIZE = 4  # clood_candy.fight.halving.default_grid's configs


class _Choices:
    """Records each [train.defaults] choice; the user's value wins over the plan's."""

    def __init__(self, given: TrainConfig):
        self.given, self.user_set = given, set(given.model_fields_set)
        self.items: dict[str, Choice] = {}

    def __call__(self, field: str, value: Any, reason: str) -> Any:
        key = f"train.defaults.{field}"
        if field in self.user_set:
            mine = getattr(self.given, field)
            differs = "" if mine == value else f"; the plan would choose {_show(value)}: {reason}"
            self.items[field] = Choice(key=key, value=mine, reason="you set this" + differs, set_by_user=True,
                                       planned=None if mine == value else value)
        else:
            self.items[field] = Choice(key=key, value=value, reason=reason)
        return self.items[field].value


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def epoch_images(concepts: ConceptSet, photos: int) -> int:
    """Images an epoch shows: each concept's photos times its repeats, the rest once."""
    inside = sum(len(c.photos) for c in concepts.concepts)
    return photos - inside + sum(len(c.photos) * c.repeats for c in concepts.concepts)


def training_share(photos: int, validation_split: float) -> int:
    """Photos left to train on once the validation share is held out (as load_trainset does)."""
    if photos < 2:
        return photos
    held = min(max(1, round(photos * validation_split)), photos - 1)
    return photos - held


def make_plan(config: "CloodConfig", family: "ModelFamily", device: DeviceInfo, *, photos: int | None,
              training: int | None = None, sizes: dict[str, tuple[int, int]] | None = None,
              concepts: ConceptSet | None = None) -> Plan:
    """The plan for ``photos`` found (``training`` of them trained on, when known); with
    ``concepts``, an epoch shows each concept's photos its repeats times."""
    given = config.train.defaults
    lora_type = config.caption.lora_type
    start = family.training_defaults(config)
    choose = _Choices(given)
    notes: list[str] = []
    if training is None and photos is not None:
        training = training_share(photos, config.train.fight.validation_split)
        if concepts is not None and concepts.concepts and photos:
            training = round(training * epoch_images(concepts, photos) / photos)

    resolution = given.resolution or config.prep.resolution or (start.resolution if start else 512)
    _starting_points(choose, start, lora_type, notes)
    _precision(choose, device)

    recipe = given.model_copy(update={k: c.value for k, c in choose.items.items()})
    available = device.memory_bytes
    memory, remedies, first = None, [], None
    try:
        size = family.model_size(config, recipe, resolution)
    except Exception as exc:  # an architecture the counting does not know: plan without an estimate
        size = None
        notes.append(f"the {family.name} family could not count this base's sizes ({type(exc).__name__}: {exc})")
    if size is None:
        notes.append(f"no memory estimate for the {family.name} family: nothing is changed to fit memory")
        choose("gradient_checkpointing", False, "no memory estimate to call for it")
    else:
        fitted = fit(size, device, Recipe(recipe.batch_size, recipe.gradient_accumulation, recipe.mixed_precision,
                                          recipe.gradient_checkpointing, recipe.optimizer), available,
                     user_set=choose.user_set, eight_bit_available=device.eight_bit_adam)
        memory, remedies, first = fitted.memory, fitted.remedies, fitted.first
        notes += fitted.notes + ([size.note] if size.note else [])
        if not device.measured:
            notes.append(f"the estimate's scratch and runtime terms are checked against measurements on the CPU only "
                         f"(BENCHMARKS.md), not yet on {device.kind}")
        taken = " ".join(r.step for r in remedies)
        needed = "needed: the estimate did not fit without it"
        idle = "not needed: the estimate fits" if available else "no device memory known to fit into"
        choose("gradient_checkpointing", fitted.recipe.gradient_checkpointing,
               needed if "gradient checkpointing" in taken else idle)
        choose("optimizer", fitted.recipe.optimizer, needed if "8-bit AdamW" in taken else "AdamW, fp32 state")
        if fitted.recipe.batch_size != recipe.batch_size:
            choose("batch_size", fitted.recipe.batch_size, f"batch {recipe.batch_size} did not fit in memory")
            choose("gradient_accumulation", fitted.recipe.gradient_accumulation,
                   f"keeps {recipe.batch_size} photos per optimizer step")
    if "gradient_accumulation" not in choose.items:
        choose("gradient_accumulation", recipe.gradient_accumulation, "one batch per optimizer step")
    batch, accumulation = choose.items["batch_size"].value, choose.items["gradient_accumulation"].value

    balanced = concepts is not None and any(c.repeats > 1 for c in concepts.concepts)
    steps = _steps(choose, config, training, batch * accumulation, start, lora_type, notes, balanced)
    _schedule(choose, steps)
    _cadence(choose, steps, device)

    warnings = dataset_warnings(lora_type, photos, resolution, sizes or {}, config.prep.min_side_ratio,
                                upscaler=config.prep.upscaler)
    fight_configs = len(config.train.fight.configs) or DEFAULT_GRID_SIZE
    fs = config.train.fight
    fight = plan_fight(steps, fight_configs, fs.reduction, fs.rungs, fs.max_cost,
                       fs.budgets if "budgets" in fs.model_fields_set else None)
    held_out = max(1, round((photos or 0) * fs.validation_split)) if photos else 1
    sampler_steps = config.sample.steps or (8 if config.base.startswith("tiny") else 25)
    pick = plan_pick(config.train.pick, steps, choose.items["checkpoint_every"].value, batch * accumulation,
                     sampler_steps, fight.cost if len(config.train.fight.configs) != 1 else 0, held_out,
                     fight.rounds[1:] if fs.judge == "panel" and len(config.train.fight.configs) != 1 else [])
    choices = [Choice(key="prep.resolution", value=resolution, set_by_user=bool(given.resolution or
                      config.prep.resolution), reason="you set this" if (given.resolution or config.prep.resolution)
                      else "the base's native size")] + list(choose.items.values())
    return Plan(base=config.base, family=family.name, lora_type=lora_type, photos=photos, training_photos=training,
                resolution=resolution, device=device, choices=choices, memory=memory, first_estimate=first, remedies=remedies,
                fight=fight, pick=pick, warnings=warnings + (concepts.warnings if concepts else []), notes=notes,
                concepts=concepts if concepts is not None and concepts.concepts else None)


def _starting_points(choose: _Choices, start: TrainingDefaults | None, lora_type: str, notes: list[str]) -> None:
    if start is None:
        fallback = TrainConfig()
        notes.append("the model family gives no starting points: clood's own defaults")
        choose("learning_rate", fallback.learning_rate, "clood's default")
        choose("rank", fallback.rank, "clood's default")
        choose("alpha", fallback.alpha, "clood's default")
        choose("batch_size", fallback.batch_size, "clood's default")
        return
    choose("learning_rate", start.learning_rate, f"{start.source} ({lora_type} LoRA)")
    rank = choose("rank", start.rank, f"{start.source} ({lora_type} LoRA)")
    choose("alpha", float(start.alpha * rank / start.rank),
           "= rank: the LoRA's scale alpha/rank is 1 (seed 002: 'network 64/64')")
    choose("batch_size", start.batch_size, f"{start.source}; one photo a step keeps memory low")


def _precision(choose: _Choices, device: DeviceInfo) -> None:
    assumed = " (assumed: planned for a GPU you described, none found here)" if device.assumed else ""
    if device.kind == "cuda" and device.bf16:
        choose("mixed_precision", "bf16", "bf16: this GPU computes in it natively, no loss scaling needed" + assumed)
    elif device.kind == "cuda":
        choose("mixed_precision", "fp16", "fp16 with loss scaling (GradScaler): this GPU has no bf16" + assumed)
    elif device.kind == "cpu":
        choose("mixed_precision", "no", "fp32: on the CPU half precision is emulated on most cores, so slower")
    else:
        choose("mixed_precision", "no", f"fp32: clood does not scale fp16 losses on {device.kind}")


def _steps(choose: _Choices, config: "CloodConfig", training: int | None, per_step: int,
           start: TrainingDefaults | None, lora_type: str, notes: list[str], balanced: bool = False) -> int:
    repeats = config.train.repeats_per_image
    mine = "you set train.repeats_per_image" if "repeats_per_image" in config.train.model_fields_set \
        else tables.REPEATS_SOURCE
    if training is None:
        return choose("steps", TrainConfig().steps, "the photo count is unknown before prep: clood's default")
    raw = math.ceil(repeats * training / per_step)
    what = "training images an epoch, concept repeats included" if balanced else "training photos"
    reason = f"{repeats:g} repeats × {training} {what} ÷ batch {per_step} ({mine})"
    if raw < tables.MIN_STEPS:
        reason = f"{reason} = {raw}, raised to {tables.MIN_STEPS} ({tables.MIN_STEPS_SOURCE})"
    steps = choose("steps", max(raw, tables.MIN_STEPS), reason)
    if start and start.steps_range and steps < start.steps_range[0]:
        low, high = start.steps_range
        notes.append(f"{start.source.split(':')[0]} trains {lora_type} LoRAs for {low}–{high} steps; the repeats rule "
                     f"gives {steps} for {training} photos (raise train.repeats_per_image for a longer run)")
    return steps


def _schedule(choose: _Choices, steps: int) -> None:
    scheduler = choose("lr_scheduler", "cosine", tables.SCHEDULER_SOURCE)
    if scheduler in ("constant",):
        choose("warmup_steps", 0, "the constant schedule has no warmup")
    else:
        choose("warmup_steps", max(1, round(steps * tables.WARMUP_SHARE)),
               f"{round(tables.WARMUP_SHARE * 100)} % of the steps: the fresh adapter starts gently")


def _cadence(choose: _Choices, steps: int, device: DeviceInfo) -> None:
    every = max(10, _round_to(steps / tables.CHECKPOINTS_PER_RUN, 50 if steps >= 500 else 10))
    every = choose("checkpoint_every", every, f"about {tables.CHECKPOINTS_PER_RUN} checkpoints a run, to keep the best "
                   "(seed 002: 'I end up keeping a few')")
    choose("validate_every", max(1, every // 2), "twice a checkpoint: the validation loss curve")
    if device.kind == "cuda":
        choose("sample_every", every, "a picture at each checkpoint (seed 003: 'see progress frequently')")
    else:
        choose("sample_every", 0, f"off on {device.kind}: a sample costs a full generation there")


def _round_to(value: float, unit: int) -> int:
    return max(unit, int(round(value / unit)) * unit)


def dataset_warnings(lora_type: str, photos: int | None, resolution: int, sizes: dict[str, tuple[int, int]],
                     min_side_ratio: float, upscaler: str | None = None) -> list[str]:
    """The seeds' dataset size table, and the photos smaller than the training resolution."""
    out: list[str] = []
    size = tables.DATASET_SIZES.get(lora_type)
    if size and photos is not None:
        low, high = size.recommended
        if photos < size.minimum:
            out.append(f"{photos} photos: {_a(lora_type)} {lora_type} LoRA wants at least {size.minimum} ({low}–{high} recommended, "
                       f"{tables.DATASET_SOURCE}); with fewer it memorises these photos instead of learning the subject")
        elif photos > size.maximum:
            out.append(f"{photos} photos: beyond {size.maximum} {_a(lora_type)} {lora_type} LoRA gains little more "
                       f"({tables.DATASET_SOURCE}); keep the best {high} or so, training time grows with every photo")
    small = sorted((name for name, (w, h) in sizes.items() if min(w, h) < resolution), key=lambda n: min(sizes[n]))
    if small:
        shown = ", ".join(f"{n} ({sizes[n][0]}×{sizes[n][1]})" for n in small[:5])
        more = f" and {len(small) - 5} more" if len(small) > 5 else ""
        floor = int(min_side_ratio * resolution)
        if upscaler:
            fate = f"the upscaler {upscaler} (prep.upscaler) enlarges them, those below {floor} px too"
        else:
            fate = (f"prep upscales them (softer detail) or, below {floor} px, culls them; prep.upscaler = "
                    f"\"realesrgan\" enlarges them with a super-resolution model instead")
        out.append(f"{len(small)} photo(s) smaller than {resolution} px on the short side: {shown}{more}; {fate}")
    return out


def _a(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def available_text(plan: Plan) -> str:
    device = plan.device
    memory = f", {gib(device.memory_bytes)}" if device.memory_bytes else ""
    return f"{device.kind}: {device.name}{memory}" + (" (described, not found here)" if device.assumed else "")


__all__ = ["GB", "available_text", "dataset_warnings", "make_plan", "training_share"]
