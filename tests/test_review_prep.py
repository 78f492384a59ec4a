"""``clood review`` preparing photos by hand, on a run the real preparer made: a photo prep
culled, brought back exactly as prep would have made it; a crop box moved, its training image
made again from the original. Each checked by what lands in dataset/ and edits.json, through a
rerun of the caption stage — and by what does not when it is refused."""

import urllib.parse

import numpy as np
import pytest
from PIL import Image
from support.review import TOKEN, caption_of, client, prepped_run

from clood_candy import edits, fsutil
from clood_candy.pipeline import caption_stage, prep_stage, train_stage
from clood_candy.pipeline.orchestrator import stage_inputs


@pytest.fixture
def run(make_ctx, tmp_path):
    ctx, _ = prepped_run(make_ctx, tmp_path)
    return ctx


def index_of(ctx, source: str) -> int:
    return next(i for i, e in enumerate(prep_stage.load(ctx).entries) if e.source == source)


def snapshot(ctx) -> dict[str, str]:
    """Every file of dataset/ and review/, by path: a refused request leaves them as they were."""
    files = [*ctx.run.path("dataset").rglob("*"), *ctx.run.path("review").rglob("*")]
    return {str(f.relative_to(ctx.run.root)): f.read_bytes().hex() for f in files if f.is_file()}


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64)


def note_of(reply) -> str:
    return urllib.parse.unquote_plus(reply.headers["location"])


def keep(http, index, why="the only purple one"):
    return http.post(f"/photos/{index}", data={"token": TOKEN, "decision": "kept", "why": why})


def move(http, index, box, why="tighter", token=TOKEN, **extra):
    fields = dict(zip(("x0", "y0", "x1", "y1"), map(str, box), strict=True))
    return http.post(f"/photos/{index}/crop", data={"token": token, "why": why, **fields, **extra})


def test_a_photo_prep_culled_is_brought_back_as_prep_would_have_made_it(run):
    entry = prep_stage.load(run).entries[index_of(run, "blurry.jpg")]
    assert entry.status == "culled" and entry.reason.startswith("blurry")
    http = client(run.run.root)
    trained_on = stage_inputs(run, "train", None)

    reply = keep(http, index_of(run, "blurry.jpg"))
    assert reply.status_code == 303
    note = note_of(reply)
    assert "Prepared now as prep would have" in note and "placeholder caption “jlybn, jellybean”" in note
    assert "needs a caption" in note

    # The same pixels prep makes of it when told to keep everything (prep.keep_all).
    preparer = run.registry.get("preparer", "default")
    everything = preparer.prepare(run.run.state.source, run.run.path("keepall"),
                                  run.config.prep.model_copy(update={"keep_all": True}), run)
    made_by_prep = next(p for p in everything.photos if p.source == "blurry.jpg")
    assert run.run.path("dataset", "blurry.png").read_bytes() == run.run.path(made_by_prep.image).read_bytes()
    assert caption_of(run, "blurry") == "jlybn, jellybean"
    decision = edits.load(run.run.root).edits[-1]
    assert (decision.source, decision.old, decision.new, decision.why) == ("blurry.jpg", "culled", "kept",
                                                                           "the only purple one")
    assert decision.who == edits.who() and decision.caption_from == "placeholder"
    assert decision.prepared.crop_box == made_by_prep.crop_box
    assert decision.prepared.image == "review/prepared/blurry.png"
    assert stage_inputs(run, "train", None) != trained_on  # training runs again for it
    assert train_stage._prepared_photos(run)["blurry"].original_size == (240, 180)

    captions = http.get(f"/captions?token={TOKEN}&filter=needs").text
    assert "1 photo needs a caption" in captions and 'id="photo-blurry"' in captions
    assert 'id="photo-p0"' not in captions and "needs a caption: brought back with the placeholder" in captions
    photos = http.get(f"/photos?token={TOKEN}").text
    assert "brought back: prepared by clood review as prep would have, in the training set" in photos
    assert http.get(f"/image/blurry?token={TOKEN}").status_code == 200

    prep_stage.run(run, run.run.state.source)  # prep again (it empties prep/images), then captions again
    caption_stage.run(run)
    assert run.run.path("dataset", "blurry.png").read_bytes() == run.run.path(made_by_prep.image).read_bytes()
    assert caption_of(run, "blurry") == "jlybn, jellybean"

    index = index_of(run, "blurry.jpg")  # culled again and kept again: the same photo, nothing prepared anew
    assert http.post(f"/photos/{index}", data={"token": TOKEN, "decision": "culled"}).status_code == 303
    assert "blurry" not in {r["id"] for r in edits.dataset_rows(run.run.root)}
    assert keep(http, index).status_code == 303 and caption_of(run, "blurry") == "jlybn, jellybean"
    assert edits.load(run.run.root).edits[-1].prepared is None and 'id="needing"' in http.get(
        f"/captions?token={TOKEN}").text

    version = edits.version(caption_of(run, "blurry"))
    saved = http.post("/captions/blurry", data={"token": TOKEN, "caption": "jlybn, jellybean, soft",
                                                "version": version})
    assert saved.status_code == 303
    page = http.get(f"/captions?token={TOKEN}").text
    assert 'id="needing"' not in page and "brought back with the placeholder" not in page  # written: not flagged
    caption_stage.run(run)
    assert caption_of(run, "blurry") == "jlybn, jellybean, soft"
    assert "blurry" in {r["id"] for r in edits.dataset_rows(run.run.root)}


