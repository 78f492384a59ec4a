"""Framing: square crops keep every candy whole with a margin near the target fill; when
no square can, the fewest candies are cut; buckets follow kohya's bucket set; the demo studio's beans
stay inside their crops."""

from __future__ import annotations

import json

import numpy as np
import pytest
from clood_candy_plugins.prep import framing
from PIL import Image
from support.prep import blob_boxes, candy_photo, inside, prepare

LAYOUTS = {
    "single-off-centre": ((800, 600), ((620, 150, 50, 35),)),
    "cluster-corner": ((800, 600), ((90, 500, 30, 25), (160, 520, 25, 30), (120, 440, 28, 22))),
    "spread": ((900, 700), ((150, 150, 30, 25), (700, 180, 35, 30), (420, 560, 40, 30), (300, 350, 25, 25))),
    "portrait-low": ((500, 900), ((250, 760, 60, 45), (330, 820, 30, 30))),
    "tiny-candy": ((1200, 900), ((900, 300, 12, 9),)),
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_subject_crop_keeps_every_candy_whole(make_ctx, tmp_path, name):
    size, blobs = LAYOUTS[name]
    src = tmp_path / "photos"
    src.mkdir()
    candy_photo(size=size, blobs=blobs, seed=len(name)).save(src / f"{name}.jpg", quality=92)
    report, ctx, e = prepare(make_ctx, src, resolution=256)
    entry = e[f"{name}.jpg"]
    assert entry.status == "kept", entry
    x0, y0, x1, y1 = entry.crop_box
    assert x1 - x0 == y1 - y0, "not square"
    assert 0 <= x0 and 0 <= y0 and x1 <= size[0] and y1 <= size[1], "crop leaves the photo"
    for box in blob_boxes(blobs):
        assert inside(box, entry.crop_box), f"candy {box} cut by crop {entry.crop_box}"
    boxes = np.array(blob_boxes(blobs))
    span = max(boxes[:, 2].max() - boxes[:, 0].min(), boxes[:, 3].max() - boxes[:, 1].min())
    fill = span / (x1 - x0)
    side_floor = min(256, min(size))  # never tighter than the training resolution
    if (x1 - x0) > side_floor and (x1 - x0) < min(size):  # the photo allowed the target
        assert 0.6 <= fill <= 0.85, f"fill {fill:.2f} far from the 0.75 target"
    assert "fill" in entry.reason


def test_candies_wider_than_the_short_side_cut_as_few_as_possible():
    # Four candies along a strip: no square of side 400 holds all; the best keeps three whole
    # and cuts none (the first is left out); centring on the group would cut one.
    pieces = [[10, 150, 90, 230], [350, 150, 430, 230], [500, 150, 580, 230], [650, 150, 730, 230]]
    frame = framing.square_crop((800, 400), pieces, 0.75, 256)
    assert frame.cut == 0 and frame.left_out == 1
    kept = [p for p in pieces if frame.box[0] <= p[0] and p[2] <= frame.box[2]]
    assert len(kept) == 3
    assert "leaves 1 out" in frame.note


def test_square_crop_geometry():
    frame = framing.square_crop((1000, 800), [[450, 350, 550, 450]], 0.75, 64)
    assert frame.box == [433, 333, 567, 467] and abs(frame.fill - 0.746) < 0.01
    frame = framing.square_crop((1000, 800), [[0, 0, 60, 60]], 0.75, 64)  # at the corner: shifted, not cut
    assert frame.box[:2] == [0, 0] and inside([0, 0, 60, 60], frame.box)
    frame = framing.square_crop((1000, 800), [[450, 350, 550, 450]], 0.75, 512)  # resolution floor
    assert frame.box[2] - frame.box[0] == 512


def test_busy_background_falls_back_to_a_centre_crop_and_says_so(make_ctx, tmp_path):
    rng = np.random.default_rng(1)
    src = tmp_path / "photos"
    src.mkdir()
    confetti = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    Image.fromarray(confetti).resize((800, 600), Image.Resampling.NEAREST).save(src / "busy.png")
    report, ctx, e = prepare(make_ctx, src)
    entry = e["busy.png"]
    assert entry.status == "kept"
    assert "centre crop" in entry.reason and ("busy" in entry.reason or "no subject" in entry.reason)
    assert entry.crop_box == [100, 0, 700, 600]


def test_buckets_follow_kohya_and_keep_the_aspect(make_ctx, tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    candy_photo(size=(1200, 800)).save(src / "wide.png")
    candy_photo(size=(300, 200), blobs=((150, 100, 40, 30),), seed=4).save(src / "small.png")
    report, ctx, e = prepare(make_ctx, src, resolution=512, buckets=True, min_side_ratio=0.3)
    sizes = {p.source: (p.width, p.height) for p in report.photos}
    # kohya's nearest bucket for 3:2 at 512 (area ≤ 512², sides multiples of 64), small or not:
    # one bucket set, so photos of one aspect batch together
    assert sizes == {"wide.png": (640, 384), "small.png": (640, 384)}
    assert "upscaled" in e["small.png"].reason
    for name, (w, h) in sizes.items():
        with Image.open(ctx.run.root / e[name].output) as im:
            assert im.size == (w, h)
        box = e[name].crop_box
        assert abs((box[2] - box[0]) / (box[3] - box[1]) - w / h) < 0.02


def test_centre_and_no_crop_modes(make_ctx, tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    candy_photo(size=(800, 600), blobs=((650, 120, 40, 30),)).save(src / "a.png")
    report, ctx, e = prepare(make_ctx, src, crop="center")
    assert e["a.png"].crop_box == [100, 0, 700, 600]
    report, ctx, e = prepare(make_ctx, src, crop="none")
    assert e["a.png"].crop_box == [0, 0, 800, 600]
    assert (report.photos[0].width, report.photos[0].height) == (341, 256)


def test_demo_studio_beans_stay_inside_their_crops(make_ctx, tmp_path):
    studio = pytest.importorskip("clood_candy.studio")
    if not hasattr(studio, "render_studio"):
        pytest.skip("the demo studio is not there yet")
    src = tmp_path / "studio"
    studio.render_studio(src, 10, 3)
    labels = json.loads((src / "labels.json").read_text())
    report, ctx, e = prepare(make_ctx, src, resolution=128)
    assert set(e) == set(labels)
    checked = 0
    for path, label in labels.items():
        entry = e[path]
        if entry.status == "failed" or entry.crop_box is None:
            continue
        bx = label["bean_box"]
        with Image.open(src / path) as im:
            short = min(im.size) if label.get("orientation", 1) == 1 else min(im.size)
        if max(bx[2] - bx[0], bx[3] - bx[1]) > short:
            continue  # no square can hold these beans
        assert inside(bx, entry.crop_box), (path, bx, entry.crop_box, entry.reason)
        checked += 1
    assert checked >= 5
    photo = next(p for p in report.photos)
    assert photo.labels is not None and "bean_box" in photo.labels
