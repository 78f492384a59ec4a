"""1. Your photos: every file's verdict with its reason, and each kept photo's crop box
drawn on the original."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from clood_candy.records import PrepEntry
from clood_candy_plugins.report.media import draw_box, img, open_thumbnail
from clood_candy_plugins.report.page import Section, esc, lesson, note
from clood_candy_plugins.report.rundata import RunData

THUMB = 300


def reason_kind(reason: str) -> str:
    """The reason's leading words ("blurry", "near-duplicate of …") without its numbers,
    so similar verdicts count together."""
    head = re.split(r"[(:;,]", reason, maxsplit=1)[0].strip().lower()
    head = re.sub(r"\b(of|to)\b.*$", "", head).strip()
    return head or "no reason given"


def _summary(entries: list[PrepEntry], resolution: int | None, fill: float) -> str:
    kept = [e for e in entries if e.status == "kept"]
    culled = [e for e in entries if e.status == "culled"]
    failed = [e for e in entries if e.status == "failed"]
    parts = [f"You gave me <b>{len(entries)}</b> file{'s' if len(entries) != 1 else ''}: "
             f"<b>{len(kept)}</b> kept, <b>{len(culled)}</b> culled, <b>{len(failed)}</b> could not be read."]
    for label, group in (("culled", culled), ("failed", failed)):
        if group:
            kinds = Counter(reason_kind(e.reason) for e in group).most_common()
            parts.append(f"The {label} ones: " + ", ".join(f"{n} × {esc(k)}" for k, n in kinds) + ".")
    size = f"{resolution}×{resolution}-pixel" if resolution else "square"
    why = (f"A model learns from every pixel it is given. A blurry or badly exposed photo teaches blur and "
           f"bad exposure; a near-duplicate counts the same picture twice, so the LoRA leans towards it. "
           f"Each kept photo is cut to a {size} square with the beans filling about {fill:.0%} of it "
           f"(the orange box below): the model trains on squares, and what is outside the box it never sees.")
    upscaled = [e for e in kept if e.upscaled is not None]
    if upscaled:
        by = sorted({e.upscaled.by for e in upscaled if e.upscaled is not None})
        parts.append(f"<b>{len(upscaled)}</b> kept photo{'s were' if len(upscaled) != 1 else ' was'} smaller than "
                     f"the training size and enlarged by {esc(', '.join(by))} (marked <i>upscaled</i> below).")
        why += (" A super-resolution network enlarges a small photo with detail it has learned to expect, "
                "where a plain resize only spreads the pixels (and teaches softness); that detail is its guess, "
                "not your candy, so look closely at those photos before you train on them.")
    return lesson(" ".join(parts), why)


def _card(run: RunData, entry: PrepEntry, photo_by_source: dict) -> str:
    photo = photo_by_source.get(entry.source)
    original = run.original(entry.source, photo)
    picture = ""
    if entry.status == "failed":  # prep could not read it: neither can we, say so plainly
        picture = '<div class="noimage">could not be opened</div>'
    elif original is not None:
        try:
            thumb, full = open_thumbnail(original, THUMB)
            if entry.status == "kept" and entry.crop_box:
                thumb = draw_box(thumb, full, entry.crop_box)
            picture = img(thumb, f"{entry.source} ({entry.status})", max_side=THUMB)
        except Exception as exc:  # an unreadable original is shown as such, not as a broken image
            picture = f'<div class="noimage">cannot show: {esc(type(exc).__name__)}</div>'
    if not picture and photo is not None and run.prepared(photo) is not None:
        thumb, _ = open_thumbnail(run.prepared(photo), THUMB)
        picture = img(thumb, f"{entry.source} (prepared square)", max_side=THUMB)
    if not picture:
        picture = '<div class="noimage">no picture to show</div>'
    badges = f'<span class="badge {esc(entry.status)}">{esc(entry.status)}</span>'
    if entry.upscaled is not None:  # its training pixels are partly the upscaler's invention: mark it
        badges += f' <span class="badge upscaled">upscaled {entry.upscaled.factor}x</span>'
    lines = [f'<div class="file">{esc(Path(entry.source).name)}</div>', f"{badges} {esc(entry.reason)}"]
    if entry.duplicate_of and "duplicate" not in entry.reason:
        lines.append(f"near-duplicate of {esc(Path(entry.duplicate_of).name)}")
    if entry.status == "kept" and entry.crop_box:
        x0, y0, x1, y1 = entry.crop_box
        lines.append(f"crop {x1 - x0}×{y1 - y0} px at ({x0}, {y0})")
    return f'<div class="card">{picture}<div>{"<br>".join(lines)}</div></div>'


def build(run: RunData) -> Section:
    section = Section("photos", "1. Your photos")
    if run.prep is None:
        section.missing = esc(run.missing("prep/report.json")) + ": run the prep stage to see your photos here."
        return section
    entries = run.prep.entries
    resolution = run.config.prep.resolution or (run.photos[0].width if run.photos else None)
    body = [_summary(entries, resolution, run.config.prep.target_fill)]
    if run.source is None or not run.source.exists():
        body.append(note("The original photo folder is no longer where it was, so only the prepared squares "
                         "can be shown.", "warn"))
    photo_by_source = {p.source: p for p in run.photos}
    # Kept photos first: they are the training set; then what was left out and why.
    order = {"kept": 0, "culled": 1, "failed": 2}
    cards = [_card(run, e, photo_by_source) for e in sorted(entries, key=lambda e: (order[e.status], e.source))]
    body.append(f'<div class="sheet">{"".join(cards)}</div>')
    section.body = "".join(body)
    return section
