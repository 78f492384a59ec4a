"""7. Which LoRA: every candidate checkpoint's samples on the same prompts and seeds, each
sample judge's ranking, why the winner won and where the judges disagreed, and the
memorisation check with the nearest training photo beside the sample."""

from __future__ import annotations

from pathlib import Path

from clood_candy.records import PickResult
from clood_candy_plugins.report.media import image_cell, img, open_thumbnail
from clood_candy_plugins.report.page import Section, esc, lesson, note, table
from clood_candy_plugins.report.rundata import RunData

TITLE = "7. Which LoRA"


def build(run: RunData) -> Section:
    section = Section("pick", TITLE)
    fight = run.config_fight
    pick = fight.pick if fight else None
    if pick is None:
        section.missing = (esc(run.missing("train/fight.json")) + ": run the train stage to see its checkpoints "
                           "judged" if fight is None else "this run shipped its last step: [train.pick] was off.")
        return section
    steps = ", ".join(str(c.step) for c in pick.sheet.candidates if c.weight == 1)
    body = [lesson(
        f"Training saved the LoRA at several steps ({esc(steps)}). Which one to keep is the hard part (seed 002: "
        "“from 1200 on, they all look pretty good”). The validation loss alone cannot tell: it keeps falling while "
        "a LoRA starts to copy its training photos, and it says nothing about whether the trigger word still "
        "obeys a new prompt. So every candidate drew the same prompts with the same seeds — captions of photos "
        "training never saw, and the trigger somewhere your photos never were — and a panel of judges looked at "
        "the pictures.",
        "Too early, a LoRA draws the base model's idea of candy (under-trained: the trigger barely changes the "
        "picture). Too late, it draws your training photos whatever you ask (over-trained: the samples match "
        "photos, the new background never appears). The one to keep is in between."),
        note(f"<b>Chosen: {esc(pick.winner)}</b>. {esc(pick.why)}.", "ok")]
    if pick.disagreements:
        body.append("<p>Where the judges disagreed:</p><ul>" + "".join(f"<li>{esc(d)}</li>" for d in pick.disagreements)
                    + "</ul>")
    for cand, lines in pick.flags.items():
        body.extend(note(f"{esc(cand)}: {esc(line)}", "warn") for line in lines)
    body.append(candidate_grid(run, pick))
    body.append(_judges(pick))
    body.append(_memorisation(run, pick))
    body.append(f"<p>Your eye is a judge too: <span class=\"code\">clood pick {esc(run.root)} CANDIDATE</span> "
                "records your vote (it outweighs the rest unless you lower <span class=\"code\">[train.pick] "
                "judges.user</span>) and ships that LoRA as the run's.</p>")
    section.body = "".join(body)
    return section


def candidate_grid(run: RunData, pick: PickResult, heading: str = "The candidates") -> str:
    """Candidate × prompt, at the first seed, with the held-out photos over their columns."""
    sheet = pick.sheet
    seed = sheet.seeds[0]
    headers = ["candidate"]
    for prompt in sheet.prompts:
        label = "held-out photo's caption" if prompt.kind == "held-out" else f"new — {prompt.change}"
        head = f'<span class="caption">{esc(label)}: {esc(prompt.text)}</span>'
        if prompt.photo and Path(prompt.photo).is_file():
            head += "<br>" + img(open_thumbnail(Path(prompt.photo), 128)[0], "the held-out photo", cls="small")
        headers.append(head)
    by_cell = {(i.candidate, i.prompt): i for i in sheet.images if i.seed == seed}
    rows = []
    for cand in sheet.candidates:
        mark = " ✔ chosen" if cand.name == pick.winner else (" ⚠ flagged" if cand.name in pick.flags else "")
        loss = f"<br>val. loss {cand.val_loss:.4f}" if cand.val_loss is not None else ""
        cells = [f"<b>{esc(cand.name)}</b>{esc(mark)}<br>panel {pick.panel.get(cand.name, float('nan')):.2f}{loss}"]
        for p in range(len(sheet.prompts)):
            found = by_cell.get((cand.name, p))
            cells.append(image_cell(run.path(found.image) if found else None, f"{cand.name}, prompt {p + 1}"))
        rows.append(cells)
    return (f"<h3>{esc(heading)}, seed {seed}</h3>" + table(headers, rows, cls="grid")
            + (note(f"{len(sheet.failures)} sample(s) failed: {esc(sheet.failures[0])}", "warn") if sheet.failures else "")
            + f"<p>Sampling took {sheet.seconds:.1f} s, judging {pick.seconds:.1f} s.</p>")


def _judges(pick: PickResult) -> str:
    rows = []
    for judge, weight in pick.judges.items():
        if judge in pick.ranks:
            said = pick.scores[judge].get(pick.winner)
            rows.append([esc(judge), f"{weight:g}", esc(ranking(pick.ranks[judge])), esc(said.reason if said else "—")])
        else:
            rows.append([esc(judge), f"{weight:g}", "sat out", esc(pick.sat_out.get(judge, ""))])
    return ("<h3>The judges</h3><p>Each judge ranks the candidates; the panel takes the weighted mean of the ranks "
            "(raw scores share no scale), and a candidate a judge flags as unfit is passed over.</p>"
            + table(["judge", "weight", "its ranking, best first", f"what it said of {esc(pick.winner)}"], rows))


def ranking(ranks: dict[str, float]) -> str:
    """'a > b = c': best first, ties joined."""
    levels: dict[float, list[str]] = {}
    for cand, rank in ranks.items():
        levels.setdefault(rank, []).append(cand)
    return " > ".join(" = ".join(levels[r]) for r in sorted(levels, reverse=True))


def _memorisation(run: RunData, pick: PickResult) -> str:
    scores = pick.scores.get("memorisation")
    if not scores:
        return ""
    rows = []
    for cand in pick.sheet.candidates:
        ev = scores.get(cand.name).evidence if cand.name in scores else {}
        sample, photo = run.path(str(ev.get("sample", ""))), Path(str(ev.get("photo", "")))
        if not ev or not sample.is_file() or not photo.is_file():
            continue
        left = image_cell(sample, f"{cand.name}'s closest sample")
        right = img(open_thumbnail(photo, 160)[0], "the nearest training photo", cls="mid")
        verdict = "copies it" if cand.name in pick.flags else "its own picture"
        rows.append([esc(cand.name), left, right,
                     f"{float(ev['similarity']):.3f} (unseen photos: {float(ev['unseen']):.3f}) — {verdict}"])
    return ("<h3>Copying check</h3><p>Each candidate's sample that comes closest to any training photo, beside that "
            "photo. Photos of your shoot that training never saw come this close to a training photo at most "
            "(“unseen”); a sample much closer than that is a copy, not a jellybean the LoRA learned to draw.</p>"
            + table(["candidate", "closest sample", "nearest training photo", "similarity"], rows))
