"""What the non-fighter stage plugins implement: preparer, model family (trainer),
sampler, reporter, upscaler."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from clood_candy.errors import UserError
from clood_candy.plan.records import DeviceInfo, ModelSize, SourceSurvey, TrainingDefaults
from clood_candy.records import Photo, PrepReport, SampleSet, TrainConfig, TrainOutcome, TrainSet

if TYPE_CHECKING:
    from clood_candy.config import CloodConfig, PrepSettings
    from clood_candy.context import StageContext

# Below 64 no latent is left to denoise; above 4096 is a typo, not a training run.
MIN_RESOLUTION, MAX_RESOLUTION = 64, 4096


class Preparer(ABC):
    name: str = ""

    @abstractmethod
    def prepare(self, source: Path, out_dir: Path, settings: "PrepSettings", ctx: "StageContext") -> PrepReport:
        """Give every input file a verdict; write kept photos as square PNGs under out_dir."""

    def prepare_one(self, source: Path, rel: str, out_dir: Path, settings: "PrepSettings", ctx: "StageContext", *,
                    resolution: int, photo_id: str | None = None, taken: Collection[str] = (),
                    box: list[int] | None = None) -> tuple[Photo, str]:
        """The file ``rel`` of ``source`` (as the report names it) prepared now as ``prepare``
        would have made it at ``resolution``, whatever its verdict, written as
        ``out_dir/<id>.png``: the id is ``photo_id``, else the one prepare would give it, apart
        from ``taken``. With ``box`` ([x0, y0, x1, y1] in the upright original) that crop
        instead of the preparer's own. ``clood review`` asks this to bring back a photo prep
        culled and to move a crop box. Returns the photo's record and one line of what prep
        found (the reasons it would cull it, its framing); raises UserError, saying why, when
        it cannot. The default cannot prepare one photo alone."""
        raise UserError(f"the {self.name or type(self).__name__} preparer cannot prepare one photo on its own")

    def check_source(self, source: Path) -> str | None:
        """Why ``source`` cannot give a single photo, told from names alone (no file opened,
        no model loaded), or None. Asked before any stage runs, so an empty folder costs
        the user nothing; the default checks nothing."""
        return None

    def survey(self, source: Path) -> SourceSurvey | None:
        """The files prep would try as photos, with their sizes where headers tell them,
        for the plan (no pixel decoded, nothing written); None: cannot tell before preparing."""
        return None


class Upscaler(ABC):
    name: str = ""

    def unavailable(self, ctx: "StageContext") -> str | None:
        """A one-line reason this upscaler cannot run here (no weights, bad options), or None.
        Prep asks once, only when some photo needs enlarging, so loading a model here costs
        nothing on a set of large photos; on a reason, prep goes on without the upscaler."""
        return None

    def describe(self) -> str:
        """What enlarged the photos (model, architecture), for their records and the report."""
        return self.name

    @abstractmethod
    def upscale(self, image: Image.Image, factor: int) -> Image.Image:
        """``image`` enlarged ``factor`` times in each side."""


class LoadedBase(ABC):
    """A base model loaded by a :class:`ModelFamily`. Judges and the report use it
    without knowing the family."""

    family: str = ""
    base: str = ""  # what the user named: HF id, folder, file, or "tiny"
    resolution: int = 512
    is_toy: bool = False  # random weights: mechanics, not art
    clood_made: bool = False  # a base clood built (tiny toys, candy-mini): its LoRAs fit no other checkpoint
    token_window: int = 75  # tokens the text encoder sees, without BOS/EOS

    @abstractmethod
    def tokens(self, text: str) -> list[str]:
        """The text as the text encoder's tokenizer splits it (no BOS/EOS)."""

    def count_tokens(self, text: str) -> int:
        return len(self.tokens(text))

    @abstractmethod
    def denoising_error(self, images: list[Path], captions: list[str], *, seed: int = 0) -> list[float]:
        """Mean conditional denoising error of each image under its caption at fixed
        noise and timesteps (lower: the caption explains the image better)."""

    # --- for the report: what the model's parts see (families that can, implement these)

    def encode_latents(self, image: Path) -> Any:
        """The VAE's latent of a prepared image as a float array (channels, h, w)."""
        raise NotImplementedError

    def decode_latents(self, latents: Any) -> Image.Image:
        """The VAE's reconstruction of a latent array from :meth:`encode_latents`."""
        raise NotImplementedError

    def denoise_steps(self, image: Path, caption: str, timesteps: list[int], *, seed: int = 0) -> list[tuple[int, Image.Image, Image.Image]]:
        """For each timestep: (t, the image's latent noised to t and decoded, the model's
        one-step guess of the clean image from it, decoded)."""
        raise NotImplementedError

    def parameter_count(self) -> int:
        """Parameters of the denoiser (UNet), to compare a LoRA's size against."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"family": self.family, "base": self.base, "resolution": self.resolution, "toy": self.is_toy}


class ModelFamily(ABC):
    """A model family (SD1, SDXL, …) and its LoRA trainer. Registered by ``register_model_families``."""

    name: str = ""

    @abstractmethod
    def matches(self, base: str) -> bool:
        """True when this family can load ``base`` (HF id, folder, single file, or a tiny name)."""

    @abstractmethod
    def load(self, base: str, ctx: "StageContext") -> LoadedBase: ...

    def check_resolution(self, resolution: int, buckets: bool) -> str | None:
        """Why this family cannot train at ``resolution`` (with ``prep.buckets``: at its
        aspect buckets), or None; asked before any model loads. The default suits latent
        diffusion with an 8× VAE; a family with other needs (patches, a deeper VAE) overrides it."""
        step, why = (64, "prep.buckets: bucket sides step by 64") if buckets else (8, "the VAE downsamples by 8")
        if resolution % step == 0 and MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
            return None
        nearest = min(max(round(resolution / step) * step, MIN_RESOLUTION), MAX_RESOLUTION)
        return f"it must be a multiple of {step} from {MIN_RESOLUTION} to {MAX_RESOLUTION} ({why}); nearest: {nearest}"

    # --- for the plan (clood_candy/plan): asked before any model loads

    def training_defaults(self, config: "CloodConfig") -> TrainingDefaults | None:
        """Starting points for ``config.base`` and ``config.caption.lora_type`` (learning
        rate, rank, batch, the base's resolution) with their source; None: no advice."""
        return None

    def device(self, config: "CloodConfig") -> DeviceInfo:
        """The device this family will train on for ``config``, as far as it can tell
        without loading a model."""
        return DeviceInfo(kind="other", name=f"chosen by the {self.name} family when it loads")

    def model_size(self, config: "CloodConfig", recipe: TrainConfig, resolution: int) -> ModelSize | None:
        """Parameter counts and the activations one photo keeps for the backward pass, for
        ``recipe`` at ``resolution``, counted without loading weights; None: unknown."""
        return None

    @abstractmethod
    def train(
        self,
        base: LoadedBase,
        data: TrainSet,
        config: TrainConfig,
        out_dir: Path,
        ctx: "StageContext",
        *,
        max_steps: int | None = None,
        on_step: Callable[[int, float], None] | None = None,
    ) -> TrainOutcome:
        """Train (or continue, from the newest checkpoint in out_dir) up to ``max_steps``
        (default ``config.steps``), save and verify the LoRA, and report validation loss."""

    @abstractmethod
    def generate(
        self,
        base: LoadedBase,
        prompt: str,
        *,
        seed: int,
        lora: Path | None = None,
        weight: float = 1.0,
        negative_prompt: str = "",
        steps: int | None = None,
        guidance: float | None = None,  # classifier-free guidance; None: the base's own
    ) -> Image.Image: ...


class Sampler(ABC):
    name: str = ""

    @abstractmethod
    def sample(
        self,
        family: ModelFamily,
        base: LoadedBase,
        loras: dict[str, Path],
        prompts: list[str],
        out_dir: Path,
        ctx: "StageContext",
        *,
        weights: list[float],
        seeds: list[int],
        negative_prompt: str = "",
    ) -> SampleSet:
        """Images for prompts × weights (× checkpoints when ``loras`` holds several), and grids."""


class Reporter(ABC):
    name: str = ""

    @abstractmethod
    def build(self, run_dir: Path, ctx: "StageContext") -> Path:
        """Write the report from what the run folder holds; return its path."""
