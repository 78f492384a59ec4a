"""2. Captions and the fight: every fighter's caption for every photo, every judge's
verdict and reason, the aggregate with its confidence interval, and what the winning
captions say and leave to the trigger."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clood_candy import edits
from clood_candy.records import FighterStanding, FightResult, JudgeVerdict
from clood_candy_plugins.report.media import img, open_thumbnail
from clood_candy_plugins.report.page import Section, details, esc, lesson, note, plural, table
from clood_candy_plugins.report.rundata import RunData

OPEN_PHOTOS = 3  # photos shown before the rest fold away


def _description(run: RunData, kind: str, name: str) -> str:
    try:
        found = run.ctx.registry.of(kind).get(name.split("+")[0])
    except Exception:
        return ""
    return getattr(found, "description", "") or ""


def ci_bar(s: FighterStanding) -> str:
    """The win rate as a dot on its interval, against the 50 % coin-toss line."""
    if s.ci_low is None or s.ci_high is None:
        return f"{s.win_rate:.0%}"
    low, high = max(0.0, s.ci_low) * 100, min(1.0, s.ci_high) * 100
    return (f'<div class="ci" title="{s.ci_low:.0%}–{s.ci_high:.0%}"><div class="half"></div>'
            f'<div class="span" style="left:{low:.1f}%;width:{max(high - low, 0.5):.1f}%"></div>'
            f'<div class="dot" style="left:{s.win_rate * 100:.1f}%"></div></div>'
            f"{s.win_rate:.0%} (interval {s.ci_low:.0%}–{s.ci_high:.0%})")


def _standings(fight: FightResult) -> str:
    judges = sorted({j for s in fight.standings for j in s.mean_scores})
    rows = []
    for rank, s in enumerate(fight.standings, 1):
        name = esc(s.fighter) + (' <span class="badge win">winner</span>' if s.fighter == fight.winner else "")
        strength = f"{s.strength:.2f}" if s.strength is not None else "–"
        rows.append([str(rank), name, ci_bar(s), strength] + [f"{s.mean_scores[j]:.3g}" if j in s.mean_scores else "–"
                                                              for j in judges])
    headers = ["#", "fighter", "share of photos won", "strength"] + [f"mean {esc(j)} score" for j in judges]
    return table(headers, rows)


def _judges(run: RunData, fight: FightResult) -> str:
    rows = []
    for name, weight in fight.judges.items():
        flip = fight.flip_rates.get(name)
        flip_text = (f"changed its mind in {flip:.0%} of pairs when the two captions were swapped"
                     if flip is not None else "scores each caption on its own (no order to swap)")
        failures = fight.judge_failures.get(name)
        if failures is not None and failures.note:
            flip_text += f"; <b>{esc(failures.note)}</b> (those photos went without its vote)"
        rows.append([esc(name), f"{weight:g}", esc(_description(run, "judge", name)), flip_text])
    for key, why in fight.forfeits.items():
        if key.startswith("judge:"):
            rows.append([esc(key[6:]), "–", "", f"sat out: {esc(why)}"])
    return table(["judge", "weight", "what it checks", "consistency"], rows)


def _verdict_line(v: JudgeVerdict) -> str:
    who = {"a": v.a, "b": v.b, "tie": "tie"}[v.outcome]
    flip = " (changed its mind when the order was swapped, so it counts as a tie)" if v.flipped else ""
    return (f"<li><b>{esc(v.judge)}</b>: {esc(v.a)} vs {esc(v.b)} → <b>{esc(who)}</b>{flip}"
            f'<br><span class="bound">{esc(v.reason)}</span></li>')


def pairs_won(fight: FightResult, item_id: str) -> dict[str, tuple[float, int]]:
    """Per fighter on one photo: (pairs won, pairs fought), each pair decided by the
    judges' weighted vote as the fight engine decides it (a tie counts half)."""
    votes: dict[tuple[str, str], float] = {}
    for v in fight.items.get(item_id, []):
        weight = fight.judges.get(v.judge, 1.0)
        votes.setdefault((v.a, v.b), 0.0)
        votes[(v.a, v.b)] += {"a": weight, "b": -weight, "tie": 0.0}[v.outcome]
    out: dict[str, tuple[float, int]] = {}
    for (a, b), vote in votes.items():
        share = 1.0 if vote > 1e-12 else 0.0 if vote < -1e-12 else 0.5
        for fighter, got in ((a, share), (b, 1.0 - share)):
            won, fought = out.get(fighter, (0.0, 0))
            out[fighter] = (won + got, fought + 1)
    return out


