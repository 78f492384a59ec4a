"""``clood dogfood candy --resume RUN --force`` on a run with hand edits: asked on a terminal
(keeping is the default), kept and said so without one, moved aside — never deleted — with
--discard-edits or a "n". The stages themselves are not run here (run_pipeline is replaced by
a recorder): what is tested is what happens to edits.json before they would start; that a
rerun of the caption stage lays kept edits over again is tested in test_review*.py."""

import json

import pytest
from click.testing import CliRunner
from support.review import caption_of, review_run

from clood_candy import edits, force_edits
from clood_candy.cli import cli
from clood_candy.edits import CaptionEdit, PhotoDecision


@pytest.fixture
def edited(make_ctx, tmp_path, monkeypatch):
    """(run root, the edits' bytes, the pipeline calls): the review run with two hand edits."""
    ctx, _ = review_run(make_ctx, tmp_path)
    change = CaptionEdit(photo="p1", file="p1.png", old=caption_of(ctx, "p1"), new="jlybn, by hand", **edits.stamp())
    cull = PhotoDecision(source="p3.jpg", photo="p3", old="kept", new="culled", caption=caption_of(ctx, "p3"),
                         **edits.stamp())
    edits.record(ctx.run.root, edits.load(ctx.run.root), [], change, cull)
    calls = []
    monkeypatch.setattr("clood_candy.pipeline.orchestrator.run_pipeline",
                        lambda ctx, source, stages, force=False: calls.append((stages, force)))
    return ctx.run.root, (ctx.run.root / edits.EDITS).read_bytes(), calls


def candy(root, *flags, input=None):
    return CliRunner().invoke(cli, ["dogfood", "candy", "--resume", str(root), "--force", *flags, "-q"], input=input)


def aside(root):
    return sorted((root / "review").glob("edits-discarded-*.json"))


def test_without_a_terminal_they_are_kept_and_that_is_said_in_one_line(edited):
    root, before, calls = edited
    result = candy(root)
    assert result.exit_code == 0, result.output
    said = [line for line in result.stderr.splitlines() if "hand edits" in line]
    assert said == [f"--force: keeping the 2 hand edits in {root / edits.EDITS} (1 caption, 1 photo kept or culled) "
                    "(no terminal to ask on; add --discard-edits to drop them)."]
    assert (root / edits.EDITS).read_bytes() == before and not aside(root)
    assert calls and calls[0][1] is True  # and the forced rerun goes ahead


def test_on_a_terminal_n_moves_them_aside(edited, monkeypatch):
    root, before, calls = edited
    monkeypatch.setattr(force_edits, "on_terminal", lambda: True)
    result = candy(root, input="n\n")
    assert result.exit_code == 0, result.output
    assert (f"2 hand edits in {root / edits.EDITS} (1 caption, 1 photo kept or culled). --force reruns the stages; "
            "keep them? [Y/n]: ") in result.stderr
    assert not (root / edits.EDITS).exists()
    moved = aside(root)
    assert len(moved) == 1 and moved[0].read_bytes() == before  # aside, whole: never deleted
    assert f"Moved the 2 hand edits aside to {moved[0]}" in result.stderr
    assert calls


def test_on_a_terminal_enter_keeps_them(edited, monkeypatch):
    root, before, calls = edited
    monkeypatch.setattr(force_edits, "on_terminal", lambda: True)
    result = candy(root, input="\n")
    assert result.exit_code == 0, result.output
    assert "keep them? [Y/n]" in result.stderr and "Keeping them" in result.stderr
    assert (root / edits.EDITS).read_bytes() == before and not aside(root)


def test_discard_edits_moves_them_aside_without_asking(edited, monkeypatch):
    root, before, calls = edited
    monkeypatch.setattr(force_edits, "on_terminal", lambda: True)
    result = candy(root, "--discard-edits")
    assert result.exit_code == 0, result.output
    assert "keep them?" not in result.stderr
    assert not (root / edits.EDITS).exists() and [p.read_bytes() for p in aside(root)] == [before]
    (root / edits.EDITS).write_bytes(before)  # a second discard the same second does not overwrite the first
    assert candy(root, "--discard-edits").exit_code == 0
    assert len(aside(root)) == 2 and all(p.read_bytes() == before for p in aside(root))


def test_discard_edits_needs_resume_and_force_and_the_caption_stage(edited):
    root, before, calls = edited
    result = CliRunner().invoke(cli, ["dogfood", "candy", "--resume", str(root), "--discard-edits"])
    assert result.exit_code == 2 and "use it with --resume RUN --force" in result.output
    result = candy(root, "--discard-edits", "--stages", "train")
    assert result.exit_code == 2 and "include caption in --stages" in result.output
    assert (root / edits.EDITS).read_bytes() == before and not calls


def test_a_run_without_edits_is_not_asked_about_them(make_ctx, tmp_path, monkeypatch):
    ctx, _ = review_run(make_ctx, tmp_path)
    monkeypatch.setattr("clood_candy.pipeline.orchestrator.run_pipeline", lambda *a, **k: None)
    result = candy(ctx.run.root)
    assert result.exit_code == 0, result.output
    assert "hand edit" not in result.output
    assert json.loads((ctx.run.root / "run.json").read_text())["name"] == "test"
