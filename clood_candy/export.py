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


def _concept_repeats(dataset: Path) -> dict[str, int]:
    """A concept's trigger → its balancing repeats (dataset/concepts.json; none: one concept)."""
    from clood_candy.records import ConceptSet

    path = dataset / "concepts.json"
    if not path.is_file():
        return {}
    return {c.trigger: c.repeats for c in ConceptSet.model_validate(fsutil.read_json(path)).concepts}


def export_dataset(dataset: Path, fmt: str, dest: Path, *, trigger: str, class_word: str, repeats: int = 10) -> Path:
    """kohya: ``<dest>/<repeats>_<trigger> <class>/`` with image + .txt (sd-scripts' DreamBooth
    folder naming), a folder per concept with its balancing repeats multiplied in, and a
    ``dataset_config.toml`` for --dataset_config saying the same; ai-toolkit: one folder of
    image + .txt (a subfolder per concept); imagefolder: images + ``metadata.jsonl``
    (file_name, text) as HF ``datasets`` reads it."""
    rows = _rows(dataset)
    concept_repeats = _concept_repeats(dataset)
    if fmt not in ("kohya", "ai-toolkit", "imagefolder"):
        raise UserError(f"unknown export format '{fmt}' (kohya, ai-toolkit, imagefolder)")
    if fmt == "kohya" and repeats < 1:
        raise UserError("--repeats must be at least 1")

    def folder_of(row: dict) -> tuple[Path, int, str]:
        concept = row.get("concept") if fmt != "imagefolder" else None
        tokens = f"{trigger} {concept}" if concept else trigger
        if fmt == "kohya":
            times = repeats * concept_repeats.get(concept, 1)
            return dest / f"{times}_{tokens} {class_word}", times, f"{tokens} {class_word}"
        return (dest / concept if concept else dest), 1, tokens

    lines, folders = [], {}
    for row in rows:
        target, times, tokens = folder_of(row)
        target.mkdir(parents=True, exist_ok=True)
        folders[target] = (times, tokens)
        image = dataset / row["file_name"]
        shutil.copyfile(image, target / image.name)
        if fmt == "imagefolder":
            lines.append(json.dumps({"file_name": image.name, "text": row["text"]}, ensure_ascii=False))
        else:
            fsutil.write_text(target / f"{image.stem}.txt", row["text"] + "\n")
    if fmt == "imagefolder":
        fsutil.write_text(dest / "metadata.jsonl", "\n".join(lines) + "\n")
    if fmt == "kohya":
        subsets = "".join(f"\n  [[datasets.subsets]]\n  image_dir = {json.dumps(str(f.resolve()))}\n"
                          f"  num_repeats = {t}\n  class_tokens = {json.dumps(tokens)}\n"
                          for f, (t, tokens) in sorted(folders.items()))
        fsutil.write_text(dest / "dataset_config.toml",
                          "# sd-scripts: --dataset_config dataset_config.toml (the captions are the .txt files)\n"
                          "[general]\ncaption_extension = \".txt\"\nkeep_tokens = 1\n\n[[datasets]]\n" + subsets)
    return next(iter(folders)) if len(folders) == 1 else dest
