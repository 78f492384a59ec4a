"""9. The run's doctor: seed 004's troubleshooting table checked against this run
(RUN/doctor.json): each symptom present with its evidence and a setting to change."""

from __future__ import annotations

from clood_candy.doctor import DOCTOR, Diagnosis
from clood_candy_plugins.report.page import Section, esc, lesson, note, table
from clood_candy_plugins.report.rundata import RunData

TITLE = "9. The run's doctor"


def build(run: RunData) -> Section:
    section = Section("doctor", TITLE)
    path = run.path(DOCTOR)
    if not path.is_file():
        section.missing = esc(run.missing(DOCTOR)) + ": the report stage writes it."
        return section
    found = Diagnosis.model_validate_json(path.read_text(encoding="utf-8"))
    body = [lesson("Training guides end with a troubleshooting table (loss not falling, loss oscillating, "
                   "overfitting, underfitting, out of memory, colour cast). This run checked itself against it, "
                   "from its own loss curves, the pick fight's judges, the captions and the samples.")]
    if found.symptoms:
        rows = [[f"<b>{esc(s.title)}</b>", esc(s.evidence), esc(s.cause), f'<span class="code">{esc(s.fix)}</span>']
                for s in found.symptoms]
        body.append(table(["symptom", "evidence in this run", "likely cause", "try next time"], rows))
    else:
        body.append(note("No symptom found in the checks that could run: "
                         + esc(", ".join(found.checked) or "none") + ".", "ok"))
    if found.skipped:
        body.append("<p>Not checked: " + "; ".join(f"{esc(k)} ({esc(v)})" for k, v in found.skipped.items()) + ".</p>")
    section.body = "".join(body)
    return section
