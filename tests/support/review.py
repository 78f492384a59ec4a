"""A run folder ready for ``clood review``, made in about a second: a prep report by hand (kept,
culled and failed photos, originals on disk) and the real caption stage on scripted
captioners and judges, so fight.json and dataset/ are what the pipeline writes. Plus a real
uvicorn server on a free port for the tests that go through a socket or a browser."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from PIL import Image

from clood_candy import fsutil
from clood_candy.fighters import Captioner, Judge
from clood_candy.pipeline import caption_stage
from clood_candy.plugins import Registered
from clood_candy.records import CaptionResult, Photo, PrepEntry, PrepReport, Score

COLOURS = ["red", "green", "yellow", "purple"]
BACKGROUNDS = ["wooden surface", "white background"]
TOKEN = "test-token-0123456789"
PORT = 8765  # what the TestClient's Host header says; no socket is opened for it


class Tagger(Captioner):
    """Tags each photo with its colour and background (the vocabulary to standardise)."""

    name = "tagger"

    def caption(self, photos, ctx):
        return {p.id: CaptionResult(caption=f"jlybn, jellybean, {COLOURS[i % 4]}, {BACKGROUNDS[i % 2]}")
                for i, p in enumerate(photos)}


class Plain(Captioner):
    name = "plain"

    def caption(self, photos, ctx):
        return {p.id: CaptionResult(caption="jlybn, jellybean") for p in photos}


class Wordy(Judge):
    """Prefers the longer caption."""

    name = "wordy"

    def score(self, items, ctx):
        return {i.id: {c.fighter: Score(score=len(c.text), reason="says more") for c in i.candidates} for i in items}


class Terse(Judge):
    """Prefers the shorter caption on the first photo only: the judges disagree there."""

    name = "terse"

    def score(self, items, ctx):
        return {i.id: {c.fighter: Score(score=-len(c.text) if i.id == "p0" else len(c.text), reason="short is sweet")
                       for c in i.candidates} for i in items}


def _register(ctx, kind, plugin):
    ctx.registry.items[kind][plugin.name] = Registered(kind, plugin.name, plugin, "test", "0", "test")


def review_run(make_ctx, tmp_path: Path):
    """(ctx, photos folder): 4 kept photos captioned and fought, 1 culled, 1 failed."""
    # A base no family loads: token counts fall back to the approximate counter at once.
    ctx = make_ctx(base="no-such-base", caption={"captioners": ["tagger", "plain"],
                                                 "judges": {"wordy": 1.0, "terse": 1.0}})
    source = tmp_path / "photos"
    source.mkdir()
    ctx.run.path("prep", "images").mkdir(parents=True)
    photos, entries = [], []
    for i in range(4):
        Image.new("RGB", (120, 80), (200, 40 * i, 40)).save(source / f"p{i}.jpg")
        rel = f"prep/images/p{i}.png"
        Image.new("RGB", (16, 16), (200, 40 * i, 40)).save(ctx.run.path(rel))
        photos.append(Photo(id=f"p{i}", source=f"p{i}.jpg", image=rel, original=str(source / f"p{i}.jpg"),
                            width=16, height=16, crop_box=[20, 0, 100, 80], original_size=(120, 80)))
        entries.append(PrepEntry(source=f"p{i}.jpg", status="kept", reason="subject crop", crop_box=[20, 0, 100, 80],
                                 output=rel))
    Image.new("RGB", (120, 80), (128, 128, 128)).save(source / "blurry.jpg")
    entries.append(PrepEntry(source="blurry.jpg", status="culled", reason="blurry: sharpness 0.02 < 0.35",
                             crop_box=[10, 0, 90, 80]))
    (source / "broken.jpg").write_bytes(b"not a jpeg")
    entries.append(PrepEntry(source="broken.jpg", status="failed", reason="cannot identify image file"))
    fsutil.write_json(ctx.run.path("prep", "report.json"), PrepReport(entries=entries, photos=photos))
    ctx.run.state.source = str(source)
    ctx.run.save()
    for kind, plugin in (("captioner", Tagger()), ("captioner", Plain()), ("judge", Wordy()), ("judge", Terse())):
        _register(ctx, kind, plugin)
    caption_stage.run(ctx)
    return ctx, source


def caption_of(ctx, photo: str) -> str:
    return ctx.run.path("dataset", f"{photo}.txt").read_text(encoding="utf-8").strip()


def client(root: Path, **kwargs):
    from clood_candy_plugins.review.app import make_app
    from starlette.testclient import TestClient

    return TestClient(make_app(root, TOKEN, PORT), base_url=f"http://127.0.0.1:{PORT}", follow_redirects=False,
                      **kwargs)


class Served:
    """``clood review``'s app under a real uvicorn on a free port, in a thread."""

    def __init__(self, root: Path):
        import uvicorn
        from clood_candy_plugins.review.app import make_app
        from clood_candy_plugins.review.plugin import bind

        self.sock = bind(0)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/?token={TOKEN}"
        self.server = uvicorn.Server(uvicorn.Config(make_app(root, TOKEN, self.port), log_level="warning",
                                                    lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "Served":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.started, "the review server did not start"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
