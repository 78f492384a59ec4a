"""The plan's typed records: what a model family tells the planner (its starting points,
its sizes, the device), and the plan itself (every setting with its reason)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from clood_candy.records import ConceptSet, Record

# --- what the preparer and the model family tell the planner --------------------------


class SourceSurvey(Record):
    """What a preparer can tell about a photo source without preparing it: the files it
    would try as photos and, where the header says, each one's size (no pixel decoded)."""

    photos: list[str]  # relative paths, in the order prep would take them
    sizes: dict[str, tuple[int, int]] = Field(default_factory=dict)  # path → (width, height), upright


class TrainingDefaults(Record):
    """A family's starting points for one LoRA type, and where they come from."""

    learning_rate: float
    rank: int
    alpha: float
    batch_size: int = 1
    steps_range: tuple[int, int] | None = None  # the sources' usual total steps for this type
    resolution: int  # the base's native training resolution
    source: str  # one line: "seed 004: SD1.5 LoRAs train at 1e-4, rank 4–16, batch 1–2"


class ModelSize(Record):
    """The numbers the memory estimate needs, counted by the family for one recipe at one
    resolution (activations for ONE photo; the estimate scales them by the batch)."""

    denoiser_params: int
    text_encoder_params: int
    vae_params: int
    weight_bytes: int  # bytes per frozen weight as the family loads them
    trainable_params: int  # the adapter's (UNet and, when trained, text encoders)
    activation_elements: int  # kept for the backward pass, one photo, no checkpointing
    checkpointed_elements: int  # the same with gradient checkpointing
    # Frozen weights the backward pass reads (free when they are the model's own tensors;
    # under autocast each is kept as a half-precision copy), without and with checkpointing.
    kept_weight_params: int = 0
    checkpointed_kept_weight_params: int = 0
    latent_factor: int = 8  # image pixels per latent pixel, per side
    latent_channels: int = 4
    note: str = ""  # how the family counted
    half_weights: str = ""  # how to load the frozen weights in 2 bytes, when they are in 4 ("" : no way)


class DeviceInfo(Record):
    """The device training will run on, as the family will choose it."""

    kind: Literal["cuda", "cpu", "mps", "other"]
    name: str
    memory_bytes: int | None = None  # total; None: unknown
    bf16: bool = False
    fp16: bool = False
    runtime_bytes: int = 0  # held before any model: the CUDA context, or the process's libraries on the CPU
    eight_bit_adam: bool = False  # 8-bit AdamW can run here (bitsandbytes importable, a CUDA GPU)
    # Scratch beyond the kept tensors (the backward's gradients in flight, kernel buffers, the
    # allocator's slack), as a share of one forward pass's activations without checkpointing.
    workspace_share: float = 0.0
    measured: bool = False  # the estimate's constants for this kind of device were checked by a measurement
    assumed: bool = False  # described by the user (--gpu-memory), not detected


# --- the plan ----------------------------------------------------------------------


class Choice(Record):
    """One setting: its value, why, and whether the user's own value decided it."""

    key: str  # where it lives in clood.toml, e.g. "train.defaults.steps"
    value: Any
    reason: str
    set_by_user: bool = False
    planned: Any = None  # what the plan would have chosen, when the user's value differs


class MemoryEstimate(Record):
    """Peak memory of one training step, part by part (bytes)."""

    parts: dict[str, int]  # weights, adapter, gradients, optimizer, activations, runtime
    total: int
    available: int | None = None  # what the device offers (None: unknown)
    fits: bool | None = None  # None: nothing to compare with
    how: str = ""  # the settings it was made for, in words


class Remedy(Record):
    """One step down the memory ladder and what it bought."""

    step: str  # "gradient checkpointing", "8-bit AdamW", "batch 2 × accumulation 2"
    total: int  # the estimate after it (bytes)
    fits: bool


class FightPlan(Record):
    """The config fight's rungs in steps, and what the fight costs."""

    budgets: list[int]
    rounds: list[tuple[int, int]]  # (configs in the round, rung) for the rounds that will run
    cost: int  # steps trained in the fight, all configs together
    limit: int  # the most the fight may cost (max_cost × the final run's steps)
    reason: str
    set_by_user: bool = False


class PickPlan(Record):
    """The pick fight's samples, and their compute against the run's."""

    candidates: int  # checkpoints × LoRA weights
    samples: int  # candidates × prompts × seeds
    rung_samples: int = 0  # the fight's rounds the sample judges decide: their configs × prompts × seeds
    sampler_steps: int  # denoising steps per sample (classifier-free guidance: two passes each)
    step_equivalents: int  # all the samples' compute in training steps (a step: forward + backward ≈ 3 passes per photo)
    share: float  # of fight, run and pick together
    enabled: bool = True


class Plan(Record):
    base: str
    family: str
    lora_type: str
    photos: int | None  # photos the preparer would try (None: it cannot tell before it runs)
    training_photos: int | None  # what trains once the validation share is held out
    resolution: int
    device: DeviceInfo
    choices: list[Choice]
    memory: MemoryEstimate | None = None  # with the remedies taken
    first_estimate: int | None = None  # bytes, before any remedy
    remedies: list[Remedy] = Field(default_factory=list)
    fight: FightPlan | None = None
    pick: PickPlan | None = None
    warnings: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    concepts: ConceptSet | None = None  # brands with their own triggers, and the repeats that balance them

    def value(self, key: str) -> Any:
        return next(c.value for c in self.choices if c.key == key)

    def train_updates(self) -> dict[str, Any]:
        """The [train.defaults] values the plan chose (the user's own are left out: they
        already stand in the config)."""
        prefix = "train.defaults."
        return {c.key[len(prefix):]: c.value for c in self.choices if c.key.startswith(prefix) and not c.set_by_user}
