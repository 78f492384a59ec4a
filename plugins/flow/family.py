"""The flow-matching transformer families, ``flux`` (Flux.1) and ``sd3`` (SD3 / SD3.5):
trained and sampled through the same loop, caches, checkpoints and report as SD1/SDXL
(each is an SDFamily whose base answers the loop's questions its own way).

Options (``[plugins.flux]`` / ``[plugins.sd3]`` in clood.toml): ``timestep_sampling``
(uniform, logit_normal, sigmoid, shift, flux_shift), ``discrete_flow_shift``,
``logit_mean``/``logit_std``, ``loss_weighting`` (none, sigma_sqrt, cosmap), ``guidance``
(fed to Flux.1-dev's guidance embedding while training; default 1.0),
``max_sequence_length`` (T5 tokens; 512, schnell 256). Device, dtype and threads come from
``[plugins.sd]`` as for SD."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clood_candy.plan.records import TrainingDefaults
from clood_candy.stages import MAX_RESOLUTION, MIN_RESOLUTION
from clood_candy_plugins.flow import loading
from clood_candy_plugins.sd.family import SDFamily

if TYPE_CHECKING:
    from clood_candy.config import CloodConfig
    from clood_candy.context import StageContext
    from clood_candy_plugins.flow.base import FlowBase



def _tiny(name: str):
    def folder():
        from clood_candy_plugins.flow import tiny  # torch and transformers: only when a toy is built

        return tiny.tiny_folder(name)
    return folder


FLUX = loading.Kind("flux", "FluxPipeline", "tiny-flux", _tiny("tiny-flux"),
                    frozenset({"black-forest-labs/flux.1-dev", "black-forest-labs/flux.1-schnell",
                               "black-forest-labs/flux.1-krea-dev"}),
                    "flux.1", ("fill", "canny", "depth", "redux", "kontext"))
SD3 = loading.Kind("sd3", "StableDiffusion3Pipeline", "tiny-sd3", _tiny("tiny-sd3"),
                   frozenset({"stabilityai/stable-diffusion-3-medium-diffusers", "stabilityai/stable-diffusion-3.5-medium",
                              "stabilityai/stable-diffusion-3.5-large", "stabilityai/stable-diffusion-3.5-large-turbo"}),
                   "stable-diffusion-3", ("controlnet", "inpaint"))


class FlowFamily(SDFamily):
    kind: loading.Kind
    # Starting points per LoRA type (seed 004's quick reference), and where they come from.
    ranks: dict[str, int] = {}
    rates: dict[str, float] = {}
    steps: dict[str, tuple[int, int]] = {}
    source: str = ""

    def matches(self, base: str) -> bool:
        return loading.claims(self.kind, base)

    def load_pipeline(self, base: str, ctx: "StageContext", dtype):
        return loading.load(self.kind, base, dtype=dtype)

    def make_base(self, loaded, base: str, ctx: "StageContext", **settings) -> "FlowBase":
        from clood_candy_plugins.flow.base import FluxBase
        from clood_candy_plugins.flow.sd3 import SD3Base

        cls = FluxBase if self.name == "flux" else SD3Base
        return cls(loaded, base, options=ctx.options(self.name), **settings)

    def check_resolution(self, resolution: int, buckets: bool) -> str | None:
        # 8× VAE, then 2×2 patches: sides step by 16.
        step, why = (64, "prep.buckets: bucket sides step by 64") if buckets else (16, "the transformer reads 2×2 patches of the 8× latent")
        if resolution % step == 0 and MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
            return None
        nearest = min(max(round(resolution / step) * step, MIN_RESOLUTION), MAX_RESOLUTION)
        return f"it must be a multiple of {step} from {MIN_RESOLUTION} to {MAX_RESOLUTION} ({why}); nearest: {nearest}"

    def training_defaults(self, config: "CloodConfig") -> TrainingDefaults:
        from clood_candy_plugins.sd.loading import TINY_RESOLUTION

        kind, toy = config.caption.lora_type, config.base == self.kind.tiny
        rank = self.ranks.get(kind, 16)
        return TrainingDefaults(learning_rate=self.rates.get(kind, 1e-4), rank=rank, alpha=float(rank), batch_size=1,
                                steps_range=self.steps.get(kind), resolution=TINY_RESOLUTION if toy else 1024,
                                source=self.source + (" (the toy base is sized like it)" if toy else ""))

    def model_size(self, config, recipe, resolution):
        return None  # not counted for transformers yet: the plan says so


class FluxFamily(FlowFamily):
    name, kind = "flux", FLUX
    # seed 004: "Flux | 1e-4 to 4e-4 | 1000-3000 (character) | 2000-5000 (style) | rank 16-64 | batch 1-2";
    # seed 003 trains its Flux LoRA at 5e-4, rank 16. The top rate for one object; characters and
    # styles hold more: a higher rank at the safer rate.
    ranks = {"object": 16, "scene": 16, "concept": 16, "character": 32, "style": 32}
    rates = {"object": 4e-4, "scene": 4e-4, "concept": 2e-4, "character": 1e-4, "style": 1e-4}
    steps = {"character": (1000, 3000), "style": (2000, 5000)}
    source = "seed 004: Flux LoRAs train at 1e-4 to 4e-4, rank 16–64, batch 1–2"


class SD3Family(FlowFamily):
    name, kind = "sd3", SD3
    # seed 004: "SD3 | 5e-5 to 1e-4 | 1500-3000 (character) | 2000-5000 (style) | rank 16-32 | batch 1-2"
    ranks = {"object": 16, "scene": 16, "concept": 16, "character": 32, "style": 32}
    rates = {"object": 1e-4, "scene": 1e-4, "concept": 1e-4, "character": 5e-5, "style": 5e-5}
    steps = {"character": (1500, 3000), "style": (2000, 5000)}
    source = "seed 004: SD3 LoRAs train at 5e-5 to 1e-4, rank 16–32, batch 1–2"
