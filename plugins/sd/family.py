"""The Stable Diffusion model families (``sd1``, ``sdxl``): loading a base, training a
LoRA on it, generating with one. Heavy libraries are imported on first use, so
registering the families costs nothing.

Options (``[plugins.sd]`` in clood.toml): ``device`` (default: this process's GPU, else
the CPU), ``dtype`` (fp32 / fp16 / bf16 weights), ``threads`` (torch threads while the
model is in use; 1 for the tiny bases), ``eval_draws`` (noise draws per image for the
denoising-error judge), ``single_file_config`` (a configs-only diffusers folder for a
single-file checkpoint of another architecture than SD1.5/SDXL), ``tensorboard``
(false: no TensorBoard events next to log.jsonl).

Several processes: ``accelerate launch … -m clood_candy_plugins.sd.launch`` (launch.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from clood_candy.errors import UserError
from clood_candy.plan.records import DeviceInfo, ModelSize, TrainingDefaults
from clood_candy.records import TrainConfig, TrainOutcome, TrainSet
from clood_candy.stages import LoadedBase, ModelFamily
from clood_candy_plugins.sd.loading import detect_family

if TYPE_CHECKING:
    from clood_candy.config import CloodConfig
    from clood_candy.context import StageContext
    from clood_candy_plugins.sd.base import SDBase


class SDFamily(ModelFamily):
    name = ""

    def matches(self, base: str) -> bool:
        return detect_family(base) == self.name

    def load(self, base: str, ctx: "StageContext") -> "SDBase":
        import torch

        from clood_candy_plugins.sd.base import DTYPES, quiet_libraries
        from clood_candy_plugins.sd.distributed import launched_device

        quiet_libraries()
        options = ctx.options("sd")
        # Under accelerate launch each process takes its own GPU (or the CPU).
        device = torch.device(options.get("device") or launched_device() or ("cuda" if torch.cuda.is_available() else "cpu"))
        if options.get("dtype", "fp32") not in DTYPES:
            raise UserError(f"[plugins.sd] dtype must be one of {', '.join(DTYPES)}, not {options['dtype']!r}")
        loaded = self.load_pipeline(base, ctx, DTYPES[options.get("dtype", "fp32")])
        if loaded.loaded_from:
            ctx.progress.say(f"'{base}' was removed from the Hugging Face Hub: loaded its maintained copy "
                             f"'{loaded.loaded_from}' (name that one in clood.toml)")
        threads = options.get("threads")
        return self.make_base(loaded, base, ctx, device=device, eval_draws=int(options.get("eval_draws", 4)),
                              threads=int(threads) if threads else None, buckets=ctx.config.prep.buckets,
                              resolution=ctx.config.prep.resolution)

    # --- what another family built on this one replaces (see clood_candy_plugins.flow)

    def load_pipeline(self, base: str, ctx: "StageContext", dtype):
        from clood_candy_plugins.sd.loading import load_pipeline

        options = ctx.options("sd")
        return load_pipeline(base, self.name, allow_pickle=ctx.config.allow_pickle, dtype=dtype,
                             single_file_config=options.get("single_file_config"))

    def make_base(self, loaded, base: str, ctx: "StageContext", **settings) -> "SDBase":
        from clood_candy_plugins.sd.base import SDBase

        return SDBase(loaded, base, **settings)

    def train(self, base: LoadedBase, data: TrainSet, config: TrainConfig, out_dir: Path, ctx: "StageContext", *,
              max_steps: int | None = None, on_step: Callable[[int, float], None] | None = None) -> TrainOutcome:
        from clood_candy_plugins.sd.train import train_lora

        return train_lora(self._own(base), data, config, Path(out_dir), ctx, max_steps=max_steps, on_step=on_step)

    def generate(self, base: LoadedBase, prompt: str, *, seed: int, lora: Path | None = None, weight: float = 1.0,
                 negative_prompt: str = "", steps: int | None = None, guidance: float | None = None) -> Image.Image:

        sd = self._own(base)
        with sd.lock:
            sd.adapters.activate(Path(lora) if lora else None, weight)
            return sd.draw(prompt, seed=seed, steps=steps, negative_prompt=negative_prompt, guidance=guidance)

    # --- for the plan: no model is loaded (planning.py, sizing.py)

    def training_defaults(self, config: "CloodConfig") -> TrainingDefaults:
        from clood_candy_plugins.sd.planning import training_defaults

        return training_defaults(self.name, config)

    def device(self, config: "CloodConfig") -> DeviceInfo:
        from clood_candy_plugins.sd.planning import device_info

        return device_info(config)

    def model_size(self, config: "CloodConfig", recipe: TrainConfig, resolution: int) -> ModelSize:
        from clood_candy_plugins.sd.sizing import model_size

        return model_size(config, self.name, recipe, resolution)

    def _own(self, base: LoadedBase) -> "SDBase":
        from clood_candy_plugins.sd.base import SDBase

        if not isinstance(base, SDBase) or base.family != self.name:
            raise TypeError(f"the {self.name} family was handed a {getattr(base, 'family', '?')} base")
        return base


class SD1Family(SDFamily):
    name = "sd1"


class SDXLFamily(SDFamily):
    name = "sdxl"