def _photo_rows(run: RunData, fight: FightResult) -> list[str]:
    finals = {f: run.captions(f) for f in fight.fighters}
    pointwise = [j for j in fight.judges if j in fight.scores]
    blocks = []
    for photo in run.photos:
        if photo.id not in fight.items:
            continue
        file = Path(photo.image).name
        picture = ""
        prepared = run.prepared(photo)
        if prepared is not None:
            thumb, _ = open_thumbnail(prepared, 128)
            picture = img(thumb, f"prepared {file}", max_side=128, cls="mid")
        best = fight.per_item_winners.get(photo.id)
        won = pairs_won(fight, photo.id)
        rows = []
        for fighter in fight.fighters:
            text = finals.get(fighter, {}).get(file, "")
            row = [esc(fighter) + (' <span class="badge win">best here</span>' if fighter == best else ""),
                   f'<span class="caption">{esc(text) or "<i>no caption</i>"}</span>']
            for judge in pointwise:
                score = fight.scores[judge].get(photo.id, {}).get(fighter)
                row.append("–" if score is None else
                           f'<b>{score.score:.3g}</b><br><span class="bound small">{esc(score.reason)}</span>')
            w, n = won.get(fighter, (0.0, 0))
            row.append(f"{w:g} of {n}")
            rows.append(row)
        headers = ["fighter", "training caption", *(f"{esc(j)} score" for j in pointwise), "pairs won"]
        # Pairwise judges (and the engine's no-caption rule) speak per pair, not per caption.
        spoken = [v for v in fight.items[photo.id] if v.judge not in pointwise]
        verdicts = f'<ul>{"".join(_verdict_line(v) for v in spoken)}</ul>' if spoken else ""
        blocks.append(f'<div class="row"><figure>{picture}<figcaption>{esc(file)}</figcaption></figure>'
                      f'<div style="flex:1;min-width:300px">{table(headers, rows)}{verdicts}</div></div>')
    return blocks


def _strategy(run: RunData, fight: FightResult) -> str:
    notes: dict[str, Any] = run.strategy.get(fight.winner or "", {})
    decisions: dict[str, str] = notes.get("decisions") or {}
    if not decisions:
        return note("caption/strategy.json has no decisions for the winner, so what it chose to say is not known.",
                    "missing")
    trigger = esc(run.config.trigger)
    said = [(c, d) for c, d in decisions.items() if d.startswith("captioned")]
    bound = [(c, d) for c, d in decisions.items() if not d.startswith("captioned")]
    out = [f"<h3>What the captions say, and what they leave to <span class=\"code\">{trigger}</span></h3>"]
    out.append(lesson(
        f"Words <b>in</b> a caption name things the model learns to tell apart, so you can change them in a prompt "
        f"later (“{trigger}, jellybean on wood”). Whatever is <b>never said</b> cannot be blamed on any word, so the "
        f"model pins it on the trigger: <span class=\"code\">{trigger}</span> comes to mean it.",
        esc(notes.get("rule", "")) + "." if notes.get("rule") else ""))
    rows = [[esc(c), "in the caption", esc(d)] for c, d in said]
    rows += [[esc(c), f"<b>left to {trigger}</b>", esc(d)] for c, d in bound]
    out.append(table(["what", "decision", "because"], rows))
    removed = notes.get("removed") or {}
    if removed:
        out.append(note("Words about the bean itself were cut so they bind to the trigger: " + ", ".join(
            f"“{esc(w)}” (from {n} caption{'s' if n != 1 else ''})" for w, n in removed.items()) + "."))
    dropped = {k: v for k, v in (notes.get("dropped") or {}).items() if v}
    if dropped:
        out.append(note(f"{len(dropped)} caption(s) were shortened to fit the text encoder's window; the words cut "
                        "are in section 3.", "warn"))
    return "".join(out)


