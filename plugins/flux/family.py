"""The Flux.1 family (``flux``): a flow-matching transformer, trained and sampled through
the same loop, caches, checkpoints and report as SD1/SDXL (it is an SDFamily whose base,
FluxBase, answers the loop's questions the Flux way).

Options (``[plugins.flux]`` in clood.toml): ``timestep_sampling`` (uniform, logit_normal,
sigmoid, shift, flux_shift), ``discrete_flow_shift``, ``logit_mean``/``logit_std``,
``loss_weighting`` (none, sigma_sqrt, cosmap), ``guidance`` (fed to dev's guidance
embedding while training; default 1.0), ``max_sequence_length`` (T5 tokens; dev 512,
schnell 256). Device, dtype and threads come from ``[plugins.sd]`` as for SD."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clood_candy.plan.records import TrainingDefaults
from clood_candy.stages import MAX_RESOLUTION, MIN_RESOLUTION
from clood_candy_plugins.flux.loading import TINY, is_flux
from clood_candy_plugins.sd.family import SDFamily

if TYPE_CHECKING:
    from clood_candy.config import CloodConfig
    from clood_candy.context import StageContext
    from clood_candy_plugins.flux.base import FluxBase

# seed 004's quick reference: "Flux | 1e-4 to 4e-4 | 1000-3000 (character) | 2000-5000 (style) | rank 16-64 | batch 1-2";
# seed 003 trains its Flux LoRA at 5e-4, rank 16. The top rate for one object; characters and
# styles hold more: a higher rank at the safer rate.
RANKS = {"object": 16, "scene": 16, "concept": 16, "character": 32, "style": 32}
RATES = {"object": 4e-4, "scene": 4e-4, "concept": 2e-4, "character": 1e-4, "style": 1e-4}
STEPS = {"character": (1000, 3000), "style": (2000, 5000)}


class FluxFamily(SDFamily):
    name = "flux"

    def matches(self, base: str) -> bool:
        return is_flux(base)

    def load_pipeline(self, base: str, ctx: "StageContext", dtype):
        from clood_candy_plugins.flux.loading import load_flux

        return load_flux(base, dtype=dtype)

    def make_base(self, loaded, base: str, ctx: "StageContext", **settings) -> "FluxBase":
        from clood_candy_plugins.flux.base import FluxBase

        return FluxBase(loaded, base, options=ctx.options("flux"), **settings)

    def check_resolution(self, resolution: int, buckets: bool) -> str | None:
        # 8× VAE, then 2×2 patches: sides step by 16.
        step, why = (64, "prep.buckets: bucket sides step by 64") if buckets else (16, "Flux reads 2×2 patches of the 8× latent")
        if resolution % step == 0 and MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
            return None
        nearest = min(max(round(resolution / step) * step, MIN_RESOLUTION), MAX_RESOLUTION)
        return f"it must be a multiple of {step} from {MIN_RESOLUTION} to {MAX_RESOLUTION} ({why}); nearest: {nearest}"

    def training_defaults(self, config: "CloodConfig") -> TrainingDefaults:
        from clood_candy_plugins.sd.loading import TINY_RESOLUTION

        kind = config.caption.lora_type
        toy = config.base == TINY
        return TrainingDefaults(learning_rate=RATES.get(kind, 1e-4), rank=RANKS.get(kind, 16),
                                alpha=float(RANKS.get(kind, 16)), batch_size=1, steps_range=STEPS.get(kind),
                                resolution=TINY_RESOLUTION if toy else 1024,
                                source="seed 004: Flux LoRAs train at 1e-4 to 4e-4, rank 16–64, batch 1–2"
                                       + (" (the toy base is sized like it)" if toy else ""))

    def model_size(self, config, recipe, resolution):
        return None  # not counted for Flux yet: the plan says so
