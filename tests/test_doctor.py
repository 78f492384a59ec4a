"""The run's doctor (issue 15): each symptom of seed 004's troubleshooting table, on a run
made to show it. Loss not falling and a diverging loss come from real training on the tiny
base; overfitting, underfitting, out of memory and a colour cast from run folders written
the way a run writes them (the tiny random-weight base cannot overfit or cast a colour in
seconds)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from support.sd import module_ctx, recipe, train_set

from clood_candy import doctor
from clood_candy.cli import cli
from clood_candy.records import (ConfigFightResult, PickCandidate, PickResult, PickSheet, SampleImage, SampleSet,
                                 TrainOutcome)


def _write(root, rel, data):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data.model_dump(mode="json") if hasattr(data, "model_dump") else data))


def _outcome(train, val, **config) -> TrainOutcome:
    return TrainOutcome(config=recipe(**config), steps_done=train[-1][0], train_loss=train, val_loss=val)


def _names(found) -> set[str]:
    return {s.name for s in found.symptoms}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    ctx = module_ctx(root, base="tiny", prep={"resolution": 64})
    return ctx, train_set(root / "photos"), root


@pytest.mark.slow
@pytest.mark.parametrize("lr, symptom, words", [(1e-9, "loss-not-falling", "learning_rate = 3e-09 (was 1e-09"),
                                                (3.0, "loss-oscillating", "learning_rate = 1 (was 3")])  # 3.0: NaN by step 9
def test_real_training_that_shows_the_symptom(tiny, tmp_path, lr, symptom, words):
    ctx, data, root = tiny
    config = recipe(name=f"lr{lr:g}", learning_rate=lr, steps=40, validate_every=5, checkpoint_every=1000,
                    lr_scheduler="constant")
    outcome = ctx.family().train(ctx.base(), data, config, root / config.name, ctx)
    run = tmp_path / "run"
    _write(run, "train/outcome.json", outcome)
    found = doctor.diagnose(run)
    assert symptom in _names(found), found
    assert words in next(s.fix for s in found.symptoms if s.name == symptom)
    assert json.loads((run / "doctor.json").read_text())["symptoms"]


def test_overfitting_names_the_step_where_validation_turned_and_the_flagged_copier(tmp_path):
    steps = range(1, 1001)
    train = [(s, 0.5 - 0.3 * s / 1000) for s in steps]  # training keeps falling
    val = [(s, 0.4 - 0.1 * min(s, 600) / 600 + 0.08 * max(0, s - 600) / 400) for s in range(0, 1001, 100)]
    _write(tmp_path, "train/outcome.json", _outcome(train, val, steps=1000, rank=32, alpha=32))
    sheet = PickSheet(candidates=[PickCandidate(name="t-step600", config="t", step=600, lora="a"),
                                  PickCandidate(name="t-step1000", config="t", step=1000, lora="b", final=True)],
                      prompts=[], seeds=[1], images=[], held_out=[], training=[], trigger="jlybn", class_word="bean")
    pick = PickResult(sheet=sheet, judges={}, winner="t-step600", why="",
                      flags={"t-step1000": ["memorisation: memorised: 3 of 4 samples copy a training photo"]})
    _write(tmp_path, "train/fight.json", ConfigFightResult(configs=[recipe()], rounds=[], winner="t", pick=pick))
    found = doctor.diagnose(tmp_path)
    over = next(s for s in found.symptoms if s.name == "overfitting")
    assert "validation loss rose from 0.3000 at step 600 to 0.3800 at step 1000" in over.evidence
    assert "flagged t-step1000" in over.evidence and "the pick chose t-step600" in over.evidence
    assert over.fix.startswith("steps = 600 (was 1000), or rank = 16 (was 32)")
    assert "loss-not-falling" not in _names(found) and "loss-oscillating" not in _names(found)


def _png(path, colour):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((32, 32, 3), colour, np.uint8)).save(path)


def _samples(root, w0, w1):
    images = []
    for p in range(2):
        _png(root / "samples" / f"p{p}-base.png", w0)
        _png(root / "samples" / f"p{p}-w1.png", w1)
        images += [SampleImage(image=f"samples/p{p}-base.png", prompt=f"p{p}", seed=1, weight=0.0, checkpoint="base"),
                   SampleImage(image=f"samples/p{p}-w1.png", prompt=f"p{p}", seed=1, weight=1.0)]
    _write(root, "samples/samples.json", SampleSet(images=images))


def test_underfitting_when_the_trigger_is_missing_and_the_lora_changes_nothing(tmp_path):
    _write(tmp_path, "run.json", {"config": {"trigger": "jlybn"}})
    meta = tmp_path / "dataset" / "metadata.jsonl"
    meta.parent.mkdir(parents=True)
    meta.write_text("\n".join(json.dumps({"file_name": f"{i}.png", "text": text}) for i, text in enumerate(
        ["jlybn, jellybean, red", "jellybean, blue", "jellybean, green"])))
    _samples(tmp_path, (120, 120, 120), (121, 120, 120))
    under = next(s for s in doctor.diagnose(tmp_path).symptoms if s.name == "underfitting")
    assert "2 of 3 captions lack the trigger 'jlybn'" in under.evidence
    assert "differ from the base alone by 0.33 of 255" in under.evidence
    assert "put 'jlybn' first in every caption" in under.fix


def test_out_of_memory_from_a_config_that_failed(tmp_path):
    failures = {"rank-x2": "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"}
    configs = [recipe(name="t"), recipe(name="rank-x2", batch_size=4, rank=16)]
    _write(tmp_path, "train/fight.json", ConfigFightResult(configs=configs, rounds=[], winner="t", failures=failures))
    oom = next(s for s in doctor.diagnose(tmp_path).symptoms if s.name == "out-of-memory")
    assert "Tried to allocate 2.00 GiB" in oom.evidence
    assert oom.fix == "batch_size = 1 (was 4), gradient_checkpointing = true, rank = 8 (was 16)"


def test_a_colour_cast_the_lora_learned_from_orange_photos(tmp_path):
    for i in range(3):
        _png(tmp_path / "dataset" / f"{i}.png", (220, 150, 70))  # every photo under warm indoor light
    _samples(tmp_path, (128, 128, 128), (200, 140, 80))
    cast = next(s for s in doctor.diagnose(tmp_path).symptoms if s.name == "colour-cast")
    assert "redder and yellower" in cast.evidence and "daylight" in cast.fix
    _samples(tmp_path, (128, 128, 128), (90, 130, 200))  # a blue shift the photos do not explain
    assert "colour-cast" not in _names(doctor.diagnose(tmp_path))


def test_clood_runs_prints_each_symptom_with_its_fix(tmp_path):
    from clood_candy.runstore import RunStore

    run = tmp_path / "runs" / "sick"
    RunStore.create(run, "sick", {"trigger": "jlybn"}, None, demo=False)
    _write(run, "train/fight.json", ConfigFightResult(configs=[recipe()], rounds=[], winner="t",
                                                      failures={"t": "CUDA out of memory"}))
    result = CliRunner().invoke(cli, ["runs", "--dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "Out of memory (CUDA OOM): CUDA out of memory → batch_size = 1" in result.output


@pytest.mark.slow
def test_the_demo_run_is_checked_and_the_report_says_what_was_found(demo_run):
    found = doctor.Diagnosis.model_validate_json((demo_run / "doctor.json").read_text())
    assert set(found.checked) == set(doctor.CHECKS)
    html = (demo_run / "report.html").read_text()
    section = html[html.index('id="doctor" data-section'):]
    assert ("No symptom found" in section) == (not found.symptoms)
    for symptom in found.symptoms:
        assert symptom.title in section
