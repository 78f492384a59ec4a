"""One photo prepared by hand from the review pages: a photo prep culled, brought back, or a
photo made again from a crop box the user moved. The run's own preparer does it (its
``prepare_one``), with the run's prep settings, at the resolution prep used — read from the
prep report, never by loading the base model in a web request — so the photo is the one prep
would have made. A brought-back photo starts with the caption fight's caption when the fight
has one for it, else a placeholder the Captions page flags as needing a caption."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from clood_candy import edits, fsutil
from clood_candy.cli import open_run
from clood_candy.context import StageContext
from clood_candy.errors import UserError
from clood_candy.pipeline import prep_stage
from clood_candy.plugins import load_plugins
from clood_candy.records import FightResult, Photo, PrepReport

PREPARED = Path("review") / "prepared"  # brought-back photos' images: prep's rerun empties prep/images, not this
CROPS = Path("review") / "crops"  # one folder per crop box, each image named as in dataset/


def resolution(ctx: StageContext, report: PrepReport) -> int:
    """The size prep framed for: prep.resolution, else what the report says prep used, else
    (a report from before it said) the kept photos' common short side, which is the
    resolution for every square crop and for a whole frame alike."""
    if ctx.config.prep.resolution:
        return ctx.config.prep.resolution
    if report.resolution:
        return report.resolution
    sides = {min(p.width, p.height) for p in report.photos}
    if not ctx.config.prep.buckets and len(sides) == 1:
        return sides.pop()
    raise UserError("cannot tell the resolution prep used (its prep/report.json predates recording it): "
                    "set prep.resolution in the run's clood.toml, or rerun prep")


def open_ctx(root: Path) -> StageContext:
    """The run's context, its config rebuilt as the run made it (cheap: no model loads)."""
    load_plugins()  # the preparer is a plugin; once loaded (as by the clood command), this does nothing
    return open_run(Path(root))


def prepare(ctx: StageContext, source_rel: str, out_dir: Path, *, photo_id: str | None = None,
            box: list[int] | None = None) -> tuple[Photo, str]:
    """(the photo's record, prep's one line on it); UserError, saying why, when it cannot be
    prepared. Nothing is written unless it can."""
    if not ctx.run.state.source:
        raise UserError("the run does not say where its photos are (run.json has no source)")
    report = prep_stage.load(ctx)
    preparer = ctx.registry.get("preparer", ctx.config.prep.preparer)
    taken = {p.id for p in edits.edited_photos(edits.load(ctx.run.root), report.photos)}
    return preparer.prepare_one(Path(ctx.run.state.source), source_rel, out_dir, ctx.config.prep, ctx,
                                resolution=resolution(ctx, report), photo_id=photo_id, taken=taken, box=box)


def placeholder(ctx: StageContext) -> str:
    """The trigger and the class word: a caption that trains the subject and says nothing
    wrong about it, until the user writes the real one."""
    return f"{ctx.config.trigger}, {ctx.config.class_word}"


def starting_caption(ctx: StageContext, photo: Photo) -> tuple[str, Literal["fight", "placeholder"]]:
    """The caption fight's caption for this photo, as the caption stage would have chosen it
    (the winner's; with caption.merge the photo's own best), when the fight captioned it — a
    photo that was in an earlier prep's set — else the placeholder."""
    path = ctx.run.path("caption", "fight.json")
    fight = FightResult.model_validate(fsutil.read_json(path)) if path.is_file() else None
    if fight is not None:
        best = fight.per_item_winners.get(photo.id)
        for fighter in ((best if ctx.config.caption.merge else fight.winner), best):
            found = ctx.run.path("caption", str(fighter), "training_captions.json")
            captions = fsutil.read_json(found) if fighter and found.is_file() else {}
            text = captions.get(Path(photo.image).name) if isinstance(captions, dict) else None
            if not isinstance(text, str):
                continue
            try:
                return edits.check_caption(text), "fight"
            except edits.CaptionRefused:  # empty or not one line: not a caption to train on
                continue
    return placeholder(ctx), "placeholder"
