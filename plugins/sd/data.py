"""The training data side: which items each step sees, how captions are varied
(tag shuffling, caption dropout), and the facts about the data that go into the LoRA's
metadata. Every random choice is derived from (seed, step), so continuing from a
checkpoint replays exactly what an uninterrupted run would have done."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from functools import lru_cache
from pathlib import Path

import torch

from clood_candy.records import TrainConfig, TrainItem


def step_seed(seed: int, step: int, micro: int = 0) -> int:
    digest = hashlib.sha256(f"{seed}:{step}:{micro}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def step_generator(seed: int, step: int, micro: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(step_seed(seed, step, micro))


@lru_cache(maxsize=8)
def _epoch_order(seed: int, epoch: int, size: int, stream: int = 0) -> tuple[int, ...]:
    gen = torch.Generator().manual_seed(step_seed(seed, -1 - stream, epoch))
    return tuple(torch.randperm(size, generator=gen).tolist())


def batch_indices(count: int, config: TrainConfig, step: int, micro: int, processes: int = 1, *,
                  stream: int = 0, repeats: int | None = None) -> list[int]:
    """Items for one micro-batch of ALL processes together (``batch_size`` each; process k
    takes the k-th slice): epochs of the data (× repeats), each in a fresh order.
    ``stream`` 1 orders a second collection (class images) independently."""
    per_epoch = count * max(1, config.repeats if repeats is None else repeats)
    size = config.batch_size * processes
    first = ((step - 1) * config.gradient_accumulation + micro) * size
    picked = []
    for position in range(first, first + size):
        epoch, offset = divmod(position, per_epoch)
        picked.append(_epoch_order(config.seed, epoch, per_epoch, stream)[offset] % count)
    return picked


def vary_caption(caption: str, config: TrainConfig, rng: random.Random) -> str:
    """Caption dropout (train unconditionally now and then) and tag shuffling that keeps
    the first ``keep_tokens`` tags (the trigger) in place."""
    if config.caption_dropout > 0 and rng.random() < config.caption_dropout:
        return ""
    if not config.shuffle_tags:
        return caption
    tags = [t.strip() for t in caption.split(",") if t.strip()]
    keep, rest = tags[: config.keep_tokens], tags[config.keep_tokens:]
    rng.shuffle(rest)
    return ", ".join(keep + rest)


def tag_frequency(items: list[TrainItem], config: TrainConfig, trigger: str) -> dict[str, dict[str, int]]:
    """kohya's ss_tag_frequency: {"<repeats>_<name>": {tag: count}}; A1111 shows it."""
    groups: dict[str | None, list[TrainItem]] = {}
    for item in items:
        groups.setdefault(item.concept, []).append(item)
    out = {}
    for concept, members in groups.items():  # a concept is kohya's folder: "<repeats>_<trigger> <concept>"
        unique = list({i.image: i for i in members}.values())
        copies = len(members) // len(unique)
        counts = Counter(t.strip() for item in unique for t in item.caption.split(",") if t.strip())
        out[f"{config.repeats * copies}_{trigger} {concept}" if concept else f"{config.repeats}_{trigger}"] = \
            dict(counts.most_common())
    return out


def dataset_hash(items: list[TrainItem]) -> str:
    """sha256 over each image's bytes and caption, in a fixed order."""
    total = hashlib.sha256()
    for item in sorted(items, key=lambda i: (i.image, i.caption)):
        total.update(hashlib.sha256(Path(item.image).read_bytes()).digest())
        total.update(item.caption.encode())
    return total.hexdigest()


def describe_data(items: list[TrainItem], validation: list[TrainItem], config: TrainConfig, trigger: str) -> dict[str, str]:
    return {"ss_num_train_images": str(len(items) * max(1, config.repeats)),
            "ss_num_validation_images": str(len(validation)),
            "ss_tag_frequency": json.dumps(tag_frequency(items, config, trigger)),
            "ss_dataset_hash": dataset_hash(items)}