SHOWN_EDITS = 12  # hand edits listed before the rest fold away


def _by_hand(run: RunData) -> str:
    """What the user changed in ``clood review`` (RUN/review/edits.json): the training set is
    the fight's captions with these laid over them."""
    try:
        found = edits.load(run.root).edits
    except (OSError, ValueError) as exc:
        return note(f"{esc(edits.EDITS)} could not be read: {esc(str(exc).splitlines()[0])}", "warn")
    if not found:
        return ""
    rows = []
    for e in reversed(found):  # newest first
        if isinstance(e, edits.CaptionEdit):
            rows.append([esc(e.photo), f"caption {esc(e.how)}",
                         f'<span class="caption">{esc(e.old)}</span> → '
                         f'<span class="caption"><b>{esc(e.new)}</b></span>',
                         f"{esc(e.who)}, {esc(e.when)}"])
        elif isinstance(e, edits.CropEdit):
            old = ", ".join(map(str, e.old)) if e.old else "none"
            rows.append([esc(e.source), f"crop box {esc(old)} → <b>{esc(', '.join(map(str, e.new)))}</b>",
                         esc(e.why) or "<i>no reason given</i>", f"{esc(e.who)}, {esc(e.when)}"])
        else:
            how = ""
            if e.prepared is not None:  # prep culled it: clood review prepared it when the user kept it
                how = " (prepared by clood review" + (", placeholder caption)" if e.caption_from == "placeholder"
                                                      else ")")
            rows.append([esc(e.source), f"{esc(e.old)} → <b>{esc(e.new)}</b>{esc(how)}",
                         esc(e.why) or "<i>no reason given</i>", f"{esc(e.who)}, {esc(e.when)}"])
    captions = sum(isinstance(e, edits.CaptionEdit) for e in found)
    crops = sum(isinstance(e, edits.CropEdit) for e in found)
    kinds = [plural(captions, "caption edit"), plural(len(found) - captions - crops, "photo decision")]
    kinds += [plural(crops, "crop box moved", "crop boxes moved")] if crops else []
    out = [f"<h3>Changed by hand</h3><p>{', '.join(kinds[:-1])} and {kinds[-1]} made in "
           f"<span class=\"code\">clood review</span>, "
           f"kept in {esc(edits.EDITS)}; the training set has them, and a rerun of the caption stage keeps them.</p>"]
    headers = ["photo", "change", "what", "who, when"]
    out.append(table(headers, rows[:SHOWN_EDITS]))
    if len(rows) > SHOWN_EDITS:
        out.append(details(f"the other {len(rows) - SHOWN_EDITS} changes", table(headers, rows[SHOWN_EDITS:])))
    return "".join(out)


def _concepts(run: RunData) -> str:
    """Several brands in one LoRA: each concept's trigger, photos, repeats and share, with a photo of it."""
    found = run.concepts
    if not found.concepts:
        return ""
    trigger = run.config.trigger
    rows_by_concept = {}
    for row in run.dataset:
        rows_by_concept.setdefault(row.get("concept"), row)
    rows = []
    for c in found.concepts:
        row = rows_by_concept.get(c.trigger)
        path = run.path("dataset/" + row["file_name"]) if row else None
        thumb = img(open_thumbnail(path, 96)[0], c.name, max_side=96) if path and path.is_file() else "—"
        rows.append([thumb, esc(c.name), f'<span class="code">{esc(trigger)} {esc(c.trigger)}</span>',
                     str(len(c.photos)), f"× {c.repeats}", f"{c.share:.0%}", esc(row["text"]) if row else "—"])
    body = [f"<h3>Concepts: {len(found.concepts)} triggers in one LoRA</h3>", lesson(
        f"Every caption starts with <b>{esc(trigger)}</b>, so the LoRA learns what all your photos share; each "
        "concept's photos also carry their own word right after it, so the model learns what sets that one apart "
        f"and you can ask for it (<span class=\"code\">{esc(trigger)} {esc(found.concepts[0].trigger)}</span>). A "
        "concept with fewer photos is repeated more in each pass over the photos, so each weighs about the same "
        "(seed 004: \u201cuse num_repeats to balance\u201d). The samples below have a row per trigger.")]
    body.append(table(["", "concept", "trigger", "photos", "repeats", "share of training", "a caption"], rows))
    if found.unassigned:
        body.append(note(f"{plural(len(found.unassigned), 'photo')} in no concept: "
                         f"<b>{esc(trigger)}</b> only."))
    if found.warnings:
        body.append(note("<br>".join(esc(w) for w in found.warnings), "warn"))
    return "".join(body)


