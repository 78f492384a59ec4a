"""RUN/review/edits.json, without the web page: what a caption may be, how edits are laid
over dataset/, that a rerun of the caption stage keeps them, and what training sees."""

import re

import pytest
from support.review import caption_of, review_run

from clood_candy import edits
from clood_candy.edits import CaptionEdit, CaptionRefused, PhotoDecision
from clood_candy.pipeline import caption_stage
from clood_candy.pipeline.orchestrator import stage_inputs


@pytest.fixture
def run(make_ctx, tmp_path):
    ctx, _ = review_run(make_ctx, tmp_path)
    return ctx


def photos(ctx):
    from clood_candy.pipeline import prep_stage

    return prep_stage.load(ctx).photos


def change(ctx, photo, new):
    return CaptionEdit(photo=photo, file=f"{photo}.png", old=caption_of(ctx, photo), new=new, **edits.stamp())


def test_what_a_caption_may_be():
    assert edits.check_caption("  jlybn, red bean  ") == "jlybn, red bean"
    assert edits.check_caption("jlybn, 赤い豆, 🍬") == "jlybn, 赤い豆, 🍬"
    for bad, says in [("", "empty"), ("a\tb", "a tab"), ("a\r\nb", "a line break"), ("a\x00", "U+0000"),
                      ("a\u2028b", "U+2028"), ("x" * 5001, "5,001 characters")]:
        with pytest.raises(CaptionRefused, match=re.escape(says)):
            edits.check_caption(bad)
    assert len(edits.check_caption("x" * edits.MAX_CAPTION_CHARS)) == edits.MAX_CAPTION_CHARS


def test_edits_reach_every_file_a_trainer_reads_and_survive_a_caption_rerun(run):
    edits.record(run.run.root, edits.load(run.run.root), photos(run), change(run, "p1", "jlybn, jellybean, by hand"))
    assert caption_of(run, "p1") == "jlybn, jellybean, by hand"
    assert {r["id"]: r["text"] for r in edits.dataset_rows(run.run.root)}["p1"] == "jlybn, jellybean, by hand"
    assert edits.load(run.run.root).edits[0].old != "jlybn, jellybean, by hand"

    caption_stage.run(run)
    assert caption_of(run, "p1") == "jlybn, jellybean, by hand"
    assert [r["id"] for r in edits.dataset_rows(run.run.root)] == ["p0", "p1", "p2", "p3"]


def test_a_cull_and_a_keep_again(run):
    before = caption_of(run, "p2")
    cull = PhotoDecision(source="p2.jpg", photo="p2", old="kept", new="culled", why="twin of p1", caption=before,
                         **edits.stamp())
    done = edits.record(run.run.root, edits.load(run.run.root), photos(run), cull)
    assert done["culled"] == 1 and not run.run.path("dataset", "p2.txt").exists()
    keep = PhotoDecision(source="p2.jpg", photo="p2", old="culled", new="kept", **edits.stamp())
    done = edits.record(run.run.root, edits.load(run.run.root), photos(run), keep)
    assert done["restored"] == 1 and caption_of(run, "p2") == before
    assert [r["id"] for r in edits.dataset_rows(run.run.root)] == ["p0", "p1", "p2", "p3"]  # back in its place
    # Applying again changes nothing: the edits are a state, not a queue.
    assert edits.apply_to_dataset(run.run.root, edits.load(run.run.root), photos(run)) == \
        {"captions": 0, "culled": 0, "restored": 0, "cropped": 0}


def test_training_depends_on_the_edits_and_only_when_there_are_some(run):
    plain = stage_inputs(run, "train", None)
    assert edits.digest(run.run.root) is None  # no edits: the same fingerprint as before review existed
    edits.record(run.run.root, edits.load(run.run.root), photos(run), change(run, "p0", "jlybn, a"))
    first = stage_inputs(run, "train", None)
    assert first != plain
    edits.record(run.run.root, edits.load(run.run.root), photos(run), change(run, "p0", "jlybn, b"))
    assert stage_inputs(run, "train", None) not in (plain, first)
    assert stage_inputs(run, "caption", None) == stage_inputs(run, "caption", None)  # captioning need not rerun


def test_the_report_lists_what_was_changed_by_hand(run):
    from clood_candy_plugins.report import section_captions
    from clood_candy_plugins.report.rundata import RunData

    decision = PhotoDecision(source="blurry.jpg", old="culled", new="kept", why="I <3 it", **edits.stamp())
    edits.record(run.run.root, edits.load(run.run.root), photos(run),
                 change(run, "p0", "jlybn, jellybean, <b>hand</b> made"), decision)
    body = section_captions.build(RunData(run.run.root, run)).body
    assert "Changed by hand" in body and "1 caption edit and 1 photo decision" in body
    assert "&lt;b&gt;hand&lt;/b&gt; made" in body and "I &lt;3 it" in body and "<b>hand</b>" not in body
