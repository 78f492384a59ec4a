"""The LoRA training loop, top to bottom.

1. Encode every photo once (VAE latents; with prep.buckets at its aspect bucket, see
   bucketed.py) and every distinct caption once (frozen text encoder), so a step only
   runs the UNet. With prior preservation, generate the class
   images once (kept in the run) and encode them too.
2. Add an adapter (LoRA, DoRA, LoHa or LoKr) to the layers a kohya LoRA trains: the UNet's
   transformer blocks (attention, feed-forward, proj_in/proj_out; ``targets = "attention"``
   for attention only) and, when they train, the text encoders' attention and MLP. Only it learns.
3. Each step: noise the latents at random timesteps, ask the UNet to predict the noise
   (or v), and nudge the adapter toward the right answer (step.py; in several processes
   under ``accelerate launch``, see distributed.py).
4. Every ``validate_every`` steps measure the error on held-out photos at FIXED noise and
   timesteps: unlike the per-step loss, that number is comparable from step to step.
5. Every ``checkpoint_every`` steps save everything needed to continue; calling again
   with a larger ``max_steps`` continues from the newest checkpoint.
6. Save the LoRA (kohya + diffusers files) and check it loads and works (saving.py).

Out of memory, a full disk or a NaN loss stop the run with a message saying what to
change; the last good checkpoint is kept and training again continues from it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from clood_candy.errors import UserError
from clood_candy.records import TrainConfig, TrainOutcome, TrainSet
from clood_candy.runstore import fingerprint
from clood_candy_plugins.sd import checkpoint as ckpt
from clood_candy_plugins.sd import bucketed, lora, recipe, saving
from clood_candy_plugins.sd.data import dataset_hash, step_seed
from clood_candy_plugins.sd.distributed import Processes
from clood_candy_plugins.sd.failures import (ProcessOutOfMemory, free_memory, guarded, is_disk_full, is_out_of_memory,
                                             out_of_memory_message)
from clood_candy_plugins.sd.prior import class_images
from clood_candy_plugins.sd.saving import Session
from clood_candy_plugins.sd.step import Stepper, TrainingStopped
from clood_candy_plugins.sd.trainlog import TrainLog

if TYPE_CHECKING:
    from clood_candy.context import StageContext
    from clood_candy_plugins.sd.base import SDBase

VAL_DRAWS = 8  # fixed (noise, timestep) pairs per validation photo


def train_lora(base: "SDBase", data: TrainSet, config: TrainConfig, out_dir: Path, ctx: "StageContext", *,
               max_steps: int | None = None, on_step: Callable[[int, float], None] | None = None) -> TrainOutcome:
    began = time.perf_counter()
    failed = lambda error: TrainOutcome(config=config, steps_done=0, error=error,  # noqa: E731
                                        seconds=round(time.perf_counter() - began, 3))
    try:
        return _train(base, data, config, out_dir, ctx, max_steps, on_step, began)
    except UserError as exc:  # a bad recipe fails this config, not the whole run
        return failed(str(exc))
    except Exception as exc:  # before the first step: encoding photos, class images, first validation
        if is_out_of_memory(exc):
            free_memory()
            return failed(out_of_memory_message(config, _resolution(base, data, config), base.device, None))
        if is_disk_full(exc):
            return failed(f"disk full before training started: {exc}")
        raise


def _resolution(base, data: TrainSet, config: TrainConfig) -> int:
    return config.resolution or data.resolution or base.resolution


def _train(base, data, config, out_dir, ctx, max_steps, on_step, began) -> TrainOutcome:
    recipe.check_recipe(config, data)
    target = min(max_steps or config.steps, config.steps)
    if max_steps and max_steps > config.steps:
        ctx.log.warning("max_steps %d exceeds the config's %d steps; stopping at %d", max_steps, config.steps, target)
    out_dir.mkdir(parents=True, exist_ok=True)
    resolution = _resolution(base, data, config)
    processes = Processes(base.device)
    # Several processes make a step see batch_size × processes photos: another run, whose
    # checkpoints a different process count must not continue.
    identity = fingerprint(config.model_dump(mode="json"), base.base, resolution, dataset_hash(data.train),
                           *([processes.count] if processes.count > 1 else []), *bucketed.identity_parts(data))
    s = Session(base=base, data=data, config=config, out_dir=out_dir, ctx=ctx, processes=processes, target=target,
                resolution=resolution, prediction_type=config.prediction_type or base.prediction_type, identity=identity,
                began=began)
    if not data.validation:
        ctx.log.warning("no validation photos: validation loss is measured on the training photos")
    done = saving.finished_outcome(out_dir, s.identity, target)
    if done is not None:
        return done

    # 1. Encode once: latents for every photo, conditioning for every caption seen as-is.
    train_latents = bucketed.latents_for(base, data.train, resolution, data.buckets)
    if config.prior_preservation:
        s.prior = class_images(base, data, config, resolution, ctx, s.processes)
    with base.lock:
        # 2. The adapter: the only weights that learn. Its random init comes from the
        # recipe's seed, not from whatever the process drew before. Files loaded for
        # sampling come off first (they load again when next sampled).
        base.adapters.clear()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(step_seed(config.seed, 0))
            params = lora.attach(base.pipe, config, base.adapter_targets(config))
        try:
            optimizer = recipe.make_optimizer(config, base.pipe)
            lr_scheduler = recipe.make_lr_scheduler(config, optimizer)
            start = _resume(s, optimizer, lr_scheduler)
            # Lines past the resumed step belong to a run that went further or died: redo them.
            log = TrainLog(out_dir, keep_through=start if start < target and s.processes.is_main else None,
                           tensorboard=bool(ctx.options("sd").get("tensorboard", True)))
            try:
                return _loop(s, params, optimizer, lr_scheduler, train_latents, start, log, on_step)
            finally:
                log.close()
        finally:
            base.denoiser.eval()
            if config.gradient_checkpointing:
                base.denoiser.disable_gradient_checkpointing()
            lora.detach(base.pipe, config)


def _validation(s: Session):
    """The validation loss at fixed noise and timesteps, each process measuring its share."""
    validation = s.data.validation or s.data.train  # no held-out photos: measure on the training ones
    latents = bucketed.latents_for(s.base, validation, s.resolution, s.data.buckets)
    captions = [i.caption for i in validation]
    objective = s.base.objective(s.prediction_type)

    @torch.no_grad()
    def my_errors() -> torch.Tensor:
        mine = s.processes.mine(len(validation))
        cond = (s.base.encode_text([captions[i] for i in mine], s.resolution) if s.config.train_text_encoder
                else s.base.cond([captions[i] for i in mine], s.resolution))
        errors = torch.zeros(len(validation))
        if mine:
            errors[mine] = objective.errors(s.base.denoiser, latents[mine], cond.to("cpu", torch.float32),
                                            seed=s.ctx.config.seed, draws=VAL_DRAWS)
        return errors

    def val_loss() -> float:
        errors, failed = guarded(my_errors)
        errors, failed = s.processes.sum(torch.zeros(len(validation)) if errors is None else errors, failed)
        if failed:
            raise ProcessOutOfMemory("out of memory during validation")
        return float(errors.mean())

    return val_loss


def _loop(s: Session, params, optimizer, lr_scheduler, train_latents, start: int, log: TrainLog, on_step) -> TrainOutcome:
    config, model, main, history = s.config, s.base.denoiser, s.processes.is_main, s.history
    val_loss = _validation(s)
    if start == 0:
        history["val_loss"].append((0, val_loss()))
        if main:
            log.write(step=0, loss=None, val_loss=history["val_loss"][-1][1], lr=recipe.current_lr(optimizer),
                      seconds=s.elapsed())
    device = s.base.device
    stepper = Stepper(base=s.base, data=s.data, config=config, latents=train_latents, params=params,
                      objective=s.base.objective(s.prediction_type),
                      model=torch.compile(model) if config.compile else model, resolution=s.resolution, autocast=recipe.autocast_for(config, device),
                      scaler=(torch.amp.GradScaler("cuda") if config.mixed_precision == "fp16" and device.type == "cuda"
                              else None), processes=s.processes, prior=s.prior)
    if config.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    model.train()
    last_saved, error = start, None
    # A caller that follows progress through on_step shows its own bar; other processes none.
    bar = (s.ctx.progress.task(f"Training {config.name}", total=s.target - start) if on_step is None and main
           else nullcontext(lambda n=1, note="": None))
    with bar as advance:
        for step in range(start + 1, s.target + 1):
            try:
                # 3. One optimizer step (over gradient_accumulation micro-batches and processes).
                loss = stepper.step(step)
                recipe.update(params, optimizer, lr_scheduler, stepper.scaler)
                history["train_loss"].append((step, loss))
                # 4. Validation at fixed noise: the number that shows learning.
                val = None
                if step % config.validate_every == 0 or step == s.target:
                    model.eval()
                    val = val_loss()
                    model.train()
                    if not math.isfinite(val):  # the step's update broke the adapter: keep the checkpoint before it
                        raise TrainingStopped(f"validation loss became {val} at step {step} "
                                              f"(learning rate {config.learning_rate} too high?)")
                    history["val_loss"].append((step, val))
                sample = _sample_together(s, step) if config.sample_every and step % config.sample_every == 0 else None
                if main:
                    log.write(step=step, loss=loss, val_loss=val, lr=recipe.current_lr(optimizer), seconds=s.elapsed(),
                              **({"sample": sample} if sample else {}))
                advance(1, note=f"loss {loss:.4f}" + (f" · val {val:.4f}" if val is not None else ""))
                if on_step:
                    on_step(step, loss)
                # 5. Checkpoints: everything needed to continue from here.
                if step % config.checkpoint_every == 0 or step == s.target:
                    model.eval()
                    problem = s.processes.from_main(_save_checkpoint(s, step, optimizer, lr_scheduler) if main else None)
                    model.train()
                    if problem:
                        raise TrainingStopped(problem)
                    last_saved = step
            except TrainingStopped as stop:
                error = str(stop)
            except Exception as exc:  # out of memory in validation or a sample, here or in another process
                if not is_out_of_memory(exc):
                    raise
                free_memory()
                error = out_of_memory_message(config, s.resolution, device, step)
            if error is not None:
                error = _with_checkpoint(error, last_saved)
                if main:
                    log.write(step=step, loss=None, val_loss=None, lr=recipe.current_lr(optimizer), seconds=s.elapsed(),
                              error=error)
                break
    model.eval()
    if error is not None:
        return saving.outcome(s, last_saved, error=error)
    # 6. The final LoRA, verified before it is handed on; every process returns the main one's.
    final, failed = guarded(lambda: saving.finish(s)) if main else (None, False)
    if failed:  # verifying the final LoRA runs the model once more
        error = out_of_memory_message(config, s.resolution, device, None, "saving the final LoRA")
        final = saving.outcome(s, last_saved, error=_with_checkpoint(error, last_saved))
    if s.processes.count == 1:
        return final
    return TrainOutcome.model_validate(s.processes.from_main(final.model_dump(mode="json") if main else None))


def _resume(s: Session, optimizer, lr_scheduler) -> int:
    """Continue from the newest checkpoint of this same recipe at or before the target."""
    usable = [c for c in ckpt.checkpoints(s.out_dir) if c.step <= s.target and c.meta().get("identity") == s.identity]
    if not usable:
        return 0
    latest = usable[-1]
    adapter, state = ckpt.load(latest)
    lora.load_adapter_state(s.base.pipe, s.config, adapter)
    optimizer.load_state_dict(state["optimizer"])
    lr_scheduler.load_state_dict(state["lr_scheduler"])
    ckpt.restore_rng(state["rng"])
    meta = latest.meta()
    s.history = {k: [tuple(x) for x in meta["history"][k]] for k in ("train_loss", "val_loss")}
    s.prior_seconds = float(meta.get("seconds", 0.0))
    return latest.step


def _with_checkpoint(error: str, last_saved: int) -> str:
    """Why training stopped, and which checkpoint training again will continue from."""
    kept = f"kept the last good checkpoint (step {last_saved})" if last_saved else "no checkpoint was saved before it"
    return f"{error}; {kept}"


def _sample_together(s: Session, step: int) -> str | None:
    """The main process's sample; running out of memory there stops every process here."""
    sample, failed = guarded(lambda: _sample(s, step)) if s.processes.is_main else (None, False)
    if s.processes.any_failed(failed):
        raise ProcessOutOfMemory(f"out of memory drawing the step-{step} sample")
    return sample


def _save_checkpoint(s: Session, step: int, optimizer, lr_scheduler) -> str | None:
    """Main process: the checkpoint, or a message the others also stop on (disk full, memory)."""
    problem, failed = guarded(lambda: saving.save_checkpoint(s, step, optimizer, lr_scheduler))
    return out_of_memory_message(s.config, s.resolution, s.base.device, step) if failed else problem


def _sample(s: Session, step: int) -> str:
    """A picture with the adapter as it is at this step (the training adapter is active)."""
    prompt = f"a photo of {s.data.trigger} {s.data.class_word}"
    s.base.denoiser.eval()
    with torch.no_grad():
        image = s.base.draw(prompt, seed=s.config.seed)
    s.base.denoiser.train()
    path = s.out_dir / "samples" / f"step-{step}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return s.rel(path)
