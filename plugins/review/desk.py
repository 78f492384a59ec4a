"""The changes a review page can make, each checked whole before anything is written: a
caption edit, a bulk find-and-replace or tag rename, a photo kept or culled (one prep culled
is prepared now, as prep would have), a crop box moved. Every change goes to
RUN/review/edits.json first, then into dataset/ (clood_candy.edits). A vote in the pick fight
goes where ``clood pick`` puts it (train/pick/votes.json, train/fight.json)."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

from clood_candy import edits
from clood_candy.cli import open_run
from clood_candy.context import StageContext
from clood_candy.edits import CaptionEdit, CaptionRefused, CropEdit, PhotoDecision
from clood_candy.errors import UserError
from clood_candy.pick.fight import vote
from clood_candy.plugins import load_plugins
from clood_candy.records import Photo, PickResult
from clood_candy_plugins.review import reprep, views

MAX_WHY_CHARS = 500
BOX_FIELDS = ("x0", "y0", "x1", "y1")


class Refused(ValueError):
    """A change that was not made; the message says why, for people."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Conflict(Exception):
    """The caption changed after the page that sent this edit was drawn."""

    photo: str
    current: str
    version: str
    yours: str


def one_line(text: str, what: str, refusal: str) -> str:
    """A short reason as it will be stored (outer whitespace trimmed), or Refused: a reason
    is read back in reports and terminals, where a control or bidi character misleads."""
    text = text.strip()
    if len(text) > MAX_WHY_CHARS:
        raise Refused(f"{refusal}: {what} has {len(text):,} characters; at most {MAX_WHY_CHARS} are kept.")
    bad = edits.REFUSED_CHARS.search(text)
    if bad:
        char = {"\n": "a line break", "\r": "a line break", "\t": "a tab"}.get(bad.group(), f"U+{ord(bad.group()):04X}")
        raise Refused(f"{refusal}: {what} holds {char} at character {bad.start() + 1}; "
                      "it must be one line of plain text.")
    return text


def parse_box(fields: dict[str, str]) -> list[int]:
    """x0, y0, x1, y1 from the form as whole pixels, or Refused (where it lies is the
    preparer's to check: it knows the photo's size and its own rules)."""
    box = []
    for key in BOX_FIELDS:
        text = fields.get(key, "").strip()
        if not re.fullmatch(r"-?[0-9]{1,6}", text):
            raise Refused(f"Crop box not moved: {key} must be a whole number of pixels, not “{text[:20]}”. "
                          "Nothing was changed.")
        box.append(int(text))
    return box


def replace_text(caption: str, find: str, replacement: str) -> str:
    return caption.replace(find, replacement)


def rename_tag(caption: str, old: str, new: str) -> str:
    """Tags are the comma-separated parts; ``old`` matches a whole tag, case aside. Renamed
    onto a tag the caption already has, the copy goes (one vocabulary, one mention);
    renamed to nothing, the tag goes."""
    wanted, out, seen = old.strip().casefold(), [], set()
    for tag in (t.strip() for t in caption.split(",")):
        tag = new.strip() if tag.casefold() == wanted else tag
        if tag and tag.casefold() not in seen:
            seen.add(tag.casefold())
            out.append(tag)
    return ", ".join(out)