def test_a_brought_back_photo_starts_with_the_fights_caption_when_the_fight_has_one(run):
    # A fight over an earlier prep's set, in which this photo was kept, captioned it.
    winner = fsutil.read_json(run.run.path("caption", "fight.json"))["winner"]
    path = run.run.path("caption", winner, "training_captions.json")
    fsutil.write_json(path, {**fsutil.read_json(path), "blurry.png": "jlybn, jellybean, purple, soft focus"})
    reply = keep(client(run.run.root), index_of(run, "blurry.jpg"))
    assert reply.status_code == 303 and "the caption fight's caption" in note_of(reply)
    assert caption_of(run, "blurry") == "jlybn, jellybean, purple, soft focus"
    assert edits.load(run.run.root).edits[-1].caption_from == "fight"
    assert 'id="needing"' not in client(run.run.root).get(f"/captions?token={TOKEN}").text


@pytest.mark.parametrize("spoil, says", [
    (lambda path: path.write_bytes(b"not a jpeg at all"), "not an image"),
    (lambda path: path.unlink(), "is not in"),
])
def test_a_photo_that_cannot_be_prepared_is_refused_in_one_line_and_nothing_changes(run, spoil, says):
    spoil(run.run.path("..", "photos", "blurry.jpg").resolve())
    http, before = client(run.run.root), snapshot(run)
    reply = keep(http, index_of(run, "blurry.jpg"))
    assert reply.status_code == 400
    text = reply.text.split('id="message">')[1].split("</p>")[0]
    assert text.startswith("Not brought back: blurry.jpg: ") and says in text and "Nothing was changed" in text
    assert "\n" not in text
    assert snapshot(run) == before and not run.run.path("review", "prepared").exists()
    assert not [p for p in run.run.root.iterdir() if p.name.startswith(".prepare-")]  # no scratch left behind


def test_moving_the_crop_box_makes_the_training_image_again_from_the_original(run):
    http, index = client(run.run.root), index_of(run, "p0.jpg")
    before = pixels(run.run.path("dataset", "p0.png"))
    trained_on = stage_inputs(run, "train", None)
    box = [120, 60, 240, 180]  # the bottom right corner instead of the candy

    reply = move(http, index, box)
    assert reply.status_code == 303 and "crop box moved to 120, 60, 240, 180" in note_of(reply)
    after = pixels(run.run.path("dataset", "p0.png"))
    with Image.open(run.run.path("..", "photos", "p0.jpg").resolve()) as original:
        wanted = np.asarray(original.convert("RGB").resize((64, 64), Image.Resampling.LANCZOS, box=tuple(box)),
                            dtype=np.float64)
    assert after.shape == (64, 64, 3)
    assert np.abs(after - wanted).mean() < 3  # the box's pixels (JPEG decoded at half size by prep: close, not equal)
    assert np.abs(after - before).mean() > 10  # and not the old crop's

    crop = edits.load(run.run.root).edits[-1]
    assert (crop.kind, crop.photo, crop.old, crop.new, crop.why) == ("crop", "p0", [17, 17, 105, 105], box, "tighter")
    assert crop.who == edits.who() and crop.when
    page = http.get(f"/photos?token={TOKEN}").text
    assert "crop box 120, 60, 240, 180" in page and f"crop box moved by {edits.who()} from 17, 17, 105, 105" in page
    assert train_stage._prepared_photos(run)["p0"].crop_box == box  # SDXL's crop conditioning sees the new box
    assert stage_inputs(run, "train", None) != trained_on

    made = run.run.path("dataset", "p0.png").read_bytes()
    caption_stage.run(run)  # the caption stage copies prep's image again: the moved box's is laid over it
    assert run.run.path("dataset", "p0.png").read_bytes() == made

    from clood_candy_plugins.report import section_captions
    from clood_candy_plugins.report.rundata import RunData

    body = section_captions.build(RunData(run.run.root, run)).body
    assert "1 crop box moved" in body and "crop box 17, 17, 105, 105 → <b>120, 60, 240, 180</b>" in body


