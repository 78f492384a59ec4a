"""The run's doctor: seed 004's troubleshooting table ("訓練失敗排錯表") as checks a run
performs on itself. Each symptom that is present is named with its evidence from this run
and the seed's fix as a concrete setting. Reads only the run folder (losses, the pick fight,
captions, samples), so ``clood runs`` and the report can ask it at any time; RUN/doctor.json
keeps its last answer.

What it can see: loss curves (training: noisy by nature, every step draws new noise and a
new timestep; validation: fixed noise, the fair one), the pick fight's judges, the captions,
and the samples at weight 0 (the base alone) beside weight 1. What it cannot: a symptom
whose evidence is missing is not claimed, and the check says what it lacked."""

from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import median
from typing import Literal

import numpy as np
from PIL import Image

from clood_candy import fsutil
from clood_candy.records import ConfigFightResult, Record, SampleSet, TrainOutcome

DOCTOR = "doctor.json"
Name = Literal["loss-not-falling", "loss-oscillating", "overfitting", "underfitting", "out-of-memory", "colour-cast"]


class Symptom(Record):
    name: Name
    title: str  # the seed's symptom, in the user's words
    evidence: str  # from this run: figures and steps
    cause: str  # the seed's likely cause
    fix: str  # a concrete setting for next time


class Diagnosis(Record):
    symptoms: list[Symptom]
    checked: list[str]  # the checks that had what they needed
    skipped: dict[str, str]  # check → what it lacked


