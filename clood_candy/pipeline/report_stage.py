"""Stage 5: the report that teaches, built by the reporter plugin from the run folder."""

from __future__ import annotations

from typing import Any

from clood_candy import doctor
from clood_candy.context import StageContext


def run(ctx: StageContext) -> dict[str, Any]:
    found = doctor.diagnose(ctx.run.root)  # RUN/doctor.json, which the report and `clood runs` show
    for symptom in found.symptoms:
        ctx.progress.say(f"  doctor: {symptom.title}: {symptom.evidence} → {symptom.fix}")
    reporter = ctx.registry.get("reporter", ctx.config.reporter)
    path = reporter.build(ctx.run.root, ctx)
    ctx.run.state.outputs["report"] = ctx.run.rel(path)
    ctx.run.save()
    return {"report": ctx.run.rel(path)}
