"""The per-concept leak check (issue 19) on the shipped candy-mini CLIP: two concepts whose
"photos" differ plainly (red beans, blue beans), samples of each trigger drawn in the other's
colour counted as leaks, and everything that is not the final LoRA at weight 1.0 left out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from clood_candy import fsutil
from clood_candy.records import ConceptInfo, ConceptSet, SampleImage, SampleSet
from clood_candy_plugins import candy_mini
from clood_candy_plugins.judges.concept_leaks import LEAKS, ConceptLeaks, ensure, measure

pytestmark = pytest.mark.skipif(candy_mini.folder("clip") is None, reason="this checkout has no candy-mini CLIP")

RED, BLUE = (200, 30, 30), (30, 50, 200)


def beans(colour: tuple[int, int, int], seed: int) -> Image.Image:
    """A 64 px studio-like shot: three beans of about ``colour`` on a pale table."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (64, 64), (235, 235, 230))
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x, y = (int(v) for v in rng.integers(4, 40, 2))
        draw.ellipse([x, y, x + 22, y + 15], fill=tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in colour))
    return image


def write_photos(root: Path, concepts: dict[str, tuple[str, tuple[int, int, int]]], per_concept: int = 5) -> None:
    """dataset/: each concept's photos, their metadata rows and concepts.json, as the caption stage writes them."""
    infos, rows, seed = [], [], 100
    for trigger, (name, colour) in concepts.items():
        ids = []
        for k in range(per_concept):
            photo_id = f"{trigger}_{k}"
            beans(colour, seed := seed + 1).save(root / "dataset" / f"{photo_id}.png")
            rows.append(json.dumps({"file_name": f"{photo_id}.png", "id": photo_id, "source": f"{name}/{k}.jpg",
                                    "concept": trigger, "text": f"jlybn {trigger}, jellybean"}))
            ids.append(photo_id)
        infos.append(ConceptInfo(name=name, trigger=trigger, class_word="jellybean", photos=ids))
    fsutil.write_text(root / "dataset" / "metadata.jsonl", "\n".join(rows) + "\n")
    fsutil.write_json(root / "dataset" / "concepts.json", ConceptSet(concepts=infos))


def write_samples(root: Path, drawn: list[tuple[str, float, str, tuple[int, int, int]]]) -> None:
    """samples/: (prompt, weight, checkpoint, colour) per picture, and samples.json."""
    images = []
    for k, (prompt, weight, checkpoint, colour) in enumerate(drawn):
        rel = f"samples/{checkpoint}_w{weight:g}_{k}.png"
        beans(colour, k).save(root / rel)
        images.append(SampleImage(image=rel, prompt=prompt, seed=k, weight=weight, checkpoint=checkpoint))
    fsutil.write_json(root / "samples" / "samples.json", SampleSet(images=images))


SK, JB = "jlybn sunkist, jellybean", "jlybn jellybelly, jellybean"


@pytest.fixture
def run(make_ctx):
    ctx = make_ctx(base="candy-mini", trigger="jlybn")
    root = ctx.run.root
    (root / "dataset").mkdir(parents=True, exist_ok=True)
    (root / "samples").mkdir(parents=True, exist_ok=True)
    write_photos(root, {"sunkist": ("Sunkist", RED), "jellybelly": ("Jelly Belly", BLUE)})
    write_samples(root, [
        # sunkist's row: 3 red (its own look), 1 blue (Jelly Belly's): 3/4, leaking 1/4 to jellybelly
        (SK, 1.0, "final", RED), (SK, 1.0, "final", RED), (SK, 1.0, "final", BLUE), (SK, 1.0, "final", RED),
        # jellybelly's row, and a user prompt with its word: 4 blue, 1 red: 4/5, leaking 1/5 to sunkist
        (JB, 1.0, "final", BLUE), (JB, 1.0, "final", BLUE), (JB, 1.0, "final", BLUE), (JB, 1.0, "final", BLUE),
        ("jlybn jellybelly on a beach", 1.0, "final", RED),
        # not measured: the base alone, a lower weight, an earlier checkpoint, no concept word, both words.
        # All blue: counted, they would move sunkist's figures.
        (SK, 0.0, "final", BLUE), (SK, 0.7, "final", BLUE), (SK, 1.0, "step-40", BLUE), (SK, 1.0, "step-40", BLUE),
        ("jlybn, jellybean", 1.0, "final", BLUE), ("jlybn sunkist and jlybn jellybelly", 1.0, "final", BLUE),
    ])
    return ctx


