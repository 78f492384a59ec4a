"""Real-ESRGAN's network, RRDBNet, built from a state dict in the layout Real-ESRGAN and
BasicSR save (conv_first, body.N.rdbK.convM, conv_body, conv_upN, conv_hr, conv_last).

spandrel reads this and many other architectures and is tried first; this is what runs
where spandrel cannot be imported: its torchvision must be built for the same torch (a
CUDA torchvision from PyPI does not load beside a CPU-only torch), and the transformers
stack must not see a torchvision that fails to import."""

from __future__ import annotations

import math
import re

import torch
from torch import nn
from torch.nn import functional as F

SLOPE = 0.2  # ESRGAN's leaky ReLU
RESIDUAL = 0.2  # residual scaling inside the dense blocks: what keeps a deep RRDB stack stable


class DenseBlock(nn.Module):
    """Five 3×3 convolutions, each seeing the input and every earlier output."""

    def __init__(self, feat: int, grow: int):
        super().__init__()
        for i in range(1, 6):
            setattr(self, f"conv{i}", nn.Conv2d(feat + (i - 1) * grow, grow if i < 5 else feat, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seen = [x]
        for i in range(1, 5):
            seen.append(F.leaky_relu(getattr(self, f"conv{i}")(torch.cat(seen, 1)), SLOPE))
        return x + RESIDUAL * self.conv5(torch.cat(seen, 1))


class RRDB(nn.Module):
    """Three dense blocks inside one more scaled residual."""

    def __init__(self, feat: int, grow: int):
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = DenseBlock(feat, grow), DenseBlock(feat, grow), DenseBlock(feat, grow)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + RESIDUAL * self.rdb3(self.rdb2(self.rdb1(x)))


class RRDBNet(nn.Module):
    """``ups`` nearest-neighbour 2× steps; ``unshuffle`` > 1 folds the input into channels
    first (Real-ESRGAN's 2× and 1× models), so the net scale is 2**ups / unshuffle."""

    def __init__(self, channels: int, feat: int, grow: int, blocks: int, ups: int, unshuffle: int = 1):
        super().__init__()
        self.unshuffle = unshuffle
        self.scale = 2 ** ups // unshuffle
        self.conv_first = nn.Conv2d(channels * unshuffle ** 2, feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(feat, grow) for _ in range(blocks)))
        self.conv_body = nn.Conv2d(feat, feat, 3, 1, 1)
        for i in range(1, ups + 1):
            setattr(self, f"conv_up{i}", nn.Conv2d(feat, feat, 3, 1, 1))
        self.ups = ups
        self.conv_hr = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(feat, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for i in range(1, self.ups + 1):
            feat = F.leaky_relu(getattr(self, f"conv_up{i}")(F.interpolate(feat, scale_factor=2, mode="nearest")), SLOPE)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), SLOPE))


def from_state_dict(state: dict[str, torch.Tensor]) -> RRDBNet:
    """The RRDBNet these weights fit, with them loaded; ValueError (one line) when they are
    not Real-ESRGAN's layout."""
    needed = ("conv_first.weight", "body.0.rdb1.conv1.weight", "conv_body.weight", "conv_hr.weight", "conv_last.weight")
    missing = [k for k in needed if k not in state]
    if missing:
        old = " (the original ESRGAN layout, model.N.…: spandrel reads it)" if "model.0.weight" in state else ""
        raise ValueError(f"not a Real-ESRGAN RRDBNet state dict{old}: no {missing[0]}")
    channels = state["conv_last.weight"].shape[0]
    folded = state["conv_first.weight"].shape[1]
    unshuffle = math.isqrt(folded // channels)
    if unshuffle ** 2 * channels != folded:
        raise ValueError(f"conv_first takes {folded} channels, not {channels} × a square: an RRDBNet variant this reader does not know")
    blocks = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"body\.(\d+)\.", k)))
    ups = sum(1 for k in state if re.fullmatch(r"conv_up\d+\.weight", k))
    net = RRDBNet(channels, feat=state["conv_first.weight"].shape[0], grow=state["body.0.rdb1.conv1.weight"].shape[0],
                  blocks=blocks, ups=ups, unshuffle=unshuffle)
    if net.scale < 1:
        raise ValueError(f"{ups} upsampling steps after a {unshuffle}× fold: not an upscaler")
    net.load_state_dict(state, strict=True)  # any key left over or short is another architecture: say so, never guess
    return net.eval()
