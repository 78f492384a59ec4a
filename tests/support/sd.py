"""The tiny-base training kit: bean-like photos, a train set, a recipe, a stage context."""

from pathlib import Path

import numpy as np
from PIL import Image

from clood_candy.records import TrainConfig, TrainItem, TrainSet

COLOURS = ["red", "blue", "green", "pink", "yellow", "white"]


def photos(folder: Path, count: int = 6, size: int = 64) -> list[Path]:
    """A bean-like coloured ellipse on a light background per photo."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        img = np.full((size, size, 3), 235, np.uint8)
        y, x = np.mgrid[:size, :size]
        cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
        img[((y - cy) ** 2 + ((x - cx) / 1.6) ** 2) < (size // 5) ** 2] = rng.integers(0, 255, 3)
        paths.append(folder / f"bean{i}.png")
        Image.fromarray(img).save(paths[-1])
    return paths


def train_set(folder: Path) -> TrainSet:
    items = [TrainItem(image=str(p), caption=f"jlybn, jellybean, {c}") for p, c in zip(photos(folder), COLOURS)]
    return TrainSet(train=items[:4], validation=items[4:], trigger="jlybn", class_word="jellybean", resolution=64)


def recipe(**changes) -> TrainConfig:
    # alpha 8 ≠ rank 4 on purpose: a converter that writes alpha = rank is caught.
    base = dict(name="t", rank=4, alpha=8.0, learning_rate=1e-2, steps=20, batch_size=2, checkpoint_every=10,
                validate_every=10, shuffle_tags=True, caption_dropout=0.1, lr_scheduler="cosine", snr_gamma=5.0)
    return TrainConfig(**{**base, **changes})


def module_ctx(root: Path, **overrides):
    from clood_candy.config import load_config
    from clood_candy.context import StageContext
    from clood_candy.plugins import build_registry, load_plugins
    from clood_candy.progress import Progress
    from clood_candy.runstore import RunStore

    config = load_config(None, overrides)
    load_plugins()
    run = RunStore.create(root / "run", "test", config.model_dump(mode="json"), None, demo=False)
    return StageContext(run=run, config=config, registry=build_registry(), progress=Progress(quiet=True))
