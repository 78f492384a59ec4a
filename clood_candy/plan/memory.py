"""Peak memory of one training step, as a model: frozen weights, the adapter with its
gradients and optimizer state, the activations kept for the backward pass (counted by
the model family for this architecture, resolution and recipe), and the runtime.

When the estimate does not fit, the ladder tries, in this order: gradient checkpointing
(activations recomputed block by block), 8-bit AdamW (optimizer state in 2 bytes, not 8),
then a smaller batch with gradient accumulation (the same photos per optimizer step, fewer
at once). A setting the user chose is never changed; the ladder steps over it and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from clood_candy.plan.records import DeviceInfo, MemoryEstimate, ModelSize, Remedy

GB = 1024**3
# Optimizer state per trainable parameter, bytes: AdamW keeps two fp32 moments, the
# 8-bit one two bytes, SGD one momentum, Prodigy four fp32 tensors.
OPTIMIZER_BYTES = {"adamw": 8, "adamw8bit": 2, "sgd": 4, "prodigy": 16}
# Kept activations per element, bytes. fp32: 4. Under bf16/fp16 autocast the matmul and
# conv inputs are kept in 2 bytes but the norms and activations in between stay fp32, and
# q/k/v each keep their own half-precision copy of one input: 2.4 bytes an element on the
# SD1.5 UNet, measured (the tensors a real CPU step keeps; BENCHMARKS.md, "Memory estimate").
ACTIVATION_BYTES = {"no": 4.0, "bf16": 2.4, "fp16": 2.4}
# Use at most this share of the device: the rest is fragmentation and other processes.
HEADROOM = 0.9


@dataclass(frozen=True)
class Recipe:
    """The settings the estimate depends on (the ladder changes them)."""

    batch_size: int
    gradient_accumulation: int
    mixed_precision: str
    gradient_checkpointing: bool
    optimizer: str

    def describe(self) -> str:
        parts = [f"batch {self.batch_size}"]
        if self.gradient_accumulation > 1:
            parts.append(f"accumulation {self.gradient_accumulation}")
        parts.append({"no": "fp32"}.get(self.mixed_precision, self.mixed_precision))
        if self.gradient_checkpointing:
            parts.append("gradient checkpointing")
        parts.append({"adamw8bit": "8-bit AdamW", "adamw": "AdamW"}.get(self.optimizer, self.optimizer))
        return ", ".join(parts)


def gib(n: int | float) -> str:
    """Bytes for people: GB (2^30, as GPUs are sold) above one, MB below."""
    return f"{n / GB:.1f} GB" if n >= GB else f"{n / 1024**2:.0f} MB"


def estimate(size: ModelSize, device: DeviceInfo, recipe: Recipe, available: int | None) -> MemoryEstimate:
    elements = size.checkpointed_elements if recipe.gradient_checkpointing else size.activation_elements
    kept = recipe.batch_size * elements * ACTIVATION_BYTES.get(recipe.mixed_precision, 4.0)
    # autocast casts each frozen fp32 weight for its op, and the op keeps the copy for backward
    cast = size.checkpointed_kept_weight_params if recipe.gradient_checkpointing else size.kept_weight_params
    copies = cast * 2 if recipe.mixed_precision != "no" and size.weight_bytes == 4 else 0
    parts = {
        "weights": (size.denoiser_params + size.text_encoder_params + size.vae_params) * size.weight_bytes,
        "adapter": size.trainable_params * 4,  # trained in fp32 even on a half-precision base
        "gradients": size.trainable_params * 4,
        "optimizer": size.trainable_params * OPTIMIZER_BYTES.get(recipe.optimizer, 8),
        "activations": int(kept),
        "weight copies": copies,
        # the backward's in-flight gradients and the kernels' scratch grow with the whole forward
        # pass, checkpointing or not; how much is the device's (DeviceInfo.workspace_share)
        "workspace": int(device.workspace_share * recipe.batch_size * size.activation_elements
                         * ACTIVATION_BYTES.get(recipe.mixed_precision, 4.0)),
        "runtime": device.runtime_bytes,
    }
    total = sum(parts.values())
    fits = None if available is None else total <= available * HEADROOM
    return MemoryEstimate(parts=parts, total=total, available=available, fits=fits, how=recipe.describe())


@dataclass
class Fitted:
    recipe: Recipe
    memory: MemoryEstimate
    remedies: list[Remedy]
    notes: list[str]
    first: int  # the estimate before any remedy, bytes


def fit(size: ModelSize, device: DeviceInfo, recipe: Recipe, available: int | None, *, user_set: set[str],
        eight_bit_available: bool) -> Fitted:
    """Walk the ladder until the estimate fits (or nothing is left to try)."""
    memory = estimate(size, device, recipe, available)
    first = memory.total
    remedies: list[Remedy] = []
    notes: list[str] = []

    def take(step: str, changed: Recipe) -> None:
        nonlocal recipe, memory
        recipe, memory = changed, estimate(size, device, changed, available)
        remedies.append(Remedy(step=step, total=memory.total, fits=bool(memory.fits)))

    if memory.fits is not False:
        return Fitted(recipe, memory, remedies, notes, first)
    if not recipe.gradient_checkpointing:
        if "gradient_checkpointing" in user_set:
            notes.append("gradient checkpointing would save memory, but you set gradient_checkpointing = false")
        else:
            take("gradient checkpointing: activations recomputed block by block in the backward pass "
                 "(about 20–30 % slower)", replace(recipe, gradient_checkpointing=True))
    if not memory.fits and recipe.optimizer == "adamw":
        if "optimizer" in user_set:
            notes.append("8-bit AdamW would save memory, but you set optimizer = \"adamw\"")
        elif not eight_bit_available:
            notes.append("8-bit AdamW skipped: it needs bitsandbytes on a CUDA GPU (pip install bitsandbytes)")
        else:
            take("8-bit AdamW: optimizer state in 2 bytes a parameter instead of 8", replace(recipe, optimizer="adamw8bit"))
    while not memory.fits and recipe.batch_size > 1:
        if "batch_size" in user_set:
            notes.append(f"a smaller batch would save memory, but you set batch_size = {recipe.batch_size}")
            break
        if "gradient_accumulation" in user_set:
            notes.append("a smaller batch would change how many photos an optimizer step sees, and you set "
                         f"gradient_accumulation = {recipe.gradient_accumulation}")
            break
        batch = math.ceil(recipe.batch_size / 2)
        accumulation = recipe.gradient_accumulation * 2
        take(f"batch {batch} × gradient accumulation {accumulation}: the same photos per optimizer step, "
             f"{batch} at a time", replace(recipe, batch_size=batch, gradient_accumulation=accumulation))
    if not memory.fits:
        halved = ""
        if size.half_weights and device.kind != "cpu":
            smaller = estimate(size.model_copy(update={"weight_bytes": 2}), device, recipe, available)
            halved = (f"; the frozen weights take {gib(memory.parts['weights'])}, in half precision "
                      f"({size.half_weights}) {gib(smaller.parts['weights'])}, for {gib(smaller.total)} in all")
        notes.append(f"the estimate ({gib(memory.total)}) still exceeds {gib(HEADROOM * (available or 0))} "
                     f"({int(HEADROOM * 100)} % of {gib(available or 0)}): lower the resolution or the rank{halved}")
    return Fitted(recipe, memory, remedies, notes, first)
