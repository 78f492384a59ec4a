"""What the user changed by hand (``clood review``): ``RUN/review/edits.json``.

Every change is one record — a caption rewritten, a photo kept or culled, a crop box moved —
with who made it, when, and what was before and after. The file is the truth; ``dataset/`` is
derived from it: :func:`apply_to_dataset` lays the edits over whatever the caption stage last
wrote, so a rerun of that stage (which rewrites ``dataset/`` from the fight) never loses them.
A photo prepared by hand (brought back after prep culled it, or made again from a moved crop
box) carries its whole record in its edit and its image under ``review/``, where a rerun of
prep (which empties ``prep/images``) does not reach.
"""

from __future__ import annotations

import filecmp
import getpass
import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from clood_candy import fsutil
from clood_candy.records import Photo, Record
from clood_candy.runstore import fingerprint, now

EDITS = Path("review") / "edits.json"
MAX_CAPTION_CHARS = 5000  # far past any text encoder's window (SDXL's CLIPs: 75 tokens, ~300 chars)
# One line of text: C0/C1 controls (newline and tab included: a .txt caption is one line for
# kohya), the Unicode line/paragraph separators and the bidi overrides that make text read
# differently from what it says.
REFUSED_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


class CaptionRefused(ValueError):
    """A caption that would change nothing for the better; the message says why, for people."""


class CaptionEdit(Record):
    kind: Literal["caption"] = "caption"
    photo: str  # the photo id (dataset/metadata.jsonl "id")
    file: str  # its image in dataset/
    old: str
    new: str
    how: str = "edited"  # or the bulk edit that made it: "replaced 'a' with 'b'", "renamed tag 'a' to 'b'"
    who: str
    when: str


class PhotoDecision(Record):
    kind: Literal["photo"] = "photo"
    source: str  # the prep entry (prep/report.json "source")
    photo: str | None = None  # its photo id when prep kept it
    old: Literal["kept", "culled", "failed"]
    new: Literal["kept", "culled"]
    why: str = ""
    who: str
    when: str
    # Culled: the training caption it had, what a later keep restores. Brought back after prep
    # culled it: the caption it starts with, from the caption fight or the placeholder.
    caption: str | None = None
    prepared: Photo | None = None  # brought back: the photo as prep would have prepared it (image under review/)
    caption_from: Literal["fight", "placeholder"] | None = None


class CropEdit(Record):
    kind: Literal["crop"] = "crop"
    source: str  # the prep entry
    photo: str
    old: list[int] | None
    new: list[int]  # as prepared: with prep.buckets, trimmed to its bucket's ratio
    why: str = ""
    who: str
    when: str
    prepared: Photo  # the photo made again from the original with that box (image under review/crops/)


Edit = Annotated[CaptionEdit | PhotoDecision | CropEdit, Field(discriminator="kind")]


class ReviewEdits(Record):
    edits: list[Edit] = Field(default_factory=list)

    def captions(self) -> dict[str, str]:
        """photo id → the caption the user last gave it."""
        return {e.photo: e.new for e in self.edits if isinstance(e, CaptionEdit)}

    def decisions(self) -> dict[str, PhotoDecision]:
        """prep source → the user's last decision on it."""
        return {e.source: e for e in self.edits if isinstance(e, PhotoDecision)}

    def crops(self) -> dict[str, CropEdit]:
        """photo id → the crop box the user last set."""
        return {e.photo: e for e in self.edits if isinstance(e, CropEdit)}

    def placeholders(self) -> dict[str, str]:
        """photo id → the placeholder caption a brought-back photo started with (culled and
        kept again since, it may still carry it)."""
        return {e.photo: e.caption for e in self.edits if isinstance(e, PhotoDecision)
                and e.photo and e.caption and e.caption_from == "placeholder"}


def edited_photos(edits: ReviewEdits, photos: list[Photo]) -> list[Photo]:
    """Prep's photos as the user left them: each photo brought back (its record from the
    edit), each moved crop box's photo in place of prep's. A photo culled again stays listed,
    as prep's own are: the decisions, not this list, say what trains. Idempotent."""
    out = {p.id: p for p in photos}
    for e in edits.edits:
        if isinstance(e, PhotoDecision) and e.prepared is not None and e.prepared.id not in out:
            out[e.prepared.id] = e.prepared
    for photo_id, crop in edits.crops().items():
        if photo_id in out:
            out[photo_id] = crop.prepared
    return list(out.values())


def who() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (some containers): still a person, not a stage
        return "user"


def load(run_root: Path) -> ReviewEdits:
    path = Path(run_root) / EDITS
    return ReviewEdits.model_validate(fsutil.read_json(path)) if path.is_file() else ReviewEdits()


def save(run_root: Path, edits: ReviewEdits) -> None:
    fsutil.write_json(Path(run_root) / EDITS, edits)


def version(text: str) -> str:
    """What a form sends back to prove it saw the caption it replaces."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def check_caption(text: str) -> str:
    """The caption as it will be stored (outer whitespace trimmed), or CaptionRefused."""
    text = text.strip()
    if not text:
        raise CaptionRefused("the caption is empty: the photo would train on nothing "
                             "(cull it on the Photos page instead)")
    if len(text) > MAX_CAPTION_CHARS:
        raise CaptionRefused(f"the caption has {len(text):,} characters; at most {MAX_CAPTION_CHARS:,} are kept "
                             "(the text encoder reads about 300)")
    bad = REFUSED_CHARS.search(text)
    if bad:
        what = {"\n": "a line break", "\r": "a line break", "\t": "a tab"}.get(bad.group(), f"U+{ord(bad.group()):04X}")
        raise CaptionRefused(f"the caption holds {what} at character {bad.start() + 1}: a caption is one line of "
                             "plain text (trainers read only its first line)")
    return text


def dataset_rows(run_root: Path) -> list[dict]:
    """dataset/metadata.jsonl's rows (file_name, text, id, source); [] before the caption stage."""
    path = Path(run_root) / "dataset" / "metadata.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line) if line.strip() else None
        except ValueError:
            continue  # a torn line from a killed write: the caption stage rewrites the file whole
        if isinstance(row, dict) and isinstance(row.get("text"), str):
            rows.append(row)
    return rows


