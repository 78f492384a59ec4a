"""The per-concept leak check (issue 19): does "jlybn sunkist" draw Sunkist, or Jelly Belly?

A LoRA with several concepts (brands, each with its own trigger after the run's) can learn
the words loosely: every brand's word then draws the same average bean. For a finished run
with two or more concepts, each concept's sample row (the final checkpoint at weight 1.0,
the LoRA fully on) is embedded with the clip judges' CLIP image model, and so is every
concept's training photos; each sample counts for the concept whose photos' mean embedding
is nearest (cosine). A word that draws its own brand has all its samples nearest its own
photos; the rest say which brand it leaks to.

The result is ``samples/concept_leaks.json`` (:class:`ConceptLeaks`). Without two concepts,
samples or a loadable CLIP the check sits out with a one-line reason in that record, never
an exception. It lives here, not in the core, because the CLIP is this plugin's; the report
runs it (no hook follows sampling).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field

from clood_candy import fsutil
from clood_candy.edits import dataset_rows
from clood_candy.records import ConceptInfo, ConceptSet, Photo, PrepReport, Record, SampleImage, SampleSet

if TYPE_CHECKING:
    from clood_candy.context import StageContext

LEAKS = "samples/concept_leaks.json"
WEIGHT = 1.0  # the LoRA fully on: what the concept's word draws, not the base's guess
CHECKPOINT = "final"  # the LoRA that ships


class ConceptLeak(Record):
    """One concept's samples: how many look like its own photos, and where the rest go."""

    trigger: str  # the concept's own word (the key everywhere below, as the dataset rows write it)
    name: str
    prompts: list[str] = Field(default_factory=list)  # its rows' prompts that were measured
    samples: int = 0
    own: int = 0  # samples nearest its own photos
    own_share: float = 0.0
    leaks_to: str | None = None  # the other concept its samples are most often nearest; None: no leak
    leak_share: float = 0.0  # that concept's share of its samples


class ConceptLeaks(Record):
    model: str = ""  # the CLIP that embedded the pictures ("" when it sat out before loading one)
    miniature: bool = False  # candy-mini's own miniature CLIP: a toy model's figure, not a real CLIP's
    checkpoint: str = CHECKPOINT
    weight: float = WEIGHT
    concepts: list[ConceptLeak] = Field(default_factory=list)
    matrix: dict[str, dict[str, int]] = Field(default_factory=dict)  # trigger → nearest concept's trigger → samples
    photos: dict[str, int] = Field(default_factory=dict)  # trigger → training photos embedded
    sat_out: str | None = None  # one line: why there are no figures
    problems: list[str] = Field(default_factory=list)  # pictures that could not be used, with why


def concept_samples(samples: SampleSet, run_trigger: str, concepts: list[ConceptInfo]) -> dict[str, list[SampleImage]]:
    """trigger → that concept's final-checkpoint samples at weight 1.0. A prompt belongs to a
    concept when it names "<run trigger> <concept trigger>" (the sample stage's row, or the
    user's own prompt with that word); one naming two concepts measures neither."""
    found: dict[str, list[SampleImage]] = {c.trigger: [] for c in concepts}
    words = {c.trigger: re.compile(rf"(?<!\w){re.escape(run_trigger)}\s+{re.escape(c.trigger)}(?!\w)", re.I)
             for c in concepts}
    for image in samples.images:
        if image.checkpoint != CHECKPOINT or abs(image.weight - WEIGHT) > 1e-6:
            continue
        named = [t for t, pattern in words.items() if pattern.search(image.prompt)]
        if len(named) == 1:
            found[named[0]].append(image)
    return found


def concept_photos(root: Path, concepts: list[ConceptInfo]) -> dict[str, list[Path]]:
    """trigger → its photos' files: the dataset's copies (what training saw), else prep's."""
    where = {row["id"]: root / "dataset" / row["file_name"] for row in dataset_rows(root)
             if isinstance(row.get("id"), str) and isinstance(row.get("file_name"), str)}
    prep = root / "prep" / "report.json"
    if prep.is_file():
        photos: list[Photo] = PrepReport.model_validate(fsutil.read_json(prep)).photos
        for photo in photos:
            if not where.get(photo.id, Path()).is_file():
                where[photo.id] = root / photo.image
    return {c.trigger: [where[i] for i in c.photos if i in where and where[i].is_file()] for c in concepts}


