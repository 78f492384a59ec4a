"""Can the rubric judge be trusted? Right-vs-wrong caption pairs from the studio's ground
truth, and the baseline control on the demo set."""


import pytest
from clood_candy_plugins.captioners.baseline import BaselineCaptioner
from clood_candy_plugins.captioners.exif_folder import ExifFolderCaptioner
from clood_candy_plugins.captioners.vision_stats import VisionStatsCaptioner
from clood_candy_plugins.judges.rubric import RubricJudge
from support.rubric import photo_for, right_caption, wrong_versions

from clood_candy.captions.render import render
from clood_candy.captions.strategy import apply_strategy
from clood_candy.records import Candidate, FightItem, Photo


@pytest.fixture(scope="module")
def demo_set(tmp_path_factory):
    from clood_candy.studio import render_studio

    root = tmp_path_factory.mktemp("rubric-studio")
    return root, render_studio(root, count=32, seed=0)  # the demo's shoot


@pytest.mark.slow
def test_rubric_prefers_the_right_caption_in_at_least_90_percent_of_pairs(demo_set, make_ctx):
    root, shots = demo_set
    items, wrongs = [], {}
    for shot in shots:
        right = render(right_caption(shot.labels), "tags", trigger="jlybn", class_word="jellybean")
        wrongs[shot.path] = wrong_versions(shot.labels, right_caption(shot.labels))
        candidates = [Candidate(fighter="right", text=right)] + \
            [Candidate(fighter=kind, text=text) for kind, text in wrongs[shot.path].items()]
        items.append(FightItem(id=shot.path, photo=photo_for(root, shot.path), candidates=candidates))
    scores = RubricJudge().score(items, make_ctx(base="tiny"))

    won, lost = 0, []
    by_kind: dict[str, list[bool]] = {}
    for item in items:
        right = scores[item.id]["right"].score
        for kind in wrongs[item.id]:
            ok = right > scores[item.id][kind].score
            by_kind.setdefault(kind, []).append(ok)
            won += ok
            if not ok:
                lost.append(f"{item.id} {kind}: {scores[item.id][kind].reason}")
    agreement = won / sum(len(v) for v in by_kind.values())
    print(f"rubric prefers the right caption in {agreement:.1%} of {sum(len(v) for v in by_kind.values())} pairs; "
          + ", ".join(f"{k} {sum(v) / len(v):.0%}" for k, v in by_kind.items()))
    assert agreement >= 0.9, lost
    for kind in ("missing trigger", "subject features", "generic"):  # text-only checks: never fooled
        assert all(by_kind[kind]), kind
    for kind in ("wrong background", "contradicts EXIF/folders"):
        assert sum(by_kind[kind]) >= 0.9 * len(by_kind[kind]), kind
    # the reasons say which check failed
    first = items[0].id
    assert "trigger 'jlybn' missing" in scores[first]["missing trigger"].reason
    assert "subject features (bean shaped, glossy)" in scores[first]["subject features"].reason
    assert "generic" in scores[first]["generic"].reason


@pytest.mark.slow
def test_baseline_loses_to_vision_stats_and_exif_folder_on_the_demo_set(demo_set, make_ctx):
    root, shots = demo_set
    ctx = make_ctx(base="tiny")
    photos = [photo_for(root, shot.path) for shot in shots]
    captions = {}
    for captioner in (BaselineCaptioner(), VisionStatsCaptioner(), ExifFolderCaptioner()):
        raw = captioner.caption(photos, ctx)
        captions[captioner.name] = apply_strategy(raw, photos, "auto", trigger="jlybn", class_word="jellybean",
                                                  count_tokens=ctx.base().count_tokens).captions
    items = [FightItem(id=p.id, photo=p, candidates=[Candidate(fighter=name, text=caps[p.id])
                                                     for name, caps in captions.items()]) for p in photos]
    scores = RubricJudge().score(items, ctx)
    mean = {name: sum(scores[i.id][name].score for i in items) / len(items) for name in captions}
    print("rubric mean scores on the demo set:", {k: round(v, 3) for k, v in mean.items()})
    assert mean["baseline"] < mean["exif-folder"] and mean["baseline"] < mean["vision-stats"]
    beaten = sum(scores[i.id]["vision-stats"].score > scores[i.id]["baseline"].score for i in items)
    assert beaten >= 0.9 * len(items)
    assert all("generic" in scores[i.id]["baseline"].reason for i in items)


def test_rubric_checks_text_and_metadata_without_pixels(make_ctx):
    """No readable image: the text-only checks and EXIF/folder evidence still work."""
    night = Photo(id="n", source="night/a.jpg", image="prep/missing.png", width=64, height=64,
                  exif={"DateTimeOriginal": "2024:03:02 23:10:00", "Flash": 25}, folders=["night"])
    texts = {
        "good": "jlybn, jellybean, red, pile, flash photo, macro close-up",
        "late trigger": "jellybean, jlybn, red, pile, flash photo, macro close-up",
        "twice": "jlybn, jellybean, jlybn, red, pile, flash photo, macro close-up",
        "daylight": "jlybn, jellybean, red, pile, daylight, macro close-up",
        "closeup": "jlybn, jellybean, red, pile, flash photo, closeup",
        "long": "jlybn, jellybean, red, pile, flash photo, macro close-up, " + ", ".join(f"detail {i}" for i in range(60)),
        "empty": "",
    }
    item = FightItem(id="n", photo=night, candidates=[Candidate(fighter=k, text=v) for k, v in texts.items()])
    scores = RubricJudge().score([item], make_ctx())["n"]
    assert scores["good"].score > max(s.score for k, s in scores.items() if k != "good")
    assert "trigger not first" in scores["late trigger"].reason
    assert "trigger 2 times" in scores["twice"].reason
    assert "'daylight' but night recorded" in scores["daylight"].reason
    assert "'daylight' but flash recorded" in scores["daylight"].reason
    assert "non-standard words: closeup" in scores["closeup"].reason
    assert "tokens > 75 (approx.)" in scores["long"].reason  # no base model here: the stand-in count
    assert scores["empty"].score < 0.5 and "empty" in scores["empty"].reason
    assert all(0.0 <= s.score <= 1.0 for s in scores.values())
