"""Aspect-bucketed training data (``prep.buckets``): each image trains at its nearest
bucket's size (clood_candy.buckets) instead of as its centre square; a batch is drawn
from one bucket, since images of different sizes cannot be stacked; SDXL's size and crop
conditioning says where each image's pixels came from.

Batches keep the determinism of data.batch_indices: an epoch's order over the items
comes from (seed, epoch), it is cut into per-bucket batches, and the batches are put in
an order from (seed, epoch) too, so a continued run replays an uninterrupted one."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image, ImageOps

from clood_candy.buckets import Fit, cover_crop, nearest_bucket
from clood_candy.records import TrainConfig, TrainItem, TrainSet
from clood_candy_plugins.sd.data import step_seed
from clood_candy_plugins.sd.denoise import Cond

if TYPE_CHECKING:
    from clood_candy_plugins.sd.base import SDBase

ORDER_STREAM, BATCH_STREAM = -4, -5  # step_seed streams of their own (data.py uses -1, -2; prior.py -3)


@dataclass
class Fitted:
    """One image encoded at its bucket: its latent, how it was fitted, its own size."""

    latent: torch.Tensor  # (C, h, w)
    fit: Fit
    image_size: tuple[int, int]


def upright_size(path: Path) -> tuple[int, int]:
    """The image's (width, height) as load_fitted sees it (EXIF rotation applied), from
    its header alone."""
    with Image.open(path) as img:
        width, height = img.size
        turned = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    return (height, width) if turned else (width, height)


def bucket_of(path: Path, resolution: int) -> tuple[int, int]:
    return nearest_bucket(upright_size(path), resolution)


def load_fitted(path: Path, bucket: tuple[int, int]) -> tuple[torch.Tensor, Fit, tuple[int, int]]:
    """An image as a (3, h, w) tensor in [-1, 1] at ``bucket``: resized to cover it, then
    centre-cropped (an image prep already made at this bucket is used as it is)."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img).convert("RGB")
        size = img.size
        fit = cover_crop(size, bucket)
        if fit.resized != size:
            img = img.resize(fit.resized, Image.Resampling.LANCZOS)
        bw, bh = bucket
        if img.size != (bw, bh):
            img = img.crop((fit.left, fit.top, fit.left + bw, fit.top + bh))
        data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    return data.view(bh, bw, 3).permute(2, 0, 1).float() / 127.5 - 1.0, fit, size


def size_ids(original_size: tuple[int, int] | None, crop_box: list[int] | None, image_size: tuple[int, int],
             fit: Fit) -> list[int]:
    """SDXL's six time ids as its training example and kohya compute them: original
    (height, width), crop (top, left), target (height, width). Original: the photo before
    prep resized it; crop: where the trained pixels start in that photo resized to the
    scale they train at (prep's crop and the bucket fit together). Without the photo's
    facts the image itself is the original."""
    width, height = image_size
    if original_size is None or crop_box is None:
        original_size, crop_box = image_size, [0, 0, width, height]
    x0, y0, x1, y1 = crop_box
    scale_x, scale_y = fit.resized[0] / max(1, x1 - x0), fit.resized[1] / max(1, y1 - y0)
    bw, bh = fit.bucket
    return [original_size[1], original_size[0], round(y0 * scale_y) + fit.top, round(x0 * scale_x) + fit.left, bh, bw]


@dataclass
class BucketedLatents:
    """Latents of images of differing sizes, with each one's bucket and SDXL time ids."""

    latents: list[torch.Tensor]  # (C, h, w) each
    sizes: list[tuple[int, int]]  # each item's bucket (width, height) in pixels
    time_ids: torch.Tensor  # (N, 6) float32; used only by a model with time ids (SDXL)

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, index: Sequence[int] | torch.Tensor) -> "BucketedLatents":
        index = [int(i) for i in index]
        return BucketedLatents([self.latents[i] for i in index], [self.sizes[i] for i in index], self.time_ids[index])

    def stack(self) -> torch.Tensor:
        if len(set(self.sizes)) > 1:
            raise ValueError(f"latents of different buckets cannot be stacked: {sorted(set(self.sizes))}")
        return torch.stack(self.latents)

    def groups(self) -> list[list[int]]:
        """Item positions per bucket, buckets in the order first seen."""
        out: dict[tuple[int, int], list[int]] = {}
        for i, size in enumerate(self.sizes):
            out.setdefault(size, []).append(i)
        return list(out.values())


