"""Take the captioned dataset to the trainer a user already knows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from clood_candy import fsutil
from clood_candy.errors import UserError


def _rows(dataset: Path) -> list[dict]:
    meta = dataset / "metadata.jsonl"
    if not meta.is_file():
        raise UserError(f"no captioned dataset in {dataset}: run the caption stage first")
    return [json.loads(line) for line in meta.read_text(encoding="utf-8").splitlines() if line.strip()]


def export_dataset(dataset: Path, fmt: str, dest: Path, *, trigger: str, class_word: str, repeats: int = 10) -> Path:
    """kohya: ``<dest>/<repeats>_<trigger> <class>/`` with image + .txt (sd-scripts' DreamBooth
    folder naming); ai-toolkit: one folder of image + .txt; imagefolder: images +
    ``metadata.jsonl`` (file_name, text) as HF ``datasets`` reads it."""
    rows = _rows(dataset)
    if fmt == "kohya":
        if repeats < 1:
            raise UserError("--repeats must be at least 1")
        target = dest / f"{repeats}_{trigger} {class_word}"
    elif fmt in ("ai-toolkit", "imagefolder"):
        target = dest
    else:
        raise UserError(f"unknown export format '{fmt}' (kohya, ai-toolkit, imagefolder)")
    target.mkdir(parents=True, exist_ok=True)
    lines = []
    for row in rows:
        image = dataset / row["file_name"]
        shutil.copyfile(image, target / image.name)
        if fmt == "imagefolder":
            lines.append(json.dumps({"file_name": image.name, "text": row["text"]}, ensure_ascii=False))
        else:
            fsutil.write_text(target / f"{image.stem}.txt", row["text"] + "\n")
    if fmt == "imagefolder":
        fsutil.write_text(target / "metadata.jsonl", "\n".join(lines) + "\n")
    return target
