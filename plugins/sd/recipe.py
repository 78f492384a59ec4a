"""What a TrainConfig turns into: checks, the optimizer and its schedule, the loss
(L2 or pseudo-Huber, optionally min-SNR-γ weighted), mixed precision."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from clood_candy.errors import UserError
from clood_candy.records import TrainConfig, TrainSet
from clood_candy_plugins.sd import lora

MAX_GRAD_NORM = 1.0


def check_recipe(config: TrainConfig, data: TrainSet) -> None:
    if not data.train:
        raise UserError("no training photos")
    if config.prior_preservation and config.prior_loss_weight < 0:
        raise UserError(f"prior_loss_weight {config.prior_loss_weight} must not be negative")
    if config.timestep_min >= config.timestep_max:
        raise UserError(f"timestep_min {config.timestep_min} must be below timestep_max {config.timestep_max}")
    if config.steps < 1 or config.checkpoint_every < 1 or config.validate_every < 1:
        raise UserError("steps, checkpoint_every and validate_every must be at least 1")


def update(params, optimizer, lr_scheduler, scaler) -> None:
    """Clip the gradient (one bad batch cannot throw the adapter far), step, schedule."""
    if scaler:
        scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    lr_scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def loss_value(pred, target, timesteps, scheduler, config: TrainConfig, prediction_type: str) -> torch.Tensor:
    return loss_items(pred, target, timesteps, scheduler, config, prediction_type).mean()


def loss_items(pred, target, timesteps, scheduler, config: TrainConfig, prediction_type: str) -> torch.Tensor:
    """The loss of each item of the batch (weighted by min-SNR when asked)."""
    if config.loss == "huber":  # pseudo-Huber: like L2 for small errors, like L1 for outliers
        c = config.huber_c
        per = 2 * c * (torch.sqrt((pred - target) ** 2 + c * c) - c)
    else:
        per = (pred - target) ** 2
    per = per.mean(dim=tuple(range(1, per.ndim)))
    if config.snr_gamma:  # min-SNR-γ: stop easy (low-noise) timesteps dominating
        from diffusers.training_utils import compute_snr

        snr = compute_snr(scheduler, timesteps).float()
        clipped = torch.clamp(snr, max=config.snr_gamma)
        per = per * (clipped / snr if prediction_type == "epsilon" else clipped / (snr + 1))
    return per


def make_optimizer(config: TrainConfig, pipe) -> torch.optim.Optimizer:
    groups = []
    for name, module in lora.trained_modules(pipe, config).items():
        params = [p for p in module.parameters() if p.requires_grad]
        lr = config.learning_rate if name in ("unet", "transformer") else (config.text_encoder_lr or config.learning_rate)
        groups.append({"params": params, "lr": lr})
    if config.optimizer == "adamw":
        # The fused kernel updates every tensor in one call: on the tiny model's 80 small
        # adapter tensors 0.3 ms a step instead of 2.2 ms (CPU, measured).
        fused = all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for g in groups for p in g["params"])
        return torch.optim.AdamW(groups, weight_decay=1e-2, fused=fused or None)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=0.9)
    if config.optimizer == "adamw8bit":
        try:
            import bitsandbytes
        except ImportError:
            raise UserError("optimizer adamw8bit needs bitsandbytes: pip install bitsandbytes") from None
        return bitsandbytes.optim.AdamW8bit(groups, weight_decay=1e-2)
    try:
        from prodigyopt import Prodigy
    except ImportError:
        raise UserError("optimizer prodigy needs prodigyopt: pip install prodigyopt") from None
    return Prodigy(groups, weight_decay=1e-2)


def make_lr_scheduler(config: TrainConfig, optimizer):
    from diffusers.optimization import get_scheduler

    # The schedule spans config.steps whatever max_steps says, so a run continued in
    # stages follows the same curve as one done in one go.
    return get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=config.warmup_steps,
                         num_training_steps=config.steps)


def current_lr(optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def autocast_for(config: TrainConfig, device: torch.device):
    if config.mixed_precision == "no":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if config.mixed_precision == "bf16" else torch.float16)
