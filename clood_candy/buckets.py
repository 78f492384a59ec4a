"""Aspect-ratio buckets (kohya sd-scripts, NovelAI, OneTrainer): a fixed set of training
sizes of about the resolution's area, so 3:2 and 4:3 photos train whole instead of as
their centre square. Prep frames each photo to its nearest bucket; the trainer batches
images of one bucket together (a batch is one tensor, so one size).

Sizes are (width, height) in pixels; every bucket has both sides a multiple of the step
and an area of at most resolution²."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

KOHYA_STEP = 64  # kohya's bucket_reso_steps: latents a multiple of 8 for SD's UNet
MIN_STEP = 16  # latents stay even: a UNet that halves them once (the tiny bases) needs that


def bucket_step(resolution: int) -> int:
    """64 from 512 up; below (in practice only the toy bases), the largest power of two
    up to an eighth of the resolution, at least 16, so a small resolution has more
    buckets than the square."""
    if resolution >= 512:
        return KOHYA_STEP
    step = MIN_STEP
    while step * 2 <= resolution // 8:
        step *= 2
    return step


@lru_cache(maxsize=16)
def bucket_sizes(resolution: int) -> tuple[tuple[int, int], ...]:
    """kohya's make_bucket_resolutions idea: every width from half the resolution to
    twice it, in steps, with the tallest height that keeps the area within resolution²
    (and each size turned on its side), plus the square."""
    step = bucket_step(resolution)
    area = resolution * resolution
    low = max(step, resolution // 2 // step * step)
    high = max(low, 2 * resolution // step * step)
    side = max(step, resolution // step * step)
    sizes = {(side, side)}
    for width in range(low, high + 1, step):
        height = min(high, area // width // step * step)
        if height >= low:
            sizes.update({(width, height), (height, width)})
    return tuple(sorted(sizes))


def nearest_bucket(size: tuple[int, int], resolution: int) -> tuple[int, int]:
    """The bucket whose aspect ratio is nearest the image's (on a log scale, so 3:2 and
    2:3 are alike); a tie goes to the larger bucket."""
    width, height = size
    ratio = math.log(max(1, width) / max(1, height))
    return min(bucket_sizes(resolution), key=lambda b: (abs(math.log(b[0] / b[1]) - ratio), -b[0] * b[1], b[0]))


@dataclass(frozen=True)
class Fit:
    """How an image becomes its bucket: resized (aspect kept) to ``resized``, the
    smallest size that covers the bucket, then cropped at (``left``, ``top``). The crop
    is a sliver: the bucket's ratio is the nearest there is."""

    bucket: tuple[int, int]
    resized: tuple[int, int]
    left: int
    top: int


def cover_crop(size: tuple[int, int], bucket: tuple[int, int]) -> Fit:
    """Resize to cover ``bucket``, then the centre crop of it."""
    width, height = size
    bw, bh = bucket
    scale = max(bw / width, bh / height)
    rw, rh = max(bw, round(width * scale)), max(bh, round(height * scale))
    return Fit(bucket=(bw, bh), resized=(rw, rh), left=(rw - bw) // 2, top=(rh - bh) // 2)