class Run:
    """What the checks read, each loaded once."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.outcome = self._record("train/outcome.json", TrainOutcome)
        self.fight = self._record("train/fight.json", ConfigFightResult)
        self.samples = self._record("samples/samples.json", SampleSet)
        state = self._json("run.json") or {}
        self.trigger = (state.get("config") or {}).get("trigger", "")
        self.failures = [state.get("stages", {}).get(s, {}).get("error") or "" for s in ("train",)]

    def _json(self, rel: str):
        path = self.root / rel
        try:
            return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        except (OSError, ValueError):
            return None

    def _record(self, rel: str, model):
        data = self._json(rel)
        try:
            return model.model_validate(data) if data is not None else None
        except ValueError:
            return None

    def captions(self) -> list[str]:
        meta = self.root / "dataset" / "metadata.jsonl"
        if not meta.is_file():
            return []
        return [json.loads(line)["text"] for line in meta.read_text(encoding="utf-8").splitlines() if line.strip()]

    def dataset_images(self) -> list[Path]:
        folder = self.root / "dataset"
        return sorted(p for p in folder.glob("*.png")) if folder.is_dir() else []


def _means(values: list[float]) -> tuple[float, float]:
    """Mean of the first and of the last quarter: the trend under the per-step noise."""
    q = max(1, len(values) // 4)
    return float(np.mean(values[:q])), float(np.mean(values[-q:]))


def loss_not_falling(run: Run) -> Symptom | None:
    o = run.outcome
    train = [v for _, v in o.train_loss if math.isfinite(v)]
    if len(train) < 8:
        raise LookupError("fewer than 8 training steps logged")
    first, last = _means(train)
    vals = [v for _, v in o.val_loss if math.isfinite(v)]
    val_drop = (vals[0] - min(vals)) / vals[0] if len(vals) > 1 and vals[0] > 0 else None
    train_drop = (first - last) / first if first > 0 else 0.0
    # The validation loss (fixed noise) decides when there is one: the training loss of a few
    # dozen steps moves by more than 3 % on its noise alone.
    if (val_drop is not None and val_drop >= 0.01) or (val_drop is None and train_drop >= 0.03):
        return None
    lr = o.config.learning_rate
    val = f"; validation {vals[0]:.4f} → best {min(vals):.4f} ({-100 * val_drop:+.1f} %)" if val_drop is not None else ""
    return Symptom(name="loss-not-falling", title="Loss not falling",
                   evidence=f"training loss {first:.4f} (first quarter) → {last:.4f} (last quarter), "
                            f"{-100 * train_drop:+.1f} % over {o.steps_done} steps{val}",
                   cause="learning rate too low, or poor data (captions that do not describe the photos)",
                   fix=f"learning_rate = {lr * 3:g} (was {lr:g}; the seeds start SD LoRAs at 1e-4), and read the "
                       "captions over")


def loss_oscillating(run: Run) -> Symptom | None:
    o = run.outcome
    losses = [(s, v) for s, v in o.train_loss]
    if len(losses) < 8:
        raise LookupError("fewer than 8 training steps logged")
    bad = [(s, v) for s, v in losses if not math.isfinite(v)]
    spikes = []
    for i in range(5, len(losses)):
        window = [v for _, v in losses[max(0, i - 20):i] if math.isfinite(v)]
        if window and math.isfinite(losses[i][1]) and losses[i][1] > 3 * median(window):
            spikes.append(losses[i])
    lr, accumulation = o.config.learning_rate, o.config.gradient_accumulation
    stopped = [t for t in [o.error or "", *(run.fight.failures.values() if run.fight else [])]
               if "nan" in t.lower().split() or " inf" in t.lower() or "diverged" in t.lower()]
    if stopped:
        evidence = f"training stopped: {stopped[0].splitlines()[0][:200]}"
    elif bad:
        evidence = f"the loss became {bad[0][1]} at step {bad[0][0]} ({len(bad)} such steps): training diverged"
    elif len(spikes) >= max(2, len(losses) // 50):
        step, value = max(spikes, key=lambda sv: sv[1])
        evidence = (f"{len(spikes)} steps jumped above 3× the running median of the 20 before "
                    f"(largest {value:.3f} at step {step})")
    else:
        return None
    return Symptom(name="loss-oscillating", title="Loss oscillating", evidence=evidence,
                   cause="learning rate too high, or batch too small",
                   fix=f"learning_rate = {lr / 3:g} (was {lr:g}), or gradient_accumulation = {accumulation * 2} "
                       f"(was {accumulation})")


def overfitting(run: Run) -> Symptom | None:
    o = run.outcome
    vals = [(s, v) for s, v in o.val_loss if math.isfinite(v)]
    flagged = run.fight.pick.flags if run.fight and run.fight.pick else {}
    if len(vals) < 3 and not flagged:
        raise LookupError("fewer than 3 validation measurements and no pick fight")
    picked = run.fight.pick.winner if run.fight and run.fight.pick else None
    parts = []
    if len(vals) >= 3:
        best_step, best = min(vals, key=lambda sv: sv[1])
        end_step, end = vals[-1]
        train = [(s, v) for s, v in o.train_loss if math.isfinite(v)]
        before = [v for s, v in train if s <= best_step][-20:]
        after = [v for s, v in train if s > best_step][-20:]
        if end > best * 1.05 and before and after and np.mean(after) < np.mean(before):
            parts.append(f"validation loss rose from {best:.4f} at step {best_step} to {end:.4f} at step {end_step} "
                         "while the training loss fell")
    if flagged:
        parts.append("the memorisation judge flagged " + ", ".join(flagged))
    if not parts:
        return None
    best_step = min(vals, key=lambda sv: sv[1])[0] if vals else o.steps_done // 2
    rank = o.config.rank
    chose = f"; the pick chose {picked}" if picked else ""
    return Symptom(name="overfitting", title="Overfitting (outputs copy the training photos)",
                   evidence="; ".join(parts) + chose,
                   cause="trained too long, too few photos, or rank too high",
                   fix=f"steps = {max(1, best_step)} (was {o.config.steps}), or rank = {max(1, rank // 2)} (was {rank}); "
                       "more photos, or regularisation images (class_prompt with num_class_images)")


def underfitting(run: Run) -> Symptom | None:
    captions, trigger, o = run.captions(), run.trigger, run.outcome
    effect = _lora_effect(run)
    if not captions and effect is None:
        raise LookupError("no captions and no samples at weight 0 and 1")
    parts = []
    missing = [c for c in captions if trigger and trigger.lower() not in c.lower().replace(",", " ").split()]
    if missing:
        parts.append(f"{len(missing)} of {len(captions)} captions lack the trigger '{trigger}' "
                     f"(first: '{missing[0][:60]}')")
    if effect is not None and effect < 2.0:
        parts.append(f"the samples at weight 1 differ from the base alone by {effect:.2f} of 255 per pixel on average")
    if not parts:
        return None
    return Symptom(name="underfitting", title="Underfitting (the trigger word has no effect)",
                   evidence="; ".join(parts), cause="too little training, or a trigger missing from the captions",
                   fix=(f"steps = {o.config.steps * 2} (was {o.config.steps})" if o else "more steps")
                   + (f"; put '{trigger}' first in every caption" if missing else ""))


def out_of_memory(run: Run) -> Symptom | None:
    """A stage, the final training or a fight config that failed for want of memory."""
    found = [(t, run.outcome.config if run.outcome else None) for t in run.failures]
    if run.outcome and run.outcome.error:
        found.append((run.outcome.error, run.outcome.config))
    if run.fight:
        configs = {c.name: c for c in run.fight.configs}
        found.extend((why, configs.get(name)) for name, why in run.fight.failures.items())
    hit = next(((t, c) for t, c in found if t and ("out of memory" in t.lower() or "outofmemoryerror" in t.lower())),
               None)
    if hit is None:
        return None
    text, c = hit
    setting = (f"batch_size = 1 (was {c.batch_size}), gradient_checkpointing = true, "
               f"rank = {max(1, c.rank // 2)} (was {c.rank})"
               if c else "batch_size = 1, gradient_checkpointing = true, a lower rank")
    return Symptom(name="out-of-memory", title="Out of memory (CUDA OOM)", evidence=text.splitlines()[0][:240],
                   cause="not enough GPU memory for this batch, rank and resolution", fix=setting)


def colour_cast(run: Run) -> Symptom | None:
    """The LoRA's samples lean one colour, and so do the photos it learned from."""
    if run.samples is None:
        raise LookupError("no samples")
    photos = run.dataset_images()
    lora = [run.root / i.image for i in run.samples.images if i.weight == 1.0]
    base = [run.root / i.image for i in run.samples.images if i.weight == 0.0]
    if not photos or not lora or not base:
        raise LookupError("no samples at weight 0 and 1, or no dataset photos")
    shot, drawn, alone = _tint(photos), _tint(lora), _tint(base)
    moved = drawn - alone  # what the LoRA added to the base's colour
    if np.linalg.norm(moved) < 0.05 or np.linalg.norm(shot) < 0.04 or moved @ shot / (
            np.linalg.norm(moved) * np.linalg.norm(shot)) < 0.7:
        return None
    return Symptom(name="colour-cast", title="Colour cast in the generated images",
                   evidence=f"the LoRA moves the samples' mean colour {_words(moved)} ({np.linalg.norm(moved):.2f}), "
                            f"the way your photos lean ({_words(shot)}, {np.linalg.norm(shot):.2f})",
                   cause="the training photos' colours are biased (one light, one background)",
                   fix="add photos under other light (daylight, shade) and on neutral backgrounds, or white-balance "
                       "the photos before training")


