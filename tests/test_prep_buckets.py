"""prep.buckets: 3:2, 4:3 and portrait photos are prepared at their nearest bucket's size
with its aspect ratio (a subject crop, or with crop = "none" the whole frame but a
sliver), the records carry the photo's size and the crop, and the training set built from
them hands both to the trainer (SDXL's size and crop ids)."""

from __future__ import annotations

import json
import logging
import shutil

from PIL import Image
from support.prep import blob_boxes, candy_photo, inside

from clood_candy import fsutil

PHOTOS = {  # name: (size, candies), a 3:2, a 4:3 and a 2:3 photo
    "wide.jpg": ((1200, 800), ((420, 330, 60, 40),)),
    "four-three.jpg": ((1200, 900), ((800, 500, 50, 45), (700, 560, 30, 25))),
    "portrait.jpg": ((800, 1200), ((380, 800, 55, 40),)),
}
BUCKETS = {"wide.jpg": (160, 96), "four-three.jpg": (144, 112), "portrait.jpg": (96, 160)}


def photo_folder(tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    for i, (name, (size, blobs)) in enumerate(PHOTOS.items()):
        candy_photo(size=size, blobs=blobs, seed=i).save(src / name, quality=92)
    return src


def prepare(make_ctx, src, **prep):
    ctx = make_ctx(base="tiny", prep={"resolution": 128, "buckets": True, "duplicate_distance": -1, **prep})
    report = ctx.registry.get("preparer", "default").prepare(src, ctx.run.path("prep"), ctx.config.prep, ctx)
    return report, ctx, {e.source: e for e in report.entries}


def test_subject_crops_keep_the_photo_aspect_at_its_bucket_size(make_ctx, tmp_path):
    report, ctx, e = prepare(make_ctx, photo_folder(tmp_path))
    photos = {p.source: p for p in report.photos}
    assert set(photos) == set(PHOTOS)
    for name, (size, blobs) in PHOTOS.items():
        photo, entry = photos[name], e[name]
        assert (photo.width, photo.height) == BUCKETS[name]
        with Image.open(ctx.run.root / entry.output) as im:
            assert im.size == BUCKETS[name]
        x0, y0, x1, y1 = entry.crop_box
        assert abs((x1 - x0) / (y1 - y0) - photo.width / photo.height) < 0.02, (name, entry.crop_box)
        assert 0 <= x0 and 0 <= y0 and x1 <= size[0] and y1 <= size[1]
        for box in blob_boxes(blobs):
            assert inside(box, entry.crop_box), (name, box, entry.crop_box)
        assert x1 - x0 < size[0] and y1 - y0 < size[1]  # a subject crop, not the whole frame
        assert f"bucket {photo.width}x{photo.height}, subject crop, fill" in entry.reason
        assert photo.original_size == size and photo.crop_box == entry.crop_box


def test_crop_none_keeps_the_whole_frame_but_the_sliver_the_ratio_needs(make_ctx, tmp_path):
    report, _, e = prepare(make_ctx, photo_folder(tmp_path), crop="none")
    assert e["wide.jpg"].crop_box == [0, 40, 1200, 760]  # 3:2 into 160x96 (5:3)
    assert e["four-three.jpg"].crop_box == [21, 0, 1178, 900]  # 4:3 into 144x112 (9:7)
    assert e["portrait.jpg"].crop_box == [40, 0, 760, 1200]
    assert {p.source: (p.width, p.height) for p in report.photos} == BUCKETS
    assert all("whole frame" in e[name].reason for name in PHOTOS)


def _dataset(ctx, report):
    """What the caption stage leaves: the images, captions and metadata.jsonl."""
    fsutil.write_json(ctx.run.path("prep", "report.json"), report)
    dataset = ctx.run.path("dataset")
    dataset.mkdir(parents=True)
    lines = []
    for photo in report.photos:
        name = photo.image.rsplit("/", 1)[-1]
        shutil.copyfile(ctx.run.path(photo.image), dataset / name)
        lines.append(json.dumps({"file_name": name, "text": f"jlybn, jellybean, {photo.id}", "id": photo.id}))
    (dataset / "metadata.jsonl").write_text("\n".join(lines) + "\n")


def test_the_training_set_carries_photo_size_and_crop_to_sdxls_time_ids(make_ctx, tmp_path):
    from clood_candy_plugins.sd.bucketed import latents_for

    from clood_candy.pipeline.train_stage import load_trainset

    report, ctx, _ = prepare(make_ctx, photo_folder(tmp_path), crop="none")
    _dataset(ctx, report)
    data = load_trainset(ctx)
    assert data.buckets and data.resolution == 128
    items = {i.image.rsplit("/", 1)[-1].split(".")[0]: i for i in data.train + data.validation}
    assert items["wide"].original_size == (1200, 800) and items["wide"].crop_box == [0, 40, 1200, 760]
    latents = latents_for(ctx.base(), [items["wide"], items["portrait"]], 128, True)
    assert latents.sizes == [(160, 96), (96, 160)]
    assert [tuple(t.shape) for t in latents.latents] == [(4, 12, 20), (4, 20, 12)]
    # (photo height, width, crop top, left, bucket height, width): 40 px of 800 cut at the
    # top, at the 96/720 scale the image trains at, is 5 px.
    assert latents.time_ids[0].tolist() == [800, 1200, 5, 0, 96, 160]
    assert latents.time_ids[1].tolist() == [1200, 800, 0, 5, 160, 96]


def test_crop_none_without_buckets_warns_that_training_sees_centre_squares(make_ctx, tmp_path, caplog):
    from clood_candy.pipeline.train_stage import load_trainset

    report, ctx, _ = prepare(make_ctx, photo_folder(tmp_path), crop="none", buckets=False)
    _dataset(ctx, report)
    with caplog.at_level(logging.WARNING, logger="clood_candy"):
        data = load_trainset(ctx)
    assert not data.buckets
    assert any('prep.crop = "none" without prep.buckets' in r.getMessage() for r in caplog.records)
