"""What the review pages show, read fresh from the run folder on every request (a rerun of a
stage, or another tab's save, is on the next page load): the contact sheet, and per photo
every fighter's caption with the judges' verdicts."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

from clood_candy import edits, fsutil
from clood_candy.captions.tokens import CLIP_WINDOW, approx_tokens, overflow
from clood_candy.edits import CaptionEdit, CropEdit, PhotoDecision
from clood_candy.records import FightResult, JudgeVerdict, Photo, PrepReport, Score

ROTATING = {5, 6, 7, 8}  # EXIF orientations that swap width and height
CLOSE_MARGIN = 0.5  # the photo's winner at most half a pairing ahead of its runner-up


def read_record(path: Path, model):
    return model.model_validate(fsutil.read_json(path)) if path.is_file() else None


@dataclass
class SheetEntry:
    index: int
    source: str
    prep_status: str  # what prep decided
    status: str  # after the user's decision, if any
    reason: str
    crop_box: list[int] | None  # the one that trains: the user's when they moved it
    photo: str | None
    decision: PhotoDecision | None
    in_dataset: bool
    crop: CropEdit | None = None  # the user's last crop box, if any
    original_size: tuple[int, int] | None = None
    brought_back: bool = False  # prep culled it; the user kept it and it was prepared then


def sheet(root: Path) -> list[SheetEntry]:
    report = read_record(root / "prep" / "report.json", PrepReport)
    if report is None:
        return []
    made = edits.load(root)
    by_source = {p.source: p for p in edits.edited_photos(made, report.photos)}
    decisions, crops = made.decisions(), made.crops()
    present = {r.get("id") for r in edits.dataset_rows(root)}
    out = []
    for i, entry in enumerate(report.entries):
        decision = decisions.get(entry.source)
        photo = by_source.get(entry.source)
        out.append(SheetEntry(index=i, source=entry.source, prep_status=entry.status,
                              status=decision.new if decision else entry.status, reason=entry.reason,
                              crop_box=photo.crop_box if photo else entry.crop_box, photo=photo.id if photo else None,
                              decision=decision, in_dataset=photo is not None and photo.id in present,
                              crop=crops.get(photo.id) if photo else None,
                              original_size=photo.original_size if photo else None,
                              brought_back=photo is not None and entry.status != "kept"))
    return out


def photos(root: Path) -> list[Photo]:
    """Prep's photos as the user left them (brought back, crop boxes moved)."""
    report = read_record(root / "prep" / "report.json", PrepReport)
    return edits.edited_photos(edits.load(root), report.photos) if report else []


# --- thumbnails -------------------------------------------------------------


def original_of(source_dir: str | None, entry_source: str, photo: Photo | None) -> Path | None:
    """The untouched original: the photo's own record, else under the run's photo folder."""
    if photo is not None and photo.original and Path(photo.original).is_file():
        return Path(photo.original)
    if source_dir and Path(source_dir).is_dir():
        base = Path(source_dir).resolve()
        path = (base / entry_source).resolve()
        # Never outside the photo folder, whatever a hand-edited report.json says.
        if base in path.parents and path.is_file():
            return path
    return None


