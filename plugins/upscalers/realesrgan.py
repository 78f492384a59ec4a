"""The ``realesrgan`` upscaler: prep offers it for photos smaller than the training resolution
(``[prep] upscaler = "realesrgan"``), so they are enlarged by a super-resolution network
instead of a plain resize, which only spreads their pixels wider and trains softness.

Options, ``[plugins.realesrgan]``::

    model = "ai-forever/Real-ESRGAN/RealESRGAN_x4.pth"   # a local .pth/.safetensors file, or
                                                         # <owner>/<repo>/<file> on the Hugging Face Hub
    revision = "main"     # of the Hub repo
    tile = 256            # input pixels per tile side (0: the whole photo at once)
    tile_pad = 16         # neighbouring pixels each tile sees
    device = "auto"       # auto: CUDA when there is a GPU, else the CPU
    half = true           # fp16 on a GPU when the model allows it (the CPU runs fp32)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from clood_candy.hookspecs import hookimpl
from clood_candy.stages import Upscaler

if TYPE_CHECKING:
    import torch

    from clood_candy.context import StageContext
    from clood_candy_plugins.upscalers.weights import Network

# torch and the network code load on first use: every clood command loads this plugin.

# Real-ESRGAN's 4× RRDBNet (23 blocks) as ai-forever publish it on the Hub; their
# RealESRGAN_x2.pth and the official RealESRGAN_x4plus.pth (a local file) work the same.
DEFAULT_MODEL = "ai-forever/Real-ESRGAN/RealESRGAN_x4.pth"
MAX_PASSES = 3  # a 2× model asked for 16× runs three times and LANCZOS does the rest: a fourth pass costs more than it shows


class RealEsrganOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = DEFAULT_MODEL
    revision: str | None = None
    tile: int = Field(256, ge=0)
    tile_pad: int = Field(16, ge=0)
    device: str = "auto"
    half: bool = True


def pick_device(wanted: str) -> str:
    if wanted != "auto":
        return wanted
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class RealEsrganUpscaler(Upscaler):
    name = "realesrgan"

    def __init__(self, options: RealEsrganOptions | None = None):
        self.options = options
        self._net: Network | None = None
        self._why: str | None = None
        self._loaded_for: RealEsrganOptions | None = None
        self._device: str = "cpu"
        self._dtype: torch.dtype | None = None

    def unavailable(self, ctx: "StageContext") -> str | None:
        try:
            options = ctx.typed_options(self.name, RealEsrganOptions)
        except ValueError as exc:
            return str(exc)
        return self._load(options)

    def _load(self, options: RealEsrganOptions) -> str | None:
        """Load once per set of options; a failure is remembered, so each photo after the
        first is not another download attempt."""
        if options == self._loaded_for:
            return self._why
        import torch

        from clood_candy_plugins.upscalers.weights import Unavailable, load_network, one_line

        self.options, self._loaded_for, self._net, self._why = options, options, None, None
        try:
            net = load_network(options.model, options.revision)
            device = pick_device(options.device)
            self._dtype = torch.float16 if options.half and net.half_ok and device.startswith("cuda") else torch.float32
            net.module.to(device=device, dtype=self._dtype)
            self._net, self._device = net, device
        except Unavailable as exc:
            self._why = str(exc)
        except Exception as exc:  # a bad device name, CUDA trouble: still one line, and prep goes on
            self._why = f"cannot set up {options.model}: {one_line(exc)}"
        return self._why

    def describe(self) -> str:
        return f"{self.name} ({self._net.describe()})" if self._net is not None else self.name

    def upscale(self, image: Image.Image, factor: int) -> Image.Image:
        if self._net is None:
            why = self._load(self.options or RealEsrganOptions())  # called without prep's ctx: the defaults
            if why:
                raise RuntimeError(why)
        net = self._net
        assert net is not None
        from clood_candy_plugins.upscalers.tiles import to_image, to_tensor

        target = (image.width * factor, image.height * factor)
        x, reached, passes = to_tensor(image), 1, 0
        while reached < factor and passes < MAX_PASSES:
            x = self._run(net, x)
            reached, passes = reached * net.scale, passes + 1
        out = to_image(x)
        # The model's own scale rarely is the factor asked (4× for 3×): resize to it exactly.
        return out if out.size == target else out.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)

    def _run(self, net: Network, x: torch.Tensor) -> torch.Tensor:
        import torch

        from clood_candy_plugins.upscalers.tiles import upscale_tensor

        options = self.options or RealEsrganOptions()
        tile = options.tile
        while True:
            try:
                return upscale_tensor(net, x, tile=tile, pad=options.tile_pad, device=self._device,
                                      dtype=self._dtype or torch.float32)
            except torch.cuda.OutOfMemoryError:
                # Smaller tiles, not a failed photo: the memory a tile needs falls with its area.
                if 0 < tile <= 32:
                    raise
                tile = 256 if tile == 0 else tile // 2
                torch.cuda.empty_cache()


@hookimpl
def register_upscalers(register):
    register(RealEsrganUpscaler())