@pytest.mark.parametrize("source, box, says", [
    ("p0.jpg", [200, 100, 300, 200], "is not inside the 240x180 photo"),
    ("p0.jpg", [-10, 0, 90, 100], "is not inside"),
    ("p0.jpg", [0, 0, 100, 90], "it must be square"),
    ("p0.jpg", [0, 0, 20, 20], "at least 32 px"),
    ("p0.jpg", ["ten", 0, 100, 100], "x0 must be a whole number"),
    ("p0.jpg", [17, 17, 105, 105], "is its crop box already"),
    ("blurry.jpg", [0, 0, 100, 100], "keep it first"),
])
def test_bad_crop_boxes_are_refused_with_a_message_and_change_nothing(run, source, box, says):
    http, before = client(run.run.root), snapshot(run)
    reply = move(http, index_of(run, source), box)
    assert reply.status_code in (400, 409) and "Crop box not moved" in reply.text and says in reply.text
    assert snapshot(run) == before and not run.run.path("review", "crops").exists()


def test_crop_moves_need_the_token_and_this_origin(run):
    http, before = client(run.run.root), snapshot(run)
    assert move(http, 0, [120, 60, 240, 180], token="wrong").status_code == 403
    assert http.post("/photos/0/crop", data={"x0": "120", "y0": "60", "x1": "240", "y1": "180"}).status_code == 403
    reply = http.post("/photos/0/crop", data={"token": TOKEN, "x0": "120", "y0": "60", "x1": "240", "y1": "180"},
                      headers={"Origin": "http://evil.example"})
    assert reply.status_code == 403
    assert snapshot(run) == before


def test_with_buckets_any_box_shape_trains_at_its_bucket(make_ctx, tmp_path):
    from clood_candy.buckets import nearest_bucket

    ctx, _ = prepped_run(make_ctx, tmp_path, buckets=True)
    reply = move(client(ctx.run.root), index_of(ctx, "p1.jpg"), [0, 0, 240, 120])  # 2:1, not square
    assert reply.status_code == 303
    crop = edits.load(ctx.run.root).edits[-1]
    width, height = nearest_bucket((240, 120), 64)
    with Image.open(ctx.run.path("dataset", "p1.png")) as image:
        assert image.size == (width, height)
    x0, y0, x1, y1 = crop.new  # trimmed about the centre to the bucket's ratio: nothing stretched
    assert abs((x1 - x0) / (y1 - y0) - width / height) < 0.02 and 0 <= x0 and x1 <= 240 and y1 <= 120


def test_a_brought_back_photos_moved_crop_outlives_a_rerun_of_prep_and_captions(run):
    http, index = client(run.run.root), index_of(run, "blurry.jpg")
    assert keep(http, index).status_code == 303
    assert move(http, index, [60, 0, 240, 180]).status_code == 303
    crop = edits.load(run.run.root).edits[-1]
    assert crop.prepared.image == "review/crops/60-0-240-180/blurry.png"
    made = run.run.path(crop.prepared.image).read_bytes()
    assert run.run.path("dataset", "blurry.png").read_bytes() == made
    prep_stage.run(run, run.run.state.source)
    caption_stage.run(run)
    assert run.run.path("dataset", "blurry.png").read_bytes() == made and caption_of(run, "blurry") == "jlybn, jellybean"
