"""candy-mini: the miniature Stable Diffusion this project trains on its own candy studio
(``clood pretrain candy-mini``), shipped here in fp16.

``base/`` is a diffusers SD folder (``--base candy-mini``), ``clip/`` the CLIP model trained
beside it (the clip judges' default for this base), ``pretraining/`` the record of how both
were made: recipe, command, curves and snapshot grids.
"""

from __future__ import annotations

from pathlib import Path

NAME = "candy-mini"
HERE = Path(__file__).parent
PARTS = ("base", "clip", "pretraining")
# The classifier-free guidance this base draws its colours truest at, as a model card states
# one (Flux dev 3.5, SD 7). Measured on the shipped weights (bench/candy_mini_bench.py
# --guidance 7,4): colour named right 75 % at 4 against 69 % at 7 (seeds 0-3; 66 against 53 %
# on seeds 4-7); at 7 its yellow turns lime and a white sweep green, as high CFG does.
GUIDANCE = 4.0


def folder(part: str = "base") -> Path | None:
    """The shipped folder of one part, or None when this install has no weights for it."""
    if part not in PARTS:
        raise ValueError(f"candy-mini has no part {part!r}")
    path = HERE / part
    marker = "record.json" if part == "pretraining" else "config.json" if part == "clip" else "model_index.json"
    return path if (path / marker).is_file() else None
