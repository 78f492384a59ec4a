"""The LoRA training loop, top to bottom.

1. Encode every photo once (VAE latents) and every distinct caption once (frozen text
   encoder), so a step only runs the UNet.
2. Add an adapter (LoRA, DoRA, LoHa or LoKr) to the UNet's attention; only it learns.
3. Each step: noise the latents at random timesteps, ask the UNet to predict the noise
   (or v), and nudge the adapter toward the right answer.
4. Every ``validate_every`` steps measure the error on held-out photos at FIXED noise and
   timesteps: unlike the per-step loss, that number is comparable from step to step.
5. Every ``checkpoint_every`` steps save everything needed to continue; calling again
   with a larger ``max_steps`` continues from the newest checkpoint.
6. Save the LoRA (kohya + diffusers files) and check it loads and works.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from clood_candy import fsutil
from clood_candy.errors import UserError
from clood_candy.records import TrainConfig, TrainOutcome, TrainSet
from clood_candy.runstore import fingerprint
from clood_candy_plugins.sd import checkpoint as ckpt
from clood_candy_plugins.sd import lora, recipe
from clood_candy_plugins.sd.data import (
    batch_indices,
    dataset_hash,
    describe_data,
    step_generator,
    step_seed,
    vary_caption,
)
from clood_candy_plugins.sd.denoise import denoising_errors, encode_text, predict
from clood_candy_plugins.sd.metadata import lora_metadata
from clood_candy_plugins.sd.verify import problem, verify_lora

if TYPE_CHECKING:
    from clood_candy.context import StageContext
    from clood_candy_plugins.sd.base import SDBase

VAL_DRAWS = 8  # fixed (noise, timestep) pairs per validation photo


class TrainingStopped(Exception):
    """The loss went NaN/inf: stop, keep the last good checkpoint, report."""


def train_lora(base: "SDBase", data: TrainSet, config: TrainConfig, out_dir: Path, ctx: "StageContext", *,
               max_steps: int | None = None, on_step: Callable[[int, float], None] | None = None) -> TrainOutcome:
    began = time.perf_counter()
    try:
        return _train(base, data, config, out_dir, ctx, max_steps, on_step, began)
    except UserError as exc:  # a bad recipe fails this config, not the whole run
        return TrainOutcome(config=config, steps_done=0, error=str(exc), seconds=round(time.perf_counter() - began, 3))


def _train(base, data, config, out_dir, ctx, max_steps, on_step, began) -> TrainOutcome:
    recipe.check_recipe(config, data)
    target = min(max_steps or config.steps, config.steps)
    if max_steps and max_steps > config.steps:
        ctx.log.warning("max_steps %d exceeds the config's %d steps; stopping at %d", max_steps, config.steps, target)
    out_dir.mkdir(parents=True, exist_ok=True)
    resolution = config.resolution or data.resolution or base.resolution
    prediction_type = config.prediction_type or base.prediction_type
    scheduler = base.noise_scheduler(prediction_type)
    pipe, device = base.pipe, base.device
    identity = fingerprint(config.model_dump(mode="json"), base.base, resolution, dataset_hash(data.train))
    validation = data.validation or data.train  # no held-out photos: say so, measure on the training ones
    if not data.validation:
        ctx.log.warning("no validation photos: validation loss is measured on the training photos")

    done = _finished_outcome(out_dir, identity, target)
    if done is not None:
        return done

    # 1. Encode once: latents for every photo, conditioning for every caption seen as-is.
    train_latents = base.latents([Path(i.image) for i in data.train], resolution)
    val_latents = base.latents([Path(i.image) for i in validation], resolution)
    val_captions = [i.caption for i in validation]

    with base.lock:
        # 2. The adapter: the only weights that learn. Its random init comes from the
        # recipe's seed, not from whatever the process drew before.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(step_seed(config.seed, 0))
            params = lora.attach(pipe, config)
        try:
            optimizer = recipe.make_optimizer(config, pipe)
            lr_scheduler = recipe.make_lr_scheduler(config, optimizer)
            history, start, prior_seconds = _resume(out_dir, identity, target, pipe, config, optimizer, lr_scheduler)
            # Lines past the resumed step belong to a run that went further or died: redo them.
            log = ckpt.TrainLog(out_dir / "log.jsonl", keep_through=start if start < target else None)

            @torch.no_grad()
            def val_loss() -> float:
                cond = (encode_text(pipe, val_captions, resolution) if config.train_text_encoder
                        else base.cond(val_captions, resolution))
                errors = denoising_errors(pipe.unet, scheduler, val_latents, cond.to("cpu", torch.float32),
                                          seed=ctx.config.seed, draws=VAL_DRAWS, prediction_type=prediction_type)
                return float(errors.mean())

            elapsed = lambda: round(prior_seconds + time.perf_counter() - began, 3)  # noqa: E731
            if start == 0:
                history["val_loss"].append((0, val_loss()))
                log.write(step=0, loss=None, val_loss=history["val_loss"][-1][1], lr=recipe.current_lr(optimizer), seconds=elapsed())

            unet_forward = torch.compile(pipe.unet) if config.compile else pipe.unet
            if config.gradient_checkpointing:
                pipe.unet.enable_gradient_checkpointing()
            pipe.unet.train()
            autocast = recipe.autocast_for(config, device)
            scaler = torch.amp.GradScaler("cuda") if config.mixed_precision == "fp16" and device.type == "cuda" else None
            last_saved, error = start, None
            # A caller that follows progress through on_step shows its own bar.
            bar = ctx.progress.task(f"Training {config.name}", total=target - start) if on_step is None else nullcontext(
                lambda n=1, note="": None)
            with bar as advance:
                for step in range(start + 1, target + 1):
                    # 3. One optimizer step (over gradient_accumulation micro-batches).
                    try:
                        loss = _one_step(base, data, config, step, train_latents, scheduler, unet_forward,
                                         prediction_type, resolution, autocast, scaler, device)
                    except TrainingStopped as stop:
                        kept = (f"kept the last good checkpoint (step {last_saved})" if last_saved
                                else "no checkpoint was saved before it")
                        error = f"{stop}; {kept}"
                        log.write(step=step, loss=None, val_loss=None, lr=recipe.current_lr(optimizer), seconds=elapsed(),
                                  error=str(stop))
                        break
                    recipe.update(params, optimizer, lr_scheduler, scaler)
                    history["train_loss"].append((step, loss))

                    # 4. Validation at fixed noise: the number that shows learning.
                    val = None
                    if step % config.validate_every == 0 or step == target:
                        pipe.unet.eval()
                        val = val_loss()
                        pipe.unet.train()
                        history["val_loss"].append((step, val))
                    sample = _sample(base, data, config, out_dir, step, ctx) if (
                        config.sample_every and step % config.sample_every == 0) else None
                    log.write(step=step, loss=loss, val_loss=val, lr=recipe.current_lr(optimizer), seconds=elapsed(),
                              **({"sample": sample} if sample else {}))
                    advance(1, note=f"loss {loss:.4f}" + (f" · val {val:.4f}" if val is not None else ""))
                    if on_step:
                        on_step(step, loss)

                    # 5. Checkpoints: everything needed to continue from here.
                    if step % config.checkpoint_every == 0 or step == target:
                        pipe.unet.eval()
                        _checkpoint(base, data, config, out_dir, step, target, optimizer, lr_scheduler, history,
                                    identity, elapsed(), resolution, prediction_type, ctx)
                        pipe.unet.train()
                        last_saved = step
            pipe.unet.eval()
            if error is not None:
                return _outcome(config, out_dir, ctx, history, last_saved, began, prior_seconds, error=error)
            # 6. The final LoRA, verified before it is handed on.
            return _finish(base, data, config, out_dir, target, history, identity, resolution, prediction_type,
                           ctx, began, prior_seconds)
        finally:
            pipe.unet.eval()
            if config.gradient_checkpointing:
                pipe.unet.disable_gradient_checkpointing()
            lora.detach(pipe, config)


def _one_step(base, data, config, step, latents, scheduler, unet, prediction_type, resolution, autocast, scaler,
              device) -> float:
    total = 0.0
    for micro in range(config.gradient_accumulation):
        index = batch_indices(len(data.train), config, step, micro)
        gen = step_generator(config.seed, step, micro)
        rng = random.Random(step_seed(config.seed, step, micro))
        captions = [vary_caption(data.train[i].caption, config, rng) for i in index]
        x0 = latents[index]
        noise = torch.randn(x0.shape, generator=gen)
        if config.noise_offset:  # lets the model learn overall brightness shifts
            noise = noise + config.noise_offset * torch.randn((x0.shape[0], x0.shape[1], 1, 1), generator=gen)
        t_high = min(config.timestep_max, scheduler.config.num_train_timesteps)
        timesteps = torch.randint(config.timestep_min, t_high, (x0.shape[0],), generator=gen)
        x0, noise, timesteps = x0.to(device), noise.to(device), timesteps.to(device)
        noisy = scheduler.add_noise(x0, noise, timesteps)
        target = noise if prediction_type == "epsilon" else scheduler.get_velocity(x0, noise, timesteps)
        # Frozen encoder: cached conditioning (computed outside autocast, so the cache stays fp32).
        cond = None if config.train_text_encoder else base.cond(captions, resolution)
        with autocast:
            if cond is None:
                cond = encode_text(base.pipe, captions, resolution)
            pred = predict(unet, noisy.to(base.pipe.unet.dtype), timesteps, cond.to(device, base.pipe.unet.dtype))
        loss = recipe.loss_value(pred.float(), target.float(), timesteps, scheduler, config, prediction_type)
        if not torch.isfinite(loss):
            raise TrainingStopped(f"loss became {float(loss.detach())} at step {step} (learning rate {config.learning_rate} "
                                  "too high?)")
        loss = loss / config.gradient_accumulation
        (scaler.scale(loss) if scaler else loss).backward()
        total += float(loss.detach())
    return total


def _resume(out_dir, identity, target, pipe, config, optimizer, lr_scheduler):
    """Continue from the newest checkpoint of this same recipe at or before ``target``."""
    history: dict[str, list] = {"train_loss": [], "val_loss": []}
    usable = [c for c in ckpt.checkpoints(out_dir) if c.step <= target and c.meta().get("identity") == identity]
    if not usable:
        return history, 0, 0.0
    latest = usable[-1]
    adapter, state = ckpt.load(latest)
    lora.load_adapter_state(pipe, config, adapter)
    optimizer.load_state_dict(state["optimizer"])
    lr_scheduler.load_state_dict(state["lr_scheduler"])
    ckpt.restore_rng(state["rng"])
    meta = latest.meta()
    history = {k: [tuple(x) for x in meta["history"][k]] for k in ("train_loss", "val_loss")}
    return history, latest.step, float(meta.get("seconds", 0.0))


def _output_name(ctx, config: TrainConfig) -> str:
    slug = lambda s: re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-") or "lora"  # noqa: E731
    return f"{slug(ctx.config.name)}-{slug(config.name)}"


def _save_lora(base, data, config, path_base: Path, steps, target, resolution, prediction_type, ctx) -> dict[str, Any]:
    """Write kohya + diffusers files for the adapter as it is now; verify the kohya file."""
    state = lora.adapter_state(base.pipe, config)
    meta = lora_metadata(family=base.family, base_name=base.base, config=config, data=data, steps=steps, target=target,
                         resolution=resolution, prediction_type=prediction_type, output_name=path_base.name,
                         data_facts=describe_data(data.train, data.validation, config, data.trigger))
    kohya, diffusers_file = lora.write_lora_files(base.pipe, path_base, state, config, base.family, meta)
    prompt = f"a photo of {data.trigger} {data.class_word}"
    verification = verify_lora(base.pipe, kohya, family=base.family, config=config, resolution=resolution, prompt=prompt,
                               diffusers_file=diffusers_file)
    return {"kohya": kohya, "diffusers": diffusers_file, "verification": verification}


def _checkpoint(base, data, config, out_dir, step, target, optimizer, lr_scheduler, history, identity, seconds,
                resolution, prediction_type, ctx) -> None:
    saved: dict[str, Any] = {}

    def write_lora(path: Path) -> None:
        saved.update(_save_lora(base, data, config, path.with_suffix(""), step, target, resolution, prediction_type, ctx))

    meta = {"identity": identity, "history": history, "seconds": seconds}
    written = ckpt.save(out_dir, step, lora.adapter_state(base.pipe, config), optimizer, lr_scheduler,
                        {**meta, "verification_ok": None}, write_lora)
    meta_path = written.folder / "meta.json"
    stored = json.loads(meta_path.read_text(encoding="utf-8"))
    stored["verification_ok"] = saved["verification"]["ok"]
    fsutil.write_json(meta_path, stored)


def _finish(base, data, config, out_dir, target, history, identity, resolution, prediction_type, ctx, began,
            prior_seconds) -> TrainOutcome:
    saved = _save_lora(base, data, config, out_dir / _output_name(ctx, config), target, target, resolution,
                       prediction_type, ctx)
    verification = saved["verification"]
    outcome = _outcome(config, out_dir, ctx, history, target, began, prior_seconds, error=problem(verification))
    outcome.lora = _rel(ctx, saved["kohya"])
    outcome.lora_diffusers = _rel(ctx, saved["diffusers"])
    outcome.verification = verification
    fsutil.write_json(out_dir / "outcome.json", {"identity": identity, "outcome": outcome.model_dump(mode="json")})
    return outcome


def _outcome(config, out_dir, ctx, history, steps_done, began, prior_seconds, *, error) -> TrainOutcome:
    vals = history["val_loss"]
    return TrainOutcome(config=config, steps_done=steps_done,
                        checkpoints=[_rel(ctx, c.lora) for c in ckpt.checkpoints(out_dir) if c.step <= steps_done],
                        train_loss=list(history["train_loss"]), val_loss=list(vals),
                        final_val_loss=vals[-1][1] if vals else None, error=error,
                        seconds=round(prior_seconds + time.perf_counter() - began, 3))


def _finished_outcome(out_dir: Path, identity: str, target: int) -> TrainOutcome | None:
    """This exact run already finished at ``target`` (a fight re-asking for a budget)."""
    path = out_dir / "outcome.json"
    if not path.is_file():
        return None
    stored = fsutil.read_json(path)
    outcome = TrainOutcome.model_validate(stored["outcome"])
    if stored.get("identity") == identity and outcome.steps_done == target and outcome.error is None:
        return outcome
    return None


def _sample(base, data, config, out_dir, step, ctx) -> str:
    """A picture with the adapter as it is at this step (the training adapter is active)."""
    prompt = f"a photo of {data.trigger} {data.class_word}"
    base.pipe.unet.eval()
    with torch.no_grad():
        image = base.pipe(prompt=prompt, num_inference_steps=8 if base.is_toy else 25, guidance_scale=7.0,
                          height=base.resolution, width=base.resolution,
                          generator=torch.Generator("cpu").manual_seed(config.seed)).images[0]
    base.pipe.unet.train()
    path = out_dir / "samples" / f"step-{step}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return _rel(ctx, path)


def _rel(ctx, path: Path) -> str:
    try:
        return ctx.run.rel(path)
    except ValueError:  # out_dir outside the run folder (a caller's choice): keep it absolute
        return str(Path(path).resolve())
