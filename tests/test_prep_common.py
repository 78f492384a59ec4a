"""The records the prep stage returns: ids, paths, folders, labels, EXIF."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image
from support.prep import candy_photo, prepare


def test_photo_records_carry_ids_paths_folders_labels_and_exif(make_ctx, tmp_path):
    src = tmp_path / "photos"
    (src / "jelly-belly" / "night" / "outdoor").mkdir(parents=True)
    img = candy_photo()
    exif = Image.Exif()
    exif[271], exif[272] = "Google", "Pixel 7"
    exif_ifd = exif.get_ifd(0x8769)
    exif_ifd[36867] = "2023:10:01 21:15:00"
    from PIL.TiffImagePlugin import IFDRational
    exif_ifd[37386] = IFDRational(553, 100)
    exif_ifd[37385] = 16
    img.save(src / "jelly-belly" / "night" / "outdoor" / "IMG_0012.jpg", quality=92, exif=exif)
    candy_photo(seed=5, blobs=((520, 330, 70, 45), (250, 200, 40, 40))).save(src / "top.png")
    (src / "labels.json").write_text(json.dumps({"jelly-belly/night/outdoor/IMG_0012.jpg": {"colours": ["red"], "count": 1}}))

    report, ctx, entries = prepare(make_ctx, src)

    assert set(entries) == {"jelly-belly/night/outdoor/IMG_0012.jpg", "top.png"}  # labels.json is not a photo
    photos = {p.source: p for p in report.photos}
    photo = photos["jelly-belly/night/outdoor/IMG_0012.jpg"]
    assert photo.id == "jelly-belly_night_outdoor_IMG_0012"
    assert photo.folders == ["jelly-belly", "night", "outdoor"]
    assert photo.image == "prep/images/jelly-belly_night_outdoor_IMG_0012.png"
    assert (ctx.run.root / photo.image).is_file()
    assert Path(photo.original).is_absolute() and Path(photo.original).is_file()
    assert photo.labels == {"colours": ["red"], "count": 1}
    assert photo.exif["Make"] == "Google" and photo.exif["Model"] == "Pixel 7"
    assert photo.exif["DateTimeOriginal"] == "2023:10:01 21:15:00"
    assert photo.exif["FocalLength"] == 5.53 and photo.exif["Flash"] == 16
    json.dumps(photo.model_dump())  # JSON-safe all the way down
    with Image.open(ctx.run.root / photo.image) as out:
        assert out.size == (256, 256) and out.format == "PNG"
    assert (photo.width, photo.height) == (256, 256)
    assert photos["top.png"].labels is None and photos["top.png"].folders == []
    assert entries["top.png"].status == "kept" and entries["top.png"].output == photos["top.png"].image


def test_ids_are_unique_and_filesystem_safe():
    from clood_candy_plugins.prep.sources import unique_ids

    rels = ["a b/IMG 1.jpg", "a-b/IMG-1.jpg", "x.jpg", "x.png", "X.JPG", "süß/ジェリー ビーン?.jpg"]
    ids = unique_ids(rels)
    assert len(set(v.lower() for v in ids.values())) == len(rels)
    for value in ids.values():
        assert value and "/" not in value and " " not in value and "?" not in value and not value.startswith(".")


def test_a_rerun_leaves_no_stale_images(make_ctx, tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    candy_photo().save(src / "one.png")
    candy_photo(seed=3, blobs=((500, 300, 50, 50),)).save(src / "two.png")
    ctx = make_ctx(prep={"resolution": 128})
    preparer = ctx.registry.get("preparer", "default")
    preparer.prepare(src, ctx.run.path("prep"), ctx.config.prep, ctx)
    (src / "two.png").unlink()
    report = preparer.prepare(src, ctx.run.path("prep"), ctx.config.prep, ctx)
    assert sorted(p.name for p in ctx.run.path("prep", "images").iterdir()) == ["one.png"]
    assert [p.id for p in report.photos] == ["one"]