def _tint(paths: list[Path]) -> np.ndarray:
    """Mean opponent colour (red−green, yellow−blue) of the images, in sRGB units 0..1."""
    found = []
    for path in paths[:64]:
        try:
            with Image.open(path) as im:
                rgb = np.asarray(im.convert("RGB").resize((32, 32)), np.float32) / 255.0
        except OSError:
            continue
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        found.append([float((r - g).mean()), float(((r + g) / 2 - b).mean())])
    return np.mean(found, axis=0) if found else np.zeros(2)


def _words(v: np.ndarray) -> str:
    return " and ".join(w for w, x in (("redder" if v[0] > 0 else "greener", v[0]),
                                       ("yellower" if v[1] > 0 else "bluer", v[1])) if abs(x) >= 0.02) or "slightly"


def _lora_effect(run: Run) -> float | None:
    """Mean absolute pixel change (0..255) from weight 0 to weight 1, same prompt and seed."""
    if run.samples is None:
        return None
    by = {(i.prompt, i.seed, i.weight, i.checkpoint): i for i in run.samples.images}
    diffs = []
    for (prompt, seed, weight, ckpt), one in by.items():
        zero = next((z for (p, s, w, _), z in by.items() if (p, s, w) == (prompt, seed, 0.0)), None)
        if weight != 1.0 or zero is None or ckpt == "base":
            continue
        try:
            with Image.open(run.root / one.image) as a, Image.open(run.root / zero.image) as b:
                diffs.append(float(np.abs(np.asarray(a.convert("RGB"), np.float32)
                                          - np.asarray(b.convert("RGB").resize(a.size), np.float32)).mean()))
        except OSError:
            continue
    return float(np.mean(diffs)) if diffs else None


CHECKS = {"loss-not-falling": loss_not_falling, "loss-oscillating": loss_oscillating, "overfitting": overfitting,
          "underfitting": underfitting, "out-of-memory": out_of_memory, "colour-cast": colour_cast}
NEEDS_OUTCOME = {"loss-not-falling", "loss-oscillating", "overfitting"}


def diagnose(root: Path, write: bool = True) -> Diagnosis:
    run = Run(root)
    symptoms, checked, skipped = [], [], {}
    for name, check in CHECKS.items():
        if name in NEEDS_OUTCOME and run.outcome is None:
            skipped[name] = "no train/outcome.json"
            continue
        try:
            found = check(run)
        except LookupError as lack:
            skipped[name] = str(lack)
            continue
        checked.append(name)
        if found is not None:
            symptoms.append(found)
    result = Diagnosis(symptoms=symptoms, checked=checked, skipped=skipped)
    if write:
        fsutil.write_json(Path(root) / DOCTOR, result)
    return result