class Desk:
    """One per served run. The lock makes each change's read-check-write whole, whichever
    thread the server runs it on."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.lock = threading.Lock()

    def _rows(self) -> dict[str, dict]:
        return {str(r.get("id", "")): r for r in edits.dataset_rows(self.root)}

    def save_caption(self, photo: str, text: str, seen_version: str) -> dict[str, int]:
        """Replace one caption, only if the sender saw the current one (else Conflict)."""
        try:
            new = edits.check_caption(text)
        except CaptionRefused as exc:
            raise Refused(f"Not saved: {exc}.") from None
        with self.lock:
            row = self._rows().get(photo)
            if row is None:
                raise Refused(f"Not saved: {photo!r} is not in the training set (culled, or the caption stage "
                              "has not run).", 404)
            if edits.version(row["text"]) != seen_version:
                raise Conflict(photo=photo, current=row["text"], version=edits.version(row["text"]), yours=new)
            if new == row["text"]:
                return {"captions": 0, "culled": 0, "restored": 0, "cropped": 0}
            change = CaptionEdit(photo=photo, file=row["file_name"], old=row["text"], new=new, **edits.stamp())
            return edits.record(self.root, edits.load(self.root), views.photos(self.root), change)

    def bulk(self, mode: str, find: str, replacement: str) -> int:
        """Find-and-replace (``text``) or tag rename (``tag``) across the set; every new
        caption is checked before any is written, so one bad result changes nothing."""
        if mode not in ("text", "tag"):
            raise Refused("Not changed: choose text or tag.")
        if not find.strip():
            raise Refused("Not changed: say what to find.")
        for what, value in (("find", find), ("replace with", replacement)):
            if len(value) > edits.MAX_CAPTION_CHARS or edits.REFUSED_CHARS.search(value):
                raise Refused(f"Not changed: “{what}” must be one short line of plain text.")
        how = (f"replaced '{find}' with '{replacement}'" if mode == "text"
               else f"renamed tag '{find.strip()}' to '{replacement.strip()}'")
        with self.lock:
            stamp, changes = edits.stamp(), []
            for photo, row in self._rows().items():
                after = replace_text(row["text"], find, replacement) if mode == "text" else \
                    rename_tag(row["text"], find, replacement)
                if after == row["text"]:
                    continue
                try:
                    after = edits.check_caption(after)
                except CaptionRefused as exc:
                    raise Refused(f"Not changed (no caption was): for {photo}, {exc}.") from None
                if after != row["text"]:
                    changes.append(CaptionEdit(photo=photo, file=row["file_name"], old=row["text"], new=after,
                                               how=how, **stamp))
            if changes:
                edits.record(self.root, edits.load(self.root), views.photos(self.root), *changes)
            return len(changes)

    def decide(self, index: int, new: str, why: str) -> tuple[PhotoDecision, str]:
        """Keep a culled photo or cull a kept one, with the user's reason. A photo prep culled
        has no training image: keeping it prepares it now, as prep would have (refused, and
        nothing written, when it cannot be). Returns the decision and prep's line on the photo."""
        if new not in ("kept", "culled"):
            raise Refused("Not changed: keep or cull.")
        why = " ".join(why.split())
        if len(why) > MAX_WHY_CHARS:
            raise Refused(f"Not changed: the reason is longer than {MAX_WHY_CHARS} characters.")
        with self.lock:
            entry = self._entry(index)
            if entry.prep_status == "failed":
                raise Refused(f"Not changed: prep could not read {entry.source} ({entry.reason}).")
            if entry.status == new:
                raise Refused(f"Not changed: {entry.source} is already {new}.", 409)
            row = self._rows().get(entry.photo or "")
            prepared, said, caption, came_from = None, "", row["text"] if row and new == "culled" else None, None
            if new == "kept" and entry.photo is None:  # prep culled it: no photo yet, nor from an earlier keep
                prepared, said, ctx = self._prepare(entry.source, self.root / reprep.PREPARED, "Not brought back")
                caption, came_from = reprep.starting_caption(ctx, prepared)
            decision = PhotoDecision(source=entry.source, photo=entry.photo or (prepared.id if prepared else None),
                                     old=entry.status, new=new, why=why, caption=caption,  # type: ignore[arg-type]
                                     prepared=prepared, caption_from=came_from, **edits.stamp())
            edits.record(self.root, edits.load(self.root), views.photos(self.root), decision)
            return decision, said

    def move_crop(self, index: int, fields: dict[str, str], why: str) -> tuple[CropEdit, str]:
        """Set a kept photo's crop box by hand: its training image is made again from the
        original with that box, by the run's preparer (which refuses a box outside the photo,
        not square without prep.buckets, or smaller than it accepts)."""
        why = one_line(why, "your reason", "Crop box not moved")
        box = parse_box(fields)
        with self.lock:
            entry = self._entry(index)
            if entry.status != "kept" or entry.photo is None:
                raise Refused(f"Crop box not moved: {entry.source} is {entry.status}; keep it first (only a kept "
                              "photo's crop trains). Nothing was changed.", 409)
            if box == entry.crop_box:
                raise Refused(f"Crop box not moved: {', '.join(map(str, box))} is its crop box already.", 409)
            folder = self.root / reprep.CROPS / "-".join(map(str, box))
            prepared, said, _ = self._prepare(entry.source, folder, "Crop box not moved", photo_id=entry.photo, box=box)
            assert prepared.crop_box is not None  # the preparer framed it with this box
            change = CropEdit(source=entry.source, photo=entry.photo, old=entry.crop_box, new=prepared.crop_box,
                              why=why, prepared=prepared, **edits.stamp())
            edits.record(self.root, edits.load(self.root), views.photos(self.root), change)
            return change, said

    def _entry(self, index: int) -> views.SheetEntry:
        entries = views.sheet(self.root)
        if not 0 <= index < len(entries):
            raise Refused("Not changed: no such photo in prep/report.json.", 404)
        return entries[index]

    def _prepare(self, source: str, out_dir: Path, refusal: str, **how) -> tuple[Photo, str, StageContext]:
        try:
            ctx = reprep.open_ctx(self.root)
            return (*reprep.prepare(ctx, source, out_dir, **how), ctx)
        except UserError as exc:  # unreadable, gone, a bad box: what the preparer said, on one line
            said = " ".join(str(exc).split()).rstrip(".")
            raise Refused(f"{refusal}: {source}: {said}. Nothing was changed.") from None

    def vote(self, candidate: str, why: str) -> PickResult:
        """The person's pick, exactly as ``clood pick RUN CANDIDATE --why`` records it: the
        vote in train/pick/votes.json, the panel decided again, its choice copied to
        train/<trigger>.safetensors and the verdict in train/fight.json."""
        why = one_line(why, "your reason", "Not voted")
        load_plugins()  # the user judge is a plugin; once loaded (as by the clood command), this does nothing
        with self.lock:
            try:
                return vote(open_run(self.root), candidate, why)
            except UserError as exc:  # what vote() checks before it writes: no pick fight, candidate or user judge
                raise Refused(f"Not voted: {exc}.") from None
