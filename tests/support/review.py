"""A run folder ready for ``clood review``, made in about a second: a prep report by hand (kept,
culled and failed photos, originals on disk), or the real preparer on drawn photos
(``prepped_run``), and the real caption stage on scripted
captioners and judges, so fight.json and dataset/ are what the pipeline writes; on top of it,
if asked, a pick fight decided by the real panel on scripted scores. Plus a real uvicorn
server on a free port for the tests that go through a socket or a browser."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from PIL import Image

from clood_candy import fsutil
from clood_candy.fighters import Captioner, Judge
from clood_candy.pipeline import caption_stage
from clood_candy.plugins import Registered
from clood_candy.records import CaptionResult, ConfigFightResult, Photo, PickCandidate, PickImage, PickPrompt
from clood_candy.records import PickSheet, PrepEntry, PrepReport, Score, TrainConfig, TrainOutcome

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


def prepped_run(make_ctx, tmp_path: Path, **prep):
    """(ctx, photos folder): like review_run, but prep is the real default preparer at 64 px on
    five drawn candy photos (240x180 JPEGs): four kept, and one so blurred that prep culls it
    (blurry.jpg). For what must be exactly what prep makes: a photo brought back, a crop box moved."""
    from PIL import ImageFilter
    from support.prep import candy_photo

    from clood_candy.pipeline import prep_stage

    ctx = make_ctx(base="no-such-base", prep={"resolution": 64, "workers": 1, **prep},
                   caption={"captioners": ["tagger", "plain"], "judges": {"wordy": 1.0, "terse": 1.0}})
    source = tmp_path / "photos"
    source.mkdir()
    layouts = [((60, 60, 30, 22),), ((170, 120, 40, 30), (60, 50, 20, 15)), ((120, 90, 60, 45),),
               ((50, 130, 25, 20), (120, 60, 25, 20), (190, 130, 25, 20))]
    for i, blobs in enumerate(layouts):
        candy_photo(size=(240, 180), blobs=blobs, background=(150 - 25 * i, 140, 120 + 20 * i), seed=i).save(
            source / f"p{i}.jpg", quality=95)
    candy_photo(size=(240, 180), blobs=((120, 90, 40, 30),), seed=9).filter(ImageFilter.GaussianBlur(8)).save(
        source / "blurry.jpg", quality=95)
    ctx.run.state.source = str(source)
    ctx.run.save()
    prep_stage.run(ctx, source)
    for kind, plugin in (("captioner", Tagger()), ("captioner", Plain()), ("judge", Wordy()), ("judge", Terse())):
        _register(ctx, kind, plugin)
    caption_stage.run(ctx)
    return ctx, source


STEPS = (10, 20, 30)
PICK_JUDGES = {"subject-colour": 1.0, "memorisation": 1.0, "validation-loss": 1.0, "user": 10.0}


def pick_fight(ctx) -> list[str]:
    """What the train stage leaves for the Pick page, without training: three checkpoints
    (each file's bytes its own), a sample per candidate × prompt, and the panel's verdict
    from ``decide`` on scripted scores: subject-colour and the validation loss (lowest at step
    20, rising after it) like step 20, memorisation cannot tell them apart and flags step 10.
    Returns the candidates' names."""
    from clood_candy.pick.fight import record, ship
    from clood_candy.pick.panel import decide

    config = TrainConfig(name="default", steps=30)
    losses = (0.5, 0.3, 0.4)
    names, candidates, images = [f"default-step{s}" for s in STEPS], [], []
    prompts = [PickPrompt(text=caption_of(ctx, "p0"), kind="held-out", photo=str(ctx.run.path("dataset", "p0.png"))),
               PickPrompt(text="jlybn, jellybean, on a sandy beach", kind="novel",
                          change="background: on a sandy beach")]
    for i, (name, step) in enumerate(zip(names, STEPS, strict=True)):
        lora = f"train/fight/default/checkpoints/step-{step}/step-{step}.safetensors"
        fsutil.write_bytes(ctx.run.path(lora), f"the LoRA at step {step}".encode())
        candidates.append(PickCandidate(name=name, config="default", step=step, lora=lora, val_loss=losses[i],
                                        final=step == STEPS[-1]))
        for p in range(len(prompts)):
            image = f"train/pick/{name}/p{p + 1}-seed1.png"
            ctx.run.path(image).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (80 * i, 120, 60 * p)).save(ctx.run.path(image))
            images.append(PickImage(candidate=name, prompt=p, seed=1, image=image))
    sheet = PickSheet(candidates=candidates, prompts=prompts, seeds=[1], images=images, held_out=[], training=[],
                      trigger="jlybn", class_word="jellybean")
    colour = {"default-step10": 0.2, "default-step20": 0.9, "default-step30": 0.5}
    scores = {"subject-colour": {n: Score(score=colour[n], reason=f"colour overlap {colour[n]}") for n in names},
              "memorisation": {n: Score(score=0.0, reason="0 of 2 samples copy a photo") for n in names},
              "validation-loss": {c.name: Score(score=-c.val_loss, reason=f"validation loss {c.val_loss:.4f}")
                                  for c in candidates}}
    flags = {"default-step10": ["memorisation: 2 of 2 samples copy a training photo"]}
    result = decide(sheet, PICK_JUDGES, scores, {"user": "no vote yet (clood pick RUN CANDIDATE)"}, flags, [])
    outcome = TrainOutcome(config=config, steps_done=30, lora=candidates[-1].lora,
                           checkpoints=[c.lora for c in candidates])
    fsutil.write_json(ctx.run.path("train", "outcome.json"), outcome)
    ship(ctx, result, outcome)
    record(ctx, ConfigFightResult(configs=[config], rounds=[], winner="default"), config, result)
    return names


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
