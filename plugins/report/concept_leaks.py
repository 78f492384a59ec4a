"""The leak check in the report (issue 19): beside the samples, whether each concept's word
draws that concept, or another concept's look. The measurement is the clip plugin's
(plugins/judges/concept_leaks.py); the report runs it, since no hook follows sampling."""

from __future__ import annotations

from clood_candy_plugins.judges.concept_leaks import ConceptLeaks, ensure
from clood_candy_plugins.report.page import esc, lesson, note, table
from clood_candy_plugins.report.rundata import RunData


def looks_like(leaks: ConceptLeaks, trigger: str) -> str:
    """"sunkist 3/4, jellybelly 1/4": the concepts its samples were nearest, most first."""
    counts = leaks.matrix.get(trigger, {})
    n = sum(counts.values())
    ranked = sorted(((k, v) for k, v in counts.items() if v), key=lambda kv: (-kv[1], kv[0] != trigger))
    return ", ".join(f"{k} {v}/{n}" for k, v in ranked)


def html(run: RunData) -> str:
    """Nothing on a run without concepts; with one, the reason it sat out; else the table."""
    if not run.concepts.concepts:
        return ""
    try:
        leaks = ensure(run.root, run.ctx)
    except Exception as exc:  # the check must never cost the samples section
        run.ctx.log.warning("report: concept leak check failed: %s", exc)
        return note(f"The concept leak check could not run: {esc(type(exc).__name__)}: {esc(exc)}", "warn")
    head = "<h3>Does each concept's word draw that concept?</h3>"
    if leaks.sat_out:
        return head + note(f"The leak check sat out: {esc(leaks.sat_out)}.", "missing")
    trigger = esc(run.config.trigger)
    rows = []
    for c in leaks.concepts:
        mark = "" if c.leaks_to is None else f" — leaks to <b>{esc(c.leaks_to)}</b> ({c.leak_share:.0%})"
        rows.append([f'<span class="code">{trigger} {esc(c.trigger)}</span> samples look like: '
                     f"{esc(looks_like(leaks, c.trigger))}", f"{c.own}/{c.samples} ({c.own_share:.0%}){mark}"])
    body = [head, lesson(
        "Each picture drawn with a concept's word (the final LoRA at weight 1) is matched to the concept whose "
        "training photos it looks most like, in a CLIP image model: if each brand's word draws that brand, every "
        "row is all its own name; pictures that look like another brand mean the two words have bled together "
        "(more photos of each, or triggers less alike, help).")]
    body.append(table(["samples of", "nearest their own photos"], rows))
    model = "candy-mini's miniature CLIP" if leaks.miniature else f"the CLIP {esc(leaks.model)}"
    body.append(f"<p>Embeddings from {model}; each sample against the mean of each concept's photos ("
                + ", ".join(f"{esc(t)} {n}" for t, n in leaks.photos.items()) + "), by cosine.</p>")
    if leaks.miniature:
        body.append(note("These embeddings come from the miniature candy-mini CLIP, trained by clood on 64-pixel "
                         "studio pictures: a toy model's figure, not a real model's.", "toy"))
    if leaks.problems:
        body.append(note("Left out: " + "; ".join(esc(p) for p in leaks.problems[:5])
                         + (" …" if len(leaks.problems) > 5 else ""), "warn"))
    return "".join(body)