def tally(concepts: list[ConceptInfo], photo_emb: dict[str, np.ndarray], sample_emb: dict[str, np.ndarray],
          prompts: dict[str, list[str]]) -> tuple[list[ConceptLeak], dict[str, dict[str, int]]]:
    """Each sample to the concept whose photos' mean (unit) embedding has the highest cosine
    with it. ``photo_emb``/``sample_emb``: trigger → rows of unit embeddings."""
    triggers = [c.trigger for c in concepts if len(photo_emb.get(c.trigger, ())) > 0]
    means = np.stack([photo_emb[t].mean(axis=0) for t in triggers])
    means /= np.linalg.norm(means, axis=1, keepdims=True).clip(min=1e-12)  # a mean of unit vectors is shorter
    leaks, matrix = [], {}
    for c in concepts:
        rows = sample_emb.get(c.trigger)
        if rows is None or not len(rows) or c.trigger not in triggers:
            continue
        nearest = Counter(triggers[k] for k in np.argmax(rows @ means.T, axis=1))
        matrix[c.trigger] = {t: nearest.get(t, 0) for t in triggers}
        others = [(n, t) for t, n in nearest.most_common() if t != c.trigger]
        n = len(rows)
        leaks.append(ConceptLeak(trigger=c.trigger, name=c.name, prompts=prompts.get(c.trigger, []), samples=n,
                                 own=nearest.get(c.trigger, 0), own_share=round(nearest.get(c.trigger, 0) / n, 4),
                                 leaks_to=others[0][1] if others else None,
                                 leak_share=round(others[0][0] / n, 4) if others else 0.0))
    return leaks, matrix


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"[:300]


def measure(root: Path, ctx: "StageContext") -> ConceptLeaks:
    """The check on the run folder ``root``; a reason instead of figures where it cannot run."""
    root = Path(root)
    path = root / "dataset" / "concepts.json"
    concepts = ConceptSet.model_validate(fsutil.read_json(path)).concepts if path.is_file() else []
    if len(concepts) < 2:
        return ConceptLeaks(sat_out=f"the run has {len(concepts)} concept(s): a leak needs two or more to leak between")
    path = root / "samples" / "samples.json"
    if not path.is_file():
        return ConceptLeaks(sat_out="no samples yet (the sample stage makes samples/samples.json)")
    rows = concept_samples(SampleSet.model_validate(fsutil.read_json(path)), ctx.config.trigger, concepts)
    if not any(rows.values()):
        return ConceptLeaks(sat_out=f"no sample of a concept's trigger at the {CHECKPOINT} checkpoint and weight "
                                    f"{WEIGHT:g} (the sample stage draws them unless [sample] weights leaves 1.0 out)")
    photos = concept_photos(root, concepts)
    problems = [f"concept {c.trigger}: none of its {len(c.photos)} photos is in the run folder"
                for c in concepts if not photos[c.trigger]]
    if sum(bool(p) for p in photos.values()) < 2:
        return ConceptLeaks(sat_out="fewer than two concepts have photos in the run folder to compare with",
                            problems=problems)
    from clood_candy_plugins import candy_mini
    from clood_candy_plugins.judges.clip import load_options
    from clood_candy_plugins.judges.clip_samples import ClipModel  # the sample judges' embedding, reused

    try:
        model = load_options(ctx).model
        clip = ClipModel(ctx)
    except Exception as exc:  # no weights, bad options, no hub: the check sits out, the report goes on
        return ConceptLeaks(sat_out=f"no CLIP model to embed with ({_first_line(exc)})", problems=problems)
    shipped = candy_mini.folder("clip")
    miniature = shipped is not None and Path(model).expanduser().resolve() == shipped.resolve()
    photo_emb = {t: _embed(clip, paths, problems) for t, paths in photos.items() if paths}
    sample_emb = {t: _embed(clip, [root / i.image for i in images], problems) for t, images in rows.items() if images}
    prompts = {t: list(dict.fromkeys(i.prompt for i in images)) for t, images in rows.items()}
    leaks, matrix = tally(concepts, photo_emb, sample_emb, prompts)
    return ConceptLeaks(model=model, miniature=miniature, concepts=leaks, matrix=matrix,
                        photos={t: len(e) for t, e in photo_emb.items()}, problems=problems,
                        sat_out=None if leaks else "no concept's samples could be read")


def _embed(clip, paths: list[Path], problems: list[str]) -> np.ndarray:
    """Unit image embeddings of the readable ones (one unreadable picture costs itself only)."""
    try:
        return clip.images([str(p) for p in paths])
    except Exception:
        rows = []
        for p in paths:
            try:
                rows.append(clip.images([str(p)])[0])
            except Exception as exc:
                problems.append(f"{p.name}: {_first_line(exc)}")
        return np.stack(rows) if rows else np.zeros((0, 1), np.float32)


def ensure(root: Path, ctx: "StageContext") -> ConceptLeaks:
    """The written record when it is newer than the samples and concepts it measured and of
    the same CLIP; else measured afresh and written (a report rebuild costs no re-embedding)."""
    root = Path(root)
    out = root / LEAKS
    inputs = [root / "samples" / "samples.json", root / "dataset" / "concepts.json"]
    if out.is_file():
        try:
            kept = ConceptLeaks.model_validate(fsutil.read_json(out))
            from clood_candy_plugins.judges.clip import load_options

            fresh = all(not p.is_file() or p.stat().st_mtime <= out.stat().st_mtime for p in inputs)
            if fresh and kept.sat_out is None and kept.model == load_options(ctx).model:
                return kept
        except Exception:  # unreadable or options now invalid: measure again, which says why
            pass
    found = measure(root, ctx)
    if (root / "samples").is_dir():
        fsutil.write_json(out, found)
    return found
