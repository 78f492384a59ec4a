"""Stage 1: from the photo folder to a clean, framed set (the preparer plugin does the work)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clood_candy import fsutil
from clood_candy.context import StageContext
from clood_candy.errors import UserError
from clood_candy.records import PrepReport


def source_listing(source: Path) -> list[tuple[str, int, int]]:
    """What the prep fingerprint depends on: every file's name, size and mtime."""
    if source.is_file():
        st = source.stat()
        return [(source.name, st.st_size, int(st.st_mtime))]
    out = []
    for path in sorted(source.rglob("*")):
        try:
            if path.is_file():
                st = path.stat()
                out.append((str(path.relative_to(source)), st.st_size, int(st.st_mtime)))
        except OSError:
            out.append((str(path.relative_to(source)), -1, -1))
    return out


def run(ctx: StageContext, source: Path) -> dict[str, Any]:
    preparer = ctx.registry.get("preparer", ctx.config.prep.preparer)
    out_dir = ctx.run.path("prep")
    report: PrepReport = preparer.prepare(source, out_dir, ctx.config.prep, ctx)
    fsutil.write_json(out_dir / "report.json", report)
    kept = sum(e.status == "kept" for e in report.entries)
    culled = sum(e.status == "culled" for e in report.entries)
    failed = sum(e.status == "failed" for e in report.entries)
    ctx.progress.say(f"Prep: {kept} kept, {culled} culled, {failed} failed of {len(report.entries)} files.")
    if not report.photos:
        raise UserError(f"no usable photos in {source}: {culled} culled, {failed} failed (see {out_dir / 'report.json'})")
    return {"kept": kept, "culled": culled, "failed": failed, "report": "prep/report.json"}


def load(ctx: StageContext) -> PrepReport:
    path = ctx.run.path("prep", "report.json")
    if not path.is_file():
        raise UserError(f"{ctx.run.root} has no prep results yet: run the prep stage first")
    return PrepReport.model_validate(fsutil.read_json(path))