def latents_for(base: "SDBase", items: list[TrainItem], resolution: int,
                buckets: bool) -> "torch.Tensor | BucketedLatents":
    """The items' latents: square (base.latents, as without buckets) or at their buckets."""
    paths = [Path(i.image) for i in items]
    if not buckets:
        return base.latents(paths, resolution)
    fitted = base.bucket_latents(paths, resolution)
    ids = [size_ids(i.original_size, i.crop_box, f.image_size, f.fit) for i, f in zip(items, fitted)]
    return BucketedLatents([f.latent for f in fitted], [f.fit.bucket for f in fitted],
                           torch.tensor(ids, dtype=torch.float32).view(len(fitted), 6))


def with_time_ids(cond: Cond, ids: torch.Tensor | None) -> Cond:
    """``cond`` with its first len(ids) rows' time ids replaced (the rest, e.g. square
    class images, keep the square ids); unchanged for a model without time ids."""
    if ids is None or cond.time_ids is None:
        return cond
    time_ids = cond.time_ids.clone()
    time_ids[:len(ids)] = ids.to(device=time_ids.device, dtype=time_ids.dtype)
    return Cond(cond.embeds, cond.pooled, time_ids)


@lru_cache(maxsize=8)
def _epoch_batches(seed: int, epoch: int, sizes: tuple[tuple[int, int], ...], repeats: int,
                   size: int) -> tuple[tuple[int, ...], ...]:
    count = len(sizes)
    gen = torch.Generator().manual_seed(step_seed(seed, ORDER_STREAM, epoch))
    order = [p % count for p in torch.randperm(count * repeats, generator=gen).tolist()]
    members: dict[tuple[int, int], list[int]] = {}
    for i in order:
        members.setdefault(sizes[i], []).append(i)
    batches = []
    for bucket in members.values():
        for start in range(0, len(bucket), size):
            batch = bucket[start:start + size]
            # A short last batch borrows from its bucket's start: every batch is full, so
            # every process has its share and every step the same weight.
            batch += [bucket[k % len(bucket)] for k in range(size - len(batch))]
            batches.append(tuple(batch))
    gen = torch.Generator().manual_seed(step_seed(seed, BATCH_STREAM, epoch))
    return tuple(batches[k] for k in torch.randperm(len(batches), generator=gen).tolist())


def batches_per_epoch(sizes: Sequence[tuple[int, int]], repeats: int, size: int) -> int:
    return sum(math.ceil(n * repeats / size) for n in Counter(sizes).values())


def bucket_batch_indices(sizes: Sequence[tuple[int, int]], config: TrainConfig, step: int, micro: int,
                         processes: int = 1) -> list[int]:
    """Items for one micro-batch of ALL processes together (``batch_size`` each; process k
    takes the k-th slice), all from one bucket."""
    size = config.batch_size * processes
    repeats = max(1, config.repeats)
    epoch, offset = divmod((step - 1) * config.gradient_accumulation + micro, batches_per_epoch(sizes, repeats, size))
    return list(_epoch_batches(config.seed, epoch, tuple(sizes), repeats, size)[offset])


def identity_parts(data: TrainSet) -> list:
    """What bucketed training adds to a run's identity (its images' geometry sets SDXL's
    conditioning); nothing without buckets, so those runs keep their identity."""
    if not data.buckets:
        return []
    return ["buckets", [[item.original_size, item.crop_box] for item in data.train]]


def bucket_metadata(items: list[TrainItem], resolution: int, buckets: bool) -> dict[str, str]:
    """kohya's bucket keys (A1111 and civitai show them): how many training images each
    bucket held, how far their ratios were from it, the smallest and largest side."""
    if not buckets:
        return {"ss_enable_bucket": "False", "ss_bucket_info": "null"}
    counts: Counter[tuple[int, int]] = Counter()
    errors = []
    for item in items:
        width, height = upright_size(Path(item.image))
        bucket = nearest_bucket((width, height), resolution)
        counts[bucket] += 1
        errors.append(abs(width / height - bucket[0] / bucket[1]))
    ordered = sorted(counts, key=lambda b: (b[0] * b[1], b))
    info = {"buckets": {str(i): {"resolution": list(b), "count": counts[b]} for i, b in enumerate(ordered)},
            "mean_img_ar_error": sum(errors) / len(errors) if errors else 0.0}
    sides = [side for b in counts for side in b] or [resolution]
    return {"ss_enable_bucket": "True", "ss_bucket_info": json.dumps(info), "ss_bucket_no_upscale": "False",
            "ss_min_bucket_reso": str(min(sides)), "ss_max_bucket_reso": str(max(sides))}
