"""The pick fight: which saved LoRA ships, chosen by sample judges (issue 15)."""

import json
import shutil

import pytest
from click.testing import CliRunner

from clood_candy.cli import cli, open_run
from clood_candy.errors import UserError
from clood_candy.fighters import SampleJudge
from clood_candy.pick.panel import decide, judge_sheet, ranks
from clood_candy.records import PickCandidate, PickSheet, PickVote, Score


def _sheet(*names, losses=None) -> PickSheet:
    losses = losses or {}
    return PickSheet(candidates=[PickCandidate(name=n, config="c", step=10 * (i + 1), lora=f"{n}.safetensors",
                                               val_loss=losses.get(n), final=i == len(names) - 1)
                                 for i, n in enumerate(names)],
                     prompts=[], seeds=[1], images=[], held_out=[], training=[], trigger="t", class_word="bean")


def test_ranks_put_the_best_at_one_and_share_ties():
    got = ranks({"a": Score(score=0.1), "b": Score(score=0.5), "c": Score(score=0.5), "d": Score(score=float("nan"))})
    assert got == {"a": 0.0, "b": 0.75, "c": 0.75}


def test_a_flagged_candidate_is_passed_over_and_the_reason_says_so():
    sheet = _sheet("early", "late")
    scores = {"colour": {"early": Score(score=0.2), "late": Score(score=0.9)},
              "loss": {"early": Score(score=-0.3), "late": Score(score=-0.1)}}
    result = decide(sheet, {"colour": 1.0, "loss": 1.0}, scores, {}, {"late": ["memorisation: memorised"]}, [])
    assert result.winner == "early" and result.panel == {"early": 0.0, "late": 1.0}
    assert "late ranked higher but is flagged" in result.why and "training alone would have shipped late" in result.why


def test_the_users_vote_outweighs_the_judges_and_overrides_a_flag():
    sheet = _sheet("early", "late")
    scores = {"colour": {"early": Score(score=0.9), "late": Score(score=0.2)},
              "user": {"early": Score(score=0.0), "late": Score(score=1.0, reason="user picked late")}}
    result = decide(sheet, {"colour": 1.0, "user": 10.0}, scores, {}, {"late": ["memorisation: memorised"]},
                    [PickVote(candidate="late")])
    assert result.winner == "late"
    assert result.disagreements == ["colour preferred early ()"]


def test_a_judge_that_fails_sits_out_and_the_pick_goes_on(make_ctx):
    class Broken(SampleJudge):
        name = "broken"

        def score_samples(self, sheet, ctx):
            raise RuntimeError("model exploded")

    ctx = make_ctx()
    ctx.registry.items["judge"]["broken"] = type(next(iter(ctx.registry.items["judge"].values())))(
        kind="judge", name="broken", obj=Broken(), plugin="test", version="0", source="test")
    result = judge_sheet(ctx, _sheet("a", "b", losses={"a": 0.5, "b": 0.4}), {"broken": 1.0, "validation-loss": 1.0})
    assert result.sat_out["broken"] == "failed: RuntimeError: model exploded"
    assert result.winner == "b" and set(result.scores) == {"validation-loss"}


def test_judges_of_the_wrong_kind_are_refused_in_one_line(make_ctx):
    from clood_candy.pick.panel import sample_judges

    ctx = make_ctx()
    with pytest.raises(UserError, match="judge 'rubric' scores captions, not samples"):
        sample_judges(ctx, {"rubric": 1.0})
    from clood_candy.pipeline.caption_stage import _panel

    ctx = make_ctx(caption={"judges": {"memorisation": 1.0}})
    with pytest.raises(UserError, match="judge 'memorisation' scores LoRA samples, not captions"):
        _panel(ctx)


# --- on the demo run (candy-mini, the learned miniature) ---------------------------------


@pytest.fixture
def picked_run(demo_run, tmp_path):
    """A copy of the demo run, so a vote does not change what other tests read."""
    copy = tmp_path / "run"
    shutil.copytree(demo_run, copy)
    return copy


@pytest.mark.slow
def test_the_demo_ships_the_panels_choice_with_every_judges_scores(demo_run):
    pick = json.loads((demo_run / "train" / "fight.json").read_text())["pick"]
    names = [c["name"] for c in pick["sheet"]["candidates"]]
    # the fight's round-1 save (step 20), the demo's checkpoint every 40 and its last step
    assert len(names) == 3 and [c["step"] for c in pick["sheet"]["candidates"]] == [20, 40, 80]
    assert {p["kind"] for p in pick["sheet"]["prompts"]} == {"held-out", "novel"}
    assert len(pick["sheet"]["images"]) == 3 * len(pick["sheet"]["prompts"])
    for image in pick["sheet"]["images"]:
        assert (demo_run / image["image"]).is_file()
    # on candy-mini the CLIP judges vote too, with the CLIP trained beside it
    assert set(pick["scores"]) == {"subject-colour", "memorisation", "validation-loss", "clip-subject", "clip-prompt"}
    for judge, scores in pick["scores"].items():
        assert set(scores) == set(names), judge
        assert all(s["reason"] for s in scores.values())
    assert pick["sat_out"]["user"] == "no vote yet (clood pick RUN CANDIDATE)"
    assert set(pick["sat_out"]) == {"user", "dino-subject"}  # no DINO weights offline: it says why, in one line
    assert "\n" not in pick["sat_out"]["dino-subject"]
    unflagged = {c: v for c, v in pick["panel"].items() if c not in pick["flags"]} or pick["panel"]
    assert pick["panel"][pick["winner"]] == max(unflagged.values())  # ties: the lower validation loss
    chosen = next(c for c in pick["sheet"]["candidates"] if c["name"] == pick["winner"])
    shipped = demo_run / "train" / "jlybn.safetensors"
    assert shipped.read_bytes() == (demo_run / chosen["lora"]).read_bytes()
    assert json.loads((demo_run / "run.json").read_text())["outputs"]["picked"] == pick["winner"]