def test_samples_in_the_other_concepts_colour_count_as_leaks_to_it(run):
    leaks = ensure(run.run.root, run)
    assert leaks.sat_out is None, leaks.sat_out
    assert leaks.miniature and Path(leaks.model) == candy_mini.folder("clip")
    assert (leaks.checkpoint, leaks.weight, leaks.photos) == ("final", 1.0, {"sunkist": 5, "jellybelly": 5})
    assert leaks.matrix == {"sunkist": {"sunkist": 3, "jellybelly": 1}, "jellybelly": {"sunkist": 1, "jellybelly": 4}}
    sk, jb = leaks.concepts
    assert (sk.trigger, sk.name, sk.samples, sk.own, sk.own_share, sk.leaks_to, sk.leak_share) == \
        ("sunkist", "Sunkist", 4, 3, 0.75, "jellybelly", 0.25)
    assert (jb.trigger, jb.samples, jb.own, jb.own_share, jb.leaks_to, jb.leak_share) == \
        ("jellybelly", 5, 4, 0.8, "sunkist", 0.2)
    assert sk.prompts == [SK] and jb.prompts == [JB, "jlybn jellybelly on a beach"]
    written = ConceptLeaks.model_validate(fsutil.read_json(run.run.root / LEAKS))
    assert written == leaks and not leaks.problems


def test_a_concept_that_draws_only_itself_does_not_leak(run):
    root = run.run.root
    write_samples(root, [(SK, 1.0, "final", RED)] * 3 + [(JB, 1.0, "final", BLUE)] * 2)
    leaks = measure(root, run)
    assert leaks.matrix == {"sunkist": {"sunkist": 3, "jellybelly": 0}, "jellybelly": {"sunkist": 0, "jellybelly": 2}}
    assert [(c.own_share, c.leaks_to, c.leak_share) for c in leaks.concepts] == [(1.0, None, 0.0), (1.0, None, 0.0)]


def test_the_report_says_what_each_word_draws_and_that_the_clip_is_a_toy(run, monkeypatch):
    from clood_candy_plugins.judges import concept_leaks as check
    from clood_candy_plugins.report import concept_leaks
    from clood_candy_plugins.report.rundata import RunData

    page = concept_leaks.html(RunData(run.run.root, run))
    assert "jlybn sunkist</span> samples look like: sunkist 3/4, jellybelly 1/4" in page
    assert "jlybn jellybelly</span> samples look like: jellybelly 4/5, sunkist 1/5" in page
    assert "does each concept's word draw that concept?" in page.lower()
    assert "miniature candy-mini CLIP" in page and "a toy model's figure" in page

    def again(*_):  # the written record is fresh: a rebuilt report must not embed anew
        raise AssertionError("measured again")

    monkeypatch.setattr(check, "measure", again)
    from clood_candy_plugins.report import section_lora

    section = section_lora.build(RunData(run.run.root, run))  # in the samples' section, beside the grid
    assert "sunkist 3/4, jellybelly 1/4" in section.body and section.body.index("grid") < section.body.index("3/4")


def test_one_concept_sits_out_with_its_reason(make_ctx):
    ctx = make_ctx(base="candy-mini")
    root = ctx.run.root
    for folder in ("dataset", "samples"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    write_photos(root, {"sunkist": ("Sunkist", RED)})
    write_samples(root, [(SK, 1.0, "final", RED)] * 2)
    leaks = ensure(root, ctx)
    assert leaks.sat_out == "the run has 1 concept(s): a leak needs two or more to leak between"
    assert not leaks.concepts and not leaks.matrix
    assert ConceptLeaks.model_validate(fsutil.read_json(root / LEAKS)).sat_out == leaks.sat_out  # recorded

    from clood_candy_plugins.report import concept_leaks
    from clood_candy_plugins.report.rundata import RunData

    assert "The leak check sat out: the run has 1 concept(s)" in concept_leaks.html(RunData(root, ctx))


def test_without_clip_weights_it_sits_out_offline(make_ctx, tmp_path, network_attempts):
    empty = tmp_path / "no-clip"
    empty.mkdir()
    ctx = make_ctx(base="candy-mini", plugins={"clip": {"model": str(empty)}})
    root = ctx.run.root
    for folder in ("dataset", "samples"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    write_photos(root, {"sunkist": ("Sunkist", RED), "jellybelly": ("Jelly Belly", BLUE)}, per_concept=2)
    write_samples(root, [(SK, 1.0, "final", RED), (JB, 1.0, "final", BLUE)])
    leaks = measure(root, ctx)
    assert leaks.sat_out.startswith("no CLIP model to embed with") and "has no config.json" in leaks.sat_out
    assert not leaks.concepts and network_attempts == []


def test_no_samples_at_full_weight_sits_out(run):
    root = run.run.root
    write_samples(root, [(SK, 0.7, "final", RED), (JB, 1.0, "step-40", BLUE)])
    assert "no sample of a concept's trigger at the final checkpoint and weight 1" in measure(root, run).sat_out
