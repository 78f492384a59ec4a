"""What the user's sources (``shared/seeds/``) say, independent of the model family:
how many photos each LoRA type wants, and how often training should see each one.
Family-specific numbers (learning rate, rank, batch) come from the family itself."""

from __future__ import annotations

from typing import NamedTuple


class DatasetSize(NamedTuple):
    minimum: int
    recommended: tuple[int, int]
    maximum: int  # beyond it, more photos add little ("before diminishing returns")


# seed 004, "Dataset Size Recommendations".
DATASET_SIZES: dict[str, DatasetSize] = {
    "character": DatasetSize(15, (25, 35), 50),
    "style": DatasetSize(30, (50, 100), 200),
    "object": DatasetSize(15, (25, 35), 40),
    "concept": DatasetSize(20, (40, 60), 100),
    "scene": DatasetSize(20, (40, 60), 80),
}
DATASET_SOURCE = "seed 004's dataset size table"

# seed 002: "Train with total number of steps that gives 20-25 repeats of each image."
REPEATS_RANGE = (20, 25)
REPEATS_SOURCE = "seed 002: 20–25 repeats of each image"

# seed 003: 100 steps "too few", 500 "minimum recommended", 1000 "recommended".
MIN_STEPS = 500
MIN_STEPS_SOURCE = "seed 003: below 500 steps a LoRA barely learns its subject"

# seed 004: "Use cosine scheduler with warmup."
SCHEDULER_SOURCE = "seed 004: cosine schedule with warmup"
WARMUP_SHARE = 0.05  # of the steps: long enough to spare the fresh adapter the full rate

# seed 003: "Sample Every: 50", "check samples at step 500, 750, 1000": a handful per run.
CHECKPOINTS_PER_RUN = 10
