"""Tile-based inference. An ESRGAN holds 64 feature channels at the output size: a 4000 px
result is gigabytes at once, one 256 px tile a few hundred megabytes. Each tile runs with
``pad`` pixels of its neighbours around it, and only its own part of the result is kept, so
the seams see the same context the whole image would (exactly so when ``pad`` covers the
network's reach)."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from clood_candy_plugins.upscalers.weights import Network


def to_tensor(image: Image.Image) -> torch.Tensor:
    """(1, 3, H, W) float32 in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def to_image(tensor: torch.Tensor) -> Image.Image:
    array = tensor[0].clamp(0, 1).permute(1, 2, 0).mul(255.0).round().to(torch.uint8).numpy()
    return Image.fromarray(array, "RGB")


def run_padded(net: Network, x: torch.Tensor) -> torch.Tensor:
    """The network on ``x``, padded at the bottom and right to the sizes the model takes
    (Real-ESRGAN 2×: even sides), its output cropped back to ``x``'s area."""
    h, w = x.shape[-2:]
    th, tw = max(h, net.minimum), max(w, net.minimum)
    if net.square:
        th = tw = max(th, tw)
    th, tw = math.ceil(th / net.multiple_of) * net.multiple_of, math.ceil(tw / net.multiple_of) * net.multiple_of
    if (th, tw) != (h, w):
        # Reflection continues the picture (no dark border for the model to sharpen); it
        # cannot reach past a side's own length, a tiny input repeats its edge instead.
        mode = "reflect" if th - h < h and tw - w < w else "replicate"
        x = F.pad(x, (0, tw - w, 0, th - h), mode=mode)
    return net.module(x)[..., : h * net.scale, : w * net.scale]


def upscale_tensor(net: Network, x: torch.Tensor, *, tile: int, pad: int, device: str,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``x`` (1, C, H, W) on the CPU enlarged ``net.scale`` times, in tiles of ``tile`` input
    pixels (0: whole); the result is assembled on the CPU, so the device holds one tile."""
    scale = net.scale
    _, _, h, w = x.shape

    def run(piece: torch.Tensor) -> torch.Tensor:
        # no_grad, not inference_mode, and nothing written into a result in place: spandrel's
        # models answer with inference tensors, which refuse in-place changes.
        with torch.no_grad():
            return run_padded(net, piece.to(device, dtype)).float().cpu()

    if tile <= 0 or not net.tiles_ok or (h <= tile and w <= tile):
        return run(x).clamp(0, 1)
    out: torch.Tensor | None = None
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            ya, xa, yb, xb = max(0, y0 - pad), max(0, x0 - pad), min(h, y1 + pad), min(w, x1 + pad)
            got = run(x[:, :, ya:yb, xa:xb])
            if out is None:  # the model's own channel count (3 for RGB models)
                out = torch.empty((1, got.shape[1], h * scale, w * scale))
            out[:, :, y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
                got[:, :, (y0 - ya) * scale:(y1 - ya) * scale, (x0 - xa) * scale:(x1 - xa) * scale]
    assert out is not None
    return out.clamp_(0, 1)  # out is ours to change