@lru_cache(maxsize=512)
def thumbnail(path: Path, mtime: float, box: tuple[int, ...] | None, colour: str, side: int = 320) -> bytes:
    """A JPEG thumbnail with the crop box drawn. Draft mode decodes a phone photo at a
    fraction of its size, so a sheet of many stays fast; cached by file and mtime."""
    with Image.open(path) as handle:
        width, height = handle.size
        orientation = handle.getexif().get(0x0112, 1)
        handle.draft("RGB", (side * 2, side * 2))
        picture = ImageOps.exif_transpose(handle).convert("RGB")
    full_w = height if orientation in ROTATING else width
    picture.thumbnail((side, side), Image.Resampling.LANCZOS)
    if box:
        scale = picture.width / full_w
        x0, y0, x1, y1 = (round(v * scale) for v in box)
        ImageDraw.Draw(picture).rectangle([x0, y0, x1 - 1, y1 - 1], outline=colour, width=max(2, side // 100))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=82)
    return buffer.getvalue()


# --- captions ---------------------------------------------------------------


@dataclass
class FighterRow:
    fighter: str
    caption: str
    scores: dict[str, Score | None]
    points: float
    best_here: bool
    used: bool  # its caption is the one the dataset got for this photo


@dataclass
class CaptionCard:
    photo: str
    file: str
    text: str
    version: str
    tokens: int
    window: int
    kept: str  # what the text encoder reads
    cut: str  # what falls past its window
    fighters: list[FighterRow] = field(default_factory=list)
    pointwise: list[str] = field(default_factory=list)
    verdicts: list[JudgeVerdict] = field(default_factory=list)  # the pairwise judges' (and the engine's)
    disagreed: bool = False
    flipped: bool = False
    margin: float | None = None
    history: list[CaptionEdit] = field(default_factory=list)
    needs_caption: bool = False  # brought back with the placeholder, not yet written by the user

    @property
    def close(self) -> bool:
        return self.margin is not None and self.margin <= CLOSE_MARGIN

    @property
    def disputed(self) -> bool:
        return self.disagreed or self.flipped or self.close


def count(text: str) -> dict[str, object]:
    """Tokens against CLIP's window, and the words past it. Approximate: the review page
    loads no model; the caption stage counts with the base's own tokenizer."""
    total, cut = overflow(text, approx_tokens, CLIP_WINDOW)
    kept = text[: -len(cut)].rstrip() if cut and text.endswith(cut) else text
    return {"tokens": total, "window": CLIP_WINDOW, "cut": cut, "kept": kept, "approximate": True}


def points(fight: FightResult, photo: str) -> dict[str, float]:
    """Pairings won on one photo, each pair decided by the judges' weighted vote as the
    fight engine decides it (a tie counts half)."""
    votes: dict[tuple[str, str], float] = {}
    for v in fight.items.get(photo, []):
        weight = fight.judges.get(v.judge, 1.0)
        votes[(v.a, v.b)] = votes.get((v.a, v.b), 0.0) + {"a": weight, "b": -weight, "tie": 0.0}[v.outcome]
    out: dict[str, float] = {}
    for (a, b), vote in votes.items():
        share = 1.0 if vote > 1e-12 else 0.0 if vote < -1e-12 else 0.5
        out[a] = out.get(a, 0.0) + share
        out[b] = out.get(b, 0.0) + 1.0 - share
    return out


def disagreement(verdicts: list[JudgeVerdict]) -> bool:
    """Two judges preferred opposite captions of the same pair."""
    said: dict[tuple[str, str], set[str]] = {}
    for v in verdicts:
        if v.judge != "engine" and v.outcome != "tie":
            said.setdefault((v.a, v.b), set()).add(v.outcome)
    return any(len(outcomes) > 1 for outcomes in said.values())


def cards(root: Path, config_merge: bool = False) -> list[CaptionCard]:
    fight = read_record(root / "caption" / "fight.json", FightResult)
    history: dict[str, list[CaptionEdit]] = {}
    made = edits.load(root)
    for e in made.edits:
        if isinstance(e, CaptionEdit):
            history.setdefault(e.photo, []).append(e)
    placeholders = made.placeholders()
    finals = {}
    if fight is not None:
        for fighter in fight.fighters:
            path = root / "caption" / fighter / "training_captions.json"
            found = fsutil.read_json(path) if path.is_file() else {}
            finals[fighter] = found if isinstance(found, dict) else {}
    out = []
    for row in edits.dataset_rows(root):
        text, photo, file = row["text"], str(row.get("id", "")), str(row["file_name"])
        card = CaptionCard(photo=photo, file=file, text=text, version=edits.version(text),
                           history=history.get(photo, []), needs_caption=placeholders.get(photo) == text,
                           **_counted(text))
        if fight is not None and photo in fight.items:
            _fill_fight(card, fight, finals, config_merge)
        out.append(card)
    return out


def _counted(text: str) -> dict[str, object]:
    found = count(text)
    return {k: found[k] for k in ("tokens", "window", "kept", "cut")}


def _fill_fight(card: CaptionCard, fight: FightResult, finals: dict[str, dict], merge: bool) -> None:
    card.pointwise = [j for j in fight.judges if j in fight.scores]
    won = points(fight, card.photo)
    best = fight.per_item_winners.get(card.photo)
    used = best if merge else fight.winner
    for fighter in fight.fighters:
        card.fighters.append(FighterRow(
            fighter=fighter, caption=str(finals.get(fighter, {}).get(card.file, "")),
            scores={j: fight.scores[j].get(card.photo, {}).get(fighter) for j in card.pointwise},
            points=won.get(fighter, 0.0), best_here=fighter == best, used=fighter == used))
    verdicts = fight.items.get(card.photo, [])
    card.verdicts = [v for v in verdicts if v.judge not in card.pointwise]
    card.disagreed = disagreement(verdicts)
    card.flipped = any(v.flipped for v in verdicts)
    ranked = sorted(won.values(), reverse=True)
    card.margin = ranked[0] - ranked[1] if len(ranked) >= 2 else None