@pytest.mark.slow
def test_the_demo_fights_second_round_is_decided_by_the_sample_judges(demo_run):
    fight = json.loads((demo_run / "train" / "fight.json").read_text())
    first, second = fight["rounds"]
    assert fight["judge"] == "panel" and first["decided_by"] == "validation-loss" and first["panel"] is None
    assert second["decided_by"] == "panel"
    panel = second["panel"]
    judged = {c["config"]: c for c in panel["sheet"]["candidates"]}
    assert set(judged) == set(first["survivors"]) and all(c["step"] == 40 for c in judged.values())
    assert {"subject-colour", "validation-loss", "clip-subject", "clip-prompt"} <= set(panel["scores"])
    assert "user" not in panel["judges"]  # a vote names a checkpoint of the finished run, not a recipe
    for image in panel["sheet"]["images"]:
        assert (demo_run / image["image"]).is_file()
    assert second["survivors"] == [judged_config(panel)] == [fight["winner"]]
    html = (demo_run / "report.html").read_text(encoding="utf-8")
    assert "was decided by the sample judges" in html


def judged_config(panel: dict) -> str:
    return next(c["config"] for c in panel["sheet"]["candidates"] if c["name"] == panel["winner"])


@pytest.mark.slow
def test_clood_pick_records_the_vote_and_ships_that_lora(picked_run):
    fight = json.loads((picked_run / "train" / "fight.json").read_text())["pick"]
    other = next(c for c in fight["sheet"]["candidates"] if c["name"] != fight["winner"])
    result = CliRunner().invoke(cli, ["pick", str(picked_run), other["name"], "--why", "crisper beans"])
    assert result.exit_code == 0, result.output
    assert f"* {other['name']}" in result.output
    after = json.loads((picked_run / "train" / "fight.json").read_text())["pick"]
    assert after["winner"] == other["name"] and after["votes"][-1]["why"] == "crisper beans"
    assert after["scores"]["user"][other["name"]]["score"] == 1.0
    assert after["scores"]["subject-colour"] == fight["scores"]["subject-colour"]  # the others are not asked again
    assert (picked_run / "train" / "jlybn.safetensors").read_bytes() == (picked_run / other["lora"]).read_bytes()
    wrong = CliRunner().invoke(cli, ["pick", str(picked_run), "step-9999"])
    assert wrong.exit_code != 0 and "no candidate 'step-9999' (have: " in wrong.output


@pytest.mark.slow
def test_sampling_the_candidates_again_reuses_every_image(picked_run, monkeypatch):
    from clood_candy.pick.sheet import make_sheet
    from clood_candy.pipeline.train_stage import load_trainset
    from clood_candy.records import TrainOutcome

    ctx = open_run(picked_run)
    family = ctx.family()
    monkeypatch.setattr(type(family), "generate", lambda *a, **k: (_ for _ in ()).throw(AssertionError("sampled")))
    outcome = TrainOutcome.model_validate(json.loads((picked_run / "train" / "outcome.json").read_text()))
    sheet = make_sheet(ctx, load_trainset(ctx), outcome, ctx.config.train.pick)
    assert sheet.failures == [] and len(sheet.images) == 3 * len(sheet.prompts)


@pytest.mark.slow
def test_the_report_shows_the_candidates_the_judges_and_the_copying_check(demo_run):
    html = (demo_run / "report.html").read_text()
    pick = json.loads((demo_run / "train" / "fight.json").read_text())["pick"]
    section = html[html.index('<section class="chapter" id="pick"'):html.index('id="lora" data-section')]
    assert f"Chosen: {pick['winner']}" in section
    for cand in pick["sheet"]["candidates"]:
        assert cand["name"] in section
    assert "Copying check" in section and "nearest training photo" in section
    assert "no vote yet (clood pick RUN CANDIDATE)" in section


def test_one_saved_lora_ships_without_sampling(make_ctx, monkeypatch):
    from clood_candy.pick.fight import pick_lora
    from clood_candy.records import TrainOutcome
    from support.sd import recipe

    ctx = make_ctx()
    (ctx.run.root / "train").mkdir()
    (ctx.run.root / "train" / "only.safetensors").write_bytes(b"x")
    outcome = TrainOutcome(config=recipe(), steps_done=20, lora="train/only.safetensors")
    monkeypatch.setattr(type(ctx), "family", lambda self: (_ for _ in ()).throw(AssertionError("no sampling")))
    assert pick_lora(ctx, None, outcome) is None
