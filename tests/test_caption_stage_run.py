"""The caption stage end to end on scripted plugins: what it tells the user, and what
``--force`` means for the verdicts it has on file."""

import logging

from PIL import Image

from clood_candy import fsutil
from clood_candy.fighters import Captioner, Judge
from clood_candy.pipeline import caption_stage
from clood_candy.pipeline.orchestrator import run_pipeline
from clood_candy.plugins import Registered
from clood_candy.progress import Progress
from clood_candy.records import CaptionResult, Comparison, Photo, PrepReport


class SaidLines(Progress):
    """A quiet reporter that keeps what it was asked to say."""

    def __init__(self):
        super().__init__(quiet=True)
        self.lines: list[str] = []

    def say(self, message, style=None):
        self.lines.append(message)


class Scripted(Captioner):
    """Says photo i's colour from ``colours`` (none: just the class), and may add ids it was not given."""

    def __init__(self, name: str, colours: tuple[str, ...] = (), extra_ids: tuple[str, ...] = ()):
        self.name, self.colours, self.extra_ids = name, colours, extra_ids

    def caption(self, photos, ctx):
        out = {p.id: CaptionResult(caption="jlybn, jellybean" + (f", {self.colours[i % len(self.colours)]}"
                                                                   if self.colours else ""))
               for i, p in enumerate(photos)}
        return {**out, **{i: CaptionResult(caption="jlybn, jellybean, blue") for i in self.extra_ids}}


COLOURS = ("red", "green", "yellow", "purple")


class Longer(Judge):
    name = "longer"
    pairwise = True

    def __init__(self):
        self.asked = 0

    def compare(self, pairs, ctx):
        self.asked += len(pairs)
        return [Comparison(winner="first" if len(f.text) > len(s.text) else "second", reason="says more")
                for _, f, s in pairs]


def caption_ctx(make_ctx, captioners: list[Captioner], judge: Judge):
    """A run with four prepared photos and only the given plugins on the caption panel."""
    # A base no family loads: token counts fall back to the approximate counter at once.
    ctx = make_ctx(base="no-such-base", caption={"captioners": [c.name for c in captioners],
                                                 "judges": {judge.name: 1.0}})
    ctx.progress = SaidLines()
    photos = []
    for i in range(4):
        rel = f"prep/images/p{i}.png"
        ctx.run.path("prep", "images").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), (200, 30 * i, 40)).save(ctx.run.path(rel))
        photos.append(Photo(id=f"p{i}", source=f"p{i}.jpg", image=rel, width=16, height=16))
    fsutil.write_json(ctx.run.path("prep", "report.json"), PrepReport(entries=[], photos=photos))
    for captioner in captioners:
        ctx.registry.items["captioner"][captioner.name] = Registered("captioner", captioner.name, captioner,
                                                                     "test", "0", "test")
    ctx.registry.items["judge"][judge.name] = Registered("judge", judge.name, judge, "test", "0", "test")
    return ctx


def test_captions_for_photos_it_was_not_given_are_reported_once(make_ctx, caplog):
    wanderer = Scripted("wanderer", COLOURS, extra_ids=("ghost-b", "ghost-a"))
    ctx = caption_ctx(make_ctx, [wanderer, Scripted("plain")], Longer())
    with caplog.at_level(logging.WARNING):
        caption_stage.run(ctx)

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "not given" in r.getMessage()]
    assert len(warnings) == 1 and "wanderer" in warnings[0] and "2 photo" in warnings[0] and "ghost-a" in warnings[0]
    said = [line for line in ctx.progress.lines if "not given" in line]
    assert len(said) == 1 and "wanderer" in said[0] and "ghost-a" in said[0]
    assert "ghost-a" not in ctx.run.path("caption", "wanderer", "captions.json").read_text()


def test_force_asks_the_judges_again(make_ctx):
    judge = Longer()
    ctx = caption_ctx(make_ctx, [Scripted("wordy", COLOURS), Scripted("plain")], judge)
    run_pipeline(ctx, None, ["caption"])
    assert judge.asked == 8  # 4 photos, both orders
    run_pipeline(ctx, None, ["caption"])
    assert judge.asked == 8  # nothing changed: the stage is skipped
    run_pipeline(ctx, None, ["caption"], force=True)
    assert judge.asked == 16  # --force: verdicts on file are not reused
    assert fsutil.read_json(ctx.run.path("caption", "fight.json"))["winner"] == "wordy"