def build(run: RunData) -> Section:
    section = Section("captions", "2. Captions and the fight")
    fight = run.fight
    if fight is None:
        section.missing = esc(run.missing("caption/fight.json")) + ": run the caption stage to see the fight."
        return section
    n_photos = len(fight.items)
    verdicts = sum(len(v) for v in fight.items.values())
    judges = ", ".join(f"{esc(j)} (weight {w:g})" for j, w in fight.judges.items())
    fighters = ", ".join(esc(f) for f in fight.fighters)
    intro = "A caption is the sentence the model reads while it looks at a photo. "
    if len(fight.fighters) < 2:
        intro += (f"Only {plural(len(fight.fighters), 'fighter')} ({fighters or 'none'}) wrote captions for your "
                  f"{plural(n_photos, 'photo')}, so there was no fight: its captions are used as they are. Add "
                  "captioners under [caption] captioners in clood.toml to make them compete.")
        body = [lesson(intro), f'<p class="verdict">{esc(fight.verdict)}</p>']
    else:
        intro += (f"{len(fight.fighters)} fighters ({fighters}) each wrote one for your {plural(n_photos, 'photo')}; "
                  f"on every photo they met in pairs and "
                  + (f"the judges — {judges} — gave {plural(verdicts, 'verdict')} in all." if judges else
                     "— with no judge available — a fighter only won where the other had no caption.")
                  + (" The judges that compare two captions are asked twice, with the captions swapped: a judge "
                     "that prefers whichever caption it reads first is not judging." if fight.flip_rates else ""))
        body = [lesson(intro,
                       "A fighter's share of photos won comes with an interval: where its win rate would likely land "
                       "on another set of photos like yours. When the winner's interval stays right of the dashed "
                       "50 % line it is clearly better; when it crosses it, it only leads.")]
        body.append(f'<p class="verdict">{esc(fight.verdict)}</p>')
        if not fight.clear and fight.winner:
            body.append(note("The fight was close: more photos would settle it. The leader's captions are used.",
                             "warn"))
        body.append(_standings(fight))
    if fight.judges or any(k.startswith("judge:") for k in fight.forfeits):
        body.append("<h3>The judges</h3>" + _judges(run, fight))
    forfeits = {k: v for k, v in fight.forfeits.items() if not k.startswith("judge:")}
    if forfeits:
        body.append(note("Sat out: " + "; ".join(f"{esc(k)} — {esc(v)}" for k, v in forfeits.items()), "warn"))
    if fight.placements:
        body.append(note("On Ray: " + "; ".join(
            f"{esc(name)} ran on {esc(t.node)}, {esc(t.device)} (waited {t.waited_s:.1f} s, took {t.seconds:.1f} s)"
            for name, t in fight.placements.items()) + ". The other captioners ran here, meanwhile."))
    body.append(_strategy(run, fight))
    body.append(_concepts(run))
    body.append(_by_hand(run))
    body.append("<h3>Photo by photo</h3>")
    body.append("<p>Each judge's score of each caption with its reason (higher is better), and how many of its "
                "pairings the caption won on that photo once the judges' weighted votes were added up.</p>")
    blocks = _photo_rows(run, fight)
    if not blocks:
        body.append(note("The fight's photos are not in prep/report.json, so they cannot be shown.", "missing"))
    body.extend(blocks[:OPEN_PHOTOS])
    if len(blocks) > OPEN_PHOTOS:
        body.append(details(f"the other {len(blocks) - OPEN_PHOTOS} photos", "".join(blocks[OPEN_PHOTOS:])))
    section.body = "".join(body)
    return section
