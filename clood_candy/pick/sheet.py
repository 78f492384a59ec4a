"""The pick fight's samples: which LoRAs are candidates, which prompts test them, and the
images, made with fixed seeds so every difference between two candidates is theirs.

Two prompt sets (seed 003: "sample prompts are test prompts… intentionally different from
training captions"): the captions of photos training never saw, which subject fidelity
compares with those photos, and novel prompts that put the trigger somewhere the photos
never were (a new background, arrangement, light), which ask whether the LoRA still obeys."""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

from clood_candy import fsutil
from clood_candy.config import PickSettings
from clood_candy.context import StageContext
from clood_candy.records import PickCandidate, PickImage, PickPrompt, PickSheet
from clood_candy.records import TrainOutcome, TrainSet

# What a photographer's jellybean shoot rarely has, by kind: the first of each whose words
# the captions never use becomes a novel prompt.
NOVEL = {
    "background": ["on a sandy beach", "on fresh snow", "on green grass", "on a blue ceramic plate",
                   "on a red velvet cushion"],
    "arrangement": ["piled in a glass jar", "arranged in a heart shape", "a single bean standing alone",
                    "in a spiral"],
    "light": ["at sunset, golden light", "under purple neon light", "by candlelight"],
}
STOP = {"a", "an", "on", "in", "at", "by", "the", "of", "under", "and", "fresh", "single", "standing", "light"}


def candidates(ctx: StageContext, outcome: TrainOutcome, settings: PickSettings) -> list[PickCandidate]:
    """The config's verified checkpoints and its final LoRA, at most ``max_candidates`` spread
    evenly over the run (the final one always among them), at each of ``settings.weights``."""
    by_step: dict[int, str] = {}
    for path in outcome.checkpoints:
        step = _step_of(path)
        if step is not None and _verified(ctx.run.path(path)):
            by_step[step] = path
    if outcome.lora:
        by_step[outcome.steps_done] = outcome.lora  # the final file (the same weights as its checkpoint)
    steps = sorted(by_step)
    if len(steps) > settings.max_candidates:
        last = len(steps) - 1
        keep = sorted({round(i * last / (settings.max_candidates - 1)) for i in range(settings.max_candidates)})
        steps = [steps[i] for i in keep]
    found = []
    for step in steps:
        for weight in settings.weights:
            name = f"{slug(outcome.config.name)}-step{step}" + ("" if weight == 1 else f"-w{weight:g}")
            found.append(PickCandidate(name=name, config=outcome.config.name, step=step, lora=by_step[step],
                                       weight=weight, val_loss=_val_loss_at(outcome, step),
                                       final=step == outcome.steps_done))
    return found


def prompts(data: TrainSet, settings: PickSettings) -> list[PickPrompt]:
    found = [PickPrompt(text=item.caption, kind="held-out", photo=item.image)
             for item in data.validation[:settings.held_out_prompts]]
    vocabulary = {w for item in data.train + data.validation for w in re.findall(r"[a-z]+", item.caption.lower())}
    head = ", ".join(w for w in (data.trigger, data.class_word) if w)
    novel = []
    for kind, phrases in NOVEL.items():
        for phrase in phrases:
            if not vocabulary & (set(re.findall(r"[a-z]+", phrase)) - STOP):
                novel.append(PickPrompt(text=f"{head}, {phrase}", kind="novel", change=f"{kind}: {phrase}"))
                break
    return found + novel[:settings.novel_prompts]


def make_sheet(ctx: StageContext, data: TrainSet, outcome: TrainOutcome | None, settings: PickSettings,
               found: list[PickCandidate] | None = None, out: Path | None = None) -> PickSheet:
    """Render every candidate × prompt × seed under ``out`` (RUN/train/pick/); an image made
    before from the same file, prompt, seed and settings is kept (a resumed run samples
    nothing twice)."""
    found = found if found is not None else candidates(ctx, outcome, settings)  # the caller's, when it has them
    tests = prompts(data, settings)
    out = out or ctx.run.path("train", "pick")
    family, base = ctx.family(), ctx.base()
    made = _earlier(out)
    images, failures = [], []
    started = time.perf_counter()
    steps, settings_guidance = ctx.config.sample.steps, ctx.config.sample.guidance_scale
    with ctx.progress.task("Sampling the candidates", total=len(found) * len(tests) * len(settings.seeds)) as advance:
        for cand in found:
            digest = _digest(ctx.run.path(cand.lora))
            for p, prompt in enumerate(tests):
                for seed in settings.seeds:
                    path = out / cand.name / f"p{p + 1}-seed{seed}.png"
                    key = f"{digest}|{cand.weight}|{prompt.text}|{seed}|{steps}|{ctx.config.sample.negative_prompt}" + (
                        "" if settings_guidance is None else f"|{settings_guidance}")
                    if made.get(ctx.run.rel(path)) != key or not path.is_file():
                        try:
                            image = family.generate(base, prompt.text, seed=seed, lora=ctx.run.path(cand.lora),
                                                    weight=cand.weight, steps=steps,
                                                    negative_prompt=ctx.config.sample.negative_prompt,
                                                    guidance=settings_guidance)
                        except Exception as exc:  # one candidate's failure costs its cells only
                            ctx.log.exception("sampling %s failed", path.name)
                            failures.append(f"{cand.name} p{p + 1} seed {seed}: {type(exc).__name__}: {exc}")
                            advance(note="failed")
                            continue
                        path.parent.mkdir(parents=True, exist_ok=True)
                        image.save(path)
                    made[ctx.run.rel(path)] = key
                    images.append(PickImage(candidate=cand.name, prompt=p, seed=seed, image=ctx.run.rel(path)))
                    advance(note=cand.name)
    fsutil.write_json(out / "made.json", made)
    return PickSheet(candidates=found, prompts=tests, seeds=list(settings.seeds), images=images,
                     held_out=[i.image for i in data.validation], training=sorted({i.image for i in data.train}),
                     trigger=data.trigger, class_word=data.class_word, failures=failures,
                     seconds=round(time.perf_counter() - started, 3))


def _earlier(out: Path) -> dict[str, str]:
    path = out / "made.json"
    return fsutil.read_json(path) if path.is_file() else {}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _step_of(path: str) -> int | None:
    match = re.search(r"step-(\d+)", Path(path).parent.name) or re.search(r"step-(\d+)", Path(path).stem)
    return int(match.group(1)) if match else None


def _verified(lora: Path) -> bool:
    """A checkpoint whose save verification failed is never a candidate."""
    meta = lora.parent / "meta.json"
    return lora.is_file() and (not meta.is_file() or fsutil.read_json(meta).get("verification_ok") is not False)


def _val_loss_at(outcome: TrainOutcome, step: int) -> float | None:
    before = [loss for at, loss in outcome.val_loss if at <= step]
    return before[-1] if before else None


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "lora"