def _write_rows(dataset: Path, rows: list[dict]) -> None:
    fsutil.write_text(dataset / "metadata.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def apply_to_dataset(run_root: Path, edits: ReviewEdits, photos: list[Photo]) -> dict[str, int]:
    """Lay the user's edits over ``dataset/`` (its images, .txt files and metadata.jsonl):
    their captions replace the fight's, photos they culled leave it, a photo they culled and
    kept again comes back with the caption it had (one prep culled, with the caption it was
    brought back with), a moved crop box's image replaces prep's. Idempotent; returns what it
    changed."""
    root = Path(run_root)
    dataset = root / "dataset"
    rows = dataset_rows(root)
    if not rows or not edits.edits:
        return {"captions": 0, "culled": 0, "restored": 0, "cropped": 0}
    photos = edited_photos(edits, photos)
    captions, decisions = edits.captions(), edits.decisions()
    culled = {d.photo for d in decisions.values() if d.new == "culled" and d.photo}
    changed = {"captions": 0, "culled": 0, "restored": 0, "cropped": 0}
    kept_rows = []
    for row in rows:
        if row.get("id") in culled:
            for name in (row["file_name"], f"{Path(row['file_name']).stem}.txt"):
                (dataset / name).unlink(missing_ok=True)
            changed["culled"] += 1
            continue
        wanted = captions.get(row.get("id", ""))
        if wanted is not None and wanted != row["text"]:
            row["text"] = wanted
            changed["captions"] += 1
        kept_rows.append(row)
    present = {r.get("id") for r in kept_rows}
    by_id = {p.id: p for p in photos}
    for decision in decisions.values():
        photo = by_id.get(decision.photo or "")
        if decision.new != "kept" or photo is None or photo.id in present:
            continue
        caption = captions.get(photo.id) or _caption_before_cull(edits, decision.source) or decision.caption
        image = root / photo.image
        if not caption or not image.is_file():
            continue  # no image to train on (a run folder copied without review/)
        shutil.copyfile(image, dataset / _dataset_name(photo))
        kept_rows.append({"file_name": _dataset_name(photo), "text": caption, "id": photo.id, "source": photo.source})
        present.add(photo.id)
        changed["restored"] += 1
    crops = edits.crops()
    for row in kept_rows:  # a moved crop box: its image, whatever the caption stage copied from prep
        crop = crops.get(row.get("id", ""))
        image, there = (root / crop.prepared.image if crop else None), dataset / row["file_name"]
        if image is not None and image.is_file() and not (there.is_file() and filecmp.cmp(image, there, shallow=False)):
            shutil.copyfile(image, there)
            changed["cropped"] += 1
    order = {p.id: i for i, p in enumerate(photos)}
    kept_rows.sort(key=lambda r: order.get(r.get("id", ""), len(order)))
    for row in kept_rows:  # every .txt follows its row, so a trainer reading either sees the same caption
        txt = dataset / f"{Path(row['file_name']).stem}.txt"
        if not txt.is_file() or txt.read_text(encoding="utf-8") != row["text"] + "\n":
            fsutil.write_text(txt, row["text"] + "\n")
    if any(changed.values()):
        _write_rows(dataset, kept_rows)
    return changed


def _dataset_name(photo: Photo) -> str:
    """A photo's image in dataset/ is named by its id, as the caption stage names prep's
    (a moved crop's image lives in a folder of its own under the same name)."""
    return f"{photo.id}{Path(photo.image).suffix or '.png'}"


def _caption_before_cull(edits: ReviewEdits, source: str) -> str | None:
    for e in reversed(edits.edits):
        if isinstance(e, PhotoDecision) and e.source == source and e.new == "culled" and e.caption:
            return e.caption
    return None


def digest(run_root: Path) -> str | None:
    """What training depends on beyond the caption stage: the edits' effect (None when there
    are none, so runs without edits keep the fingerprints they had)."""
    edits = load(run_root)
    if not edits.edits:
        return None
    decisions = {s: d.new for s, d in edits.decisions().items()}
    # Crop boxes only when there are some, so edits from before they existed keep their fingerprint.
    crops = sorted((p, c.new) for p, c in edits.crops().items())
    return fingerprint(sorted(edits.captions().items()), sorted(decisions.items()), *([crops] if crops else []))


def record(run_root: Path, edits: ReviewEdits, photos: list[Photo],
           *new: CaptionEdit | PhotoDecision | CropEdit) -> dict[str, int]:
    """Append ``new`` to the edits, save them, then bring dataset/ in line. edits.json is
    written first: should the second step be cut short, the next apply (or caption rerun)
    finishes it."""
    edits.edits.extend(new)
    save(run_root, edits)
    return apply_to_dataset(run_root, edits, photos)


def stamp() -> dict[str, str]:
    return {"who": who(), "when": now()}


def set_aside(run_root: Path, stamp_text: str) -> Path:
    """Move edits.json aside as review/edits-discarded-<stamp>.json (never deleted: the
    user may want them back, by moving the file home again); returns where it went."""
    path = Path(run_root) / EDITS
    target = path.with_name(f"edits-discarded-{stamp_text}.json")
    n = 2
    while target.exists():
        target, n = path.with_name(f"edits-discarded-{stamp_text}-{n}.json"), n + 1
    path.replace(target)
    return target
