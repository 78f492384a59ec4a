"""vision-stats on real photos (../shared) and on the demo studio's ground truth."""

import json
from pathlib import Path

import pytest
from clood_candy_plugins.captioners.vision_stats import VisionStatsCaptioner, analyse
from clood_candy_plugins.prep.decode import read_exif
from PIL import Image

from clood_candy.records import Photo

LIGHTING = {"daylight": "daylight", "indoor": "warm indoor light", "night": "flash"}
FRAMING = {"macro": "macro close-up", "medium": "medium shot", "wide": "wide shot"}


def photo_for(path: Path, root: Path) -> Photo:
    """A Photo whose image and original are the file itself (absolute paths stay absolute)."""
    try:
        with Image.open(path) as im:
            exif, _ = read_exif(im)
            size = im.size
    except Exception:
        exif, size = {}, (0, 0)
    rel = path.relative_to(root)
    return Photo(id=f"{rel.parent.name}-{path.stem}".replace("/", "-"), source=str(rel), image=str(path),
                 original=str(path), width=size[0], height=size[1], exif=exif, folders=list(rel.parent.parts))


@pytest.mark.slow
def test_names_jellybean_colours_on_real_photos(shared_photos, make_ctx):
    root = shared_photos / "jellybeans"
    truth = json.loads((root / "labels.json").read_text())
    photos = [photo_for(p, root) for p in sorted(root.glob("*/*.png"))]
    results = VisionStatsCaptioner().caption(photos, make_ctx())
    right = [p.id for p in photos if results[p.id].facts.colours[:1] == [truth[p.folders[0]]]]
    accuracy = len(right) / len(photos)
    print(f"vision-stats colour accuracy on {len(photos)} real jellybean photos: {accuracy:.0%}")
    assert len(photos) >= 40 and accuracy >= 0.9
    # one bean on a pad: a single candy, close up, on white
    facts = [results[p.id].facts for p in photos]
    assert sum(f.arrangement == "single" for f in facts) >= 0.8 * len(facts)
    assert sum(f.framing == "macro close-up" for f in facts) >= 0.8 * len(facts)
    assert sum(f.background == "white" for f in facts) >= 0.8 * len(facts)


def test_reads_the_candy_table_photos_and_survives_a_broken_file(shared_photos, make_ctx):
    root = shared_photos / "candy-table"
    photos = [photo_for(p, root) for p in sorted(root.glob("*.jpg"))]
    results = VisionStatsCaptioner().caption(photos, make_ctx())
    broken = [p for p in photos if p.source == "28.jpg"]
    assert broken and results[broken[0].id].error and "28.jpg" in results[broken[0].id].error
    good = [results[p.id].facts for p in photos if p.source != "28.jpg"]
    assert len(good) == 7
    seen = set()
    for facts in good:
        assert facts.colours and set(facts.colours) <= {"red", "yellow", "green", "purple"}, facts.colours
        seen |= set(facts.colours)
        assert facts.arrangement in ("scattered", "few") and facts.framing in ("wide shot", "medium shot")
    assert seen == {"red", "yellow", "green", "purple"}
    assert sum(f.background == "grey" for f in good) >= 6
    three_red = results[next(p.id for p in photos if p.source == "20.jpg")].facts
    assert three_red.colours == ["red"] and three_red.count == 3


def test_reads_the_original_when_prep_kept_its_path(tmp_path, make_ctx):
    """The prepared crop loses the frame; the original still has it."""
    from clood_candy.studio import render_studio

    shot = render_studio(tmp_path / "shots", count=1, seed=5)[0]
    original = tmp_path / "shots" / shot.path
    ctx = make_ctx()
    crop = ctx.run.path("prep", "crop.png")
    crop.parent.mkdir(parents=True)
    x0, y0, x1, y1 = shot.labels.bean_box
    Image.open(original).crop((x0, y0, x1, y1)).save(crop)
    photo = Photo(id="a", source=shot.path, image="prep/crop.png", original=str(original), width=x1 - x0,
                  height=y1 - y0)
    result = VisionStatsCaptioner().caption([photo], ctx)["a"]
    assert result.details["image"] == str(original)
    gone = photo.model_copy(update={"original": str(tmp_path / "moved.jpg")})
    assert VisionStatsCaptioner().caption([gone], ctx)["a"].details["image"] == str(crop)


@pytest.fixture(scope="module")
def demo_set(tmp_path_factory):
    from clood_candy.studio import render_studio

    root = tmp_path_factory.mktemp("demo-studio")
    return root, render_studio(root, count=32, seed=0)  # what `clood dogfood candy --demo` shoots


@pytest.mark.slow
def test_demo_set_background_lighting_colour_layout_accuracy(demo_set):
    root, shots = demo_set
    score = {"colour": 0, "colours_jaccard": 0.0, "background": 0, "lighting": 0, "arrangement": 0, "framing": 0}
    for shot in shots:
        truth = shot.labels
        photo = photo_for(root / shot.path, root)
        seen = analyse(Path(photo.image), photo.exif)
        background = truth.background if truth.background != "cloth" else f"{truth.background_colour} cloth"
        score["colour"] += bool(seen.colours) and seen.colours[0] in truth.colours
        got, want = set(seen.colours), set(truth.colours)
        score["colours_jaccard"] += len(got & want) / len(got | want)
        score["background"] += seen.background == background
        score["lighting"] += seen.lighting == LIGHTING[truth.lighting]
        score["arrangement"] += seen.arrangement == truth.arrangement
        score["framing"] += seen.framing == FRAMING[truth.zoom]
    accuracy = {k: round(v / len(shots), 3) for k, v in score.items()}
    print(f"vision-stats on the {len(shots)}-shot demo set: {accuracy}")
    assert accuracy["background"] >= 0.8 and accuracy["lighting"] >= 0.85
    assert accuracy["colour"] >= 0.8 and accuracy["colours_jaccard"] >= 0.7
    assert accuracy["arrangement"] >= 0.7 and accuracy["framing"] >= 0.65
