"""The plan in words: what ``clood plan`` prints, and ``dogfood candy`` before it starts."""

from __future__ import annotations

from clood_candy.plan.build import available_text
from clood_candy.plan.memory import HEADROOM, gib
from clood_candy.plan.records import Plan

PART_NAMES = {"weights": "frozen weights", "adapter": "adapter", "gradients": "its gradients",
              "optimizer": "optimizer state", "activations": "activations",
              "weight copies": "half-precision weight copies", "workspace": "workspace", "runtime": "runtime"}


def render(plan: Plan) -> list[str]:
    photos = "an unknown number of photos" if plan.photos is None else f"{plan.photos} photos"
    trained = "" if plan.training_photos is None else f" ({plan.training_photos} to train on, the rest to validate)"
    if plan.training_photos is not None and plan.concepts is not None:
        trained = f" ({plan.training_photos} training images an epoch with the concepts' repeats; some photos validate)"
    lines = [f"Plan: {photos}{trained}, {plan.lora_type} LoRA on {plan.base} ({plan.family}), "
             f"{available_text(plan)}"]
    width = max(len(_short(c.key)) for c in plan.choices)
    for choice in plan.choices:
        if choice.set_by_user:  # the user's reasons are their own; the plan's alternative in short
            reason = "you set this" + ("" if choice.planned is None else f" (the plan: {_value(choice.planned)})")
        else:
            reason = choice.reason
        lines.append(f"  {_short(choice.key):<{width}}  {_value(choice.value):<9} {reason}")
    lines += _memory(plan)
    if plan.concepts is not None:
        shown = ", ".join(f"{c.trigger} {len(c.photos)} photo{'s' * (len(c.photos) != 1)} × {c.repeats} "
                          f"({100 * c.share:.0f} %)" for c in plan.concepts.concepts)
        rest = f"; {len(plan.concepts.unassigned)} in no concept" if plan.concepts.unassigned else ""
        lines.append(f"Concepts: {len(plan.concepts.concepts)} triggers, balanced by repeats: {shown}{rest}")
    if plan.fight is not None:
        fight = plan.fight
        ladder = " → ".join(f"{n} at {b}" for n, b in fight.rounds)
        lines.append(f"Config fight: {ladder} steps; {fight.cost} steps in all (budget {fight.limit}); {fight.reason}")
        if fight.rounds:
            last = fight.rounds[-1][1]
            steps = plan.value("train.defaults.steps")
            lines.append(f"  the winner continues from its step-{last} checkpoint to {steps}: "
                         f"{fight.cost + max(0, steps - last)} steps for fight and run together")
    if plan.pick is not None and plan.pick.enabled:
        pick = plan.pick
        rungs = (f", and {pick.rung_samples} more for the fight's rounds after the first (the sample judges decide "
                 "them: [train.fight] judge)") if pick.rung_samples else ""
        lines.append(f"Pick fight: {pick.candidates} candidate(s) × their prompts = {pick.samples} samples{rungs}, at "
                     f"{pick.sampler_steps} steps, about {pick.step_equivalents} training steps of compute "
                     f"({100 * pick.share:.0f} % of fight, run and pick)")
    lines += [f"Warning: {w}" for w in plan.warnings]
    lines += [f"Note: {n}" for n in plan.notes]
    return lines


def _value(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _short(key: str) -> str:
    return key.removeprefix("train.defaults.")


def _memory(plan: Plan) -> list[str]:
    memory = plan.memory
    if memory is None:
        return []
    parts = ", ".join(f"{PART_NAMES.get(k, k)} {gib(v)}" for k, v in memory.parts.items() if v)
    if memory.available is None:
        verdict = "no device memory to compare with"
    else:
        verdict = (f"fits in {gib(memory.available)}" if memory.fits else f"does NOT fit in {gib(memory.available)}") + \
            f" (using at most {int(HEADROOM * 100)} %)"
    lines = [f"Memory, estimated: {gib(memory.total)} at peak, {verdict}", f"  {parts}; {memory.how}"]
    if plan.remedies and plan.first_estimate is not None:
        lines.append(f"  as first planned: {gib(plan.first_estimate)}, too much; so, in order:")
    for remedy in plan.remedies:
        lines.append(f"  - {remedy.step}: {gib(remedy.total)}{'' if remedy.fits else ', still too much'}")
    return lines
