"""Near-duplicates: re-encoded, cropped, brightened and burst copies are caught and the
best of each group kept; different shots of candies on the same plain table are not."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from support.prep import candy_photo, prepare


def _jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def test_synthetic_copies_and_bursts_are_caught_different_layouts_are_not(make_ctx, tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    blobs = ((300, 260, 50, 35), (480, 330, 40, 40), (380, 420, 30, 25))
    original = candy_photo(blobs=blobs, seed=1)
    original.save(src / "a.png")
    (src / "a-resaved.jpg").write_bytes(_jpeg(original, 70))
    w, h = original.size
    original.crop((int(0.04 * w), int(0.04 * h), w, h)).save(src / "a-cropped.png")
    # A burst frame: the camera moved a little, fresh sensor noise, a bit soft.
    burst = candy_photo(size=(830, 630), blobs=tuple((x + 12, y + 9, rx, ry) for x, y, rx, ry in blobs), seed=1)
    burst.crop((0, 0, 800, 600)).filter(ImageFilter.GaussianBlur(1.2)).save(src / "a-burst.png")
    # Same table, same candies, moved around: a different photo.
    candy_photo(blobs=((520, 200, 50, 35), (250, 400, 40, 40), (600, 450, 30, 25)), seed=1).save(src / "b.png")
    report, ctx, e = prepare(make_ctx, src)
    assert e["a.png"].status == "kept" and e["b.png"].status == "kept"
    for copy in ("a-resaved.jpg", "a-cropped.png", "a-burst.png"):
        assert e[copy].status == "culled", e[copy]
        assert e[copy].duplicate_of == "a.png" and "near-duplicate of a.png" in e[copy].reason
    assert e["b.png"].duplicate_of is None


def test_the_sharpest_largest_of_a_group_is_kept(make_ctx, tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    photo = candy_photo(size=(1000, 750), blobs=((500, 370, 90, 60), (700, 300, 40, 40)))
    photo.filter(ImageFilter.GaussianBlur(1.5)).save(src / "1-soft.png")
    photo.save(src / "2-sharp.png")
    photo.resize((600, 450), Image.Resampling.LANCZOS).save(src / "3-small.png")
    report, ctx, e = prepare(make_ctx, src)
    assert e["2-sharp.png"].status == "kept"
    assert e["1-soft.png"].duplicate_of == "2-sharp.png" and e["3-small.png"].duplicate_of == "2-sharp.png"


def test_keep_all_keeps_duplicates_but_says_so(make_ctx, tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    photo = candy_photo()
    photo.save(src / "a.png")
    (src / "b.jpg").write_bytes(_jpeg(photo, 80))
    report, ctx, e = prepare(make_ctx, src, keep_all=True)
    assert {e["a.png"].status, e["b.jpg"].status} == {"kept"}
    assert any("near-duplicate" in x.reason for x in e.values())
    assert len(report.photos) == 2


@pytest.mark.slow
def test_real_candy_table_shots_are_not_duplicates_but_their_copies_are(make_ctx, shared_photos, tmp_path):
    table = shared_photos / "candy-table"
    src = tmp_path / "photos"
    shutil.copytree(table, src)
    src.chmod(0o755)
    with Image.open(table / "05.jpg") as im:
        (src / "05-q70.jpg").write_bytes(_jpeg(ImageOps.exif_transpose(im), 70))
    with Image.open(table / "09.jpg") as im:
        im = ImageOps.exif_transpose(im)
        w, h = im.size
        (src / "09-crop4.jpg").write_bytes(_jpeg(im.crop((int(0.04 * w), int(0.04 * h), w, h)), 92))
    with Image.open(table / "20.jpg") as im:
        (src / "20-bright15.jpg").write_bytes(_jpeg(ImageEnhance.Brightness(ImageOps.exif_transpose(im)).enhance(1.15), 92))
    report, ctx, e = prepare(make_ctx, src, resolution=512)

    assert e["28.jpg"].status == "failed" and "empty" in e["28.jpg"].reason
    originals = [p.name for p in table.iterdir() if p.name != "28.jpg"]
    for name in originals:
        dup = e[name].duplicate_of
        assert dup is None or dup not in originals, f"{name} flagged a duplicate of another real shot, {dup}"
    pairs = {"05.jpg": "05-q70.jpg", "09.jpg": "09-crop4.jpg", "20.jpg": "20-bright15.jpg"}
    for original, copy in pairs.items():
        verdicts = {e[original].duplicate_of, e[copy].duplicate_of}
        assert verdicts in ({None, original}, {None, copy}), (original, e[original], e[copy])
    assert e["09.jpg"].status == "kept"  # the uncropped one is larger
    assert sum(x.status == "kept" for x in e.values()) == len(originals)


@pytest.mark.slow
def test_real_jellybean_photos_each_get_a_verdict(make_ctx, shared_photos):
    beans = shared_photos / "jellybeans"
    files = sorted(str(p.relative_to(beans)) for p in beans.rglob("*.png"))
    report, ctx, e = prepare(make_ctx, beans, keep_all=True)
    assert sorted(e) == files  # labels.json is not a photo
    for name, entry in e.items():
        assert entry.status == "kept"
        assert "too small" in entry.reason  # 110 px for 256
        assert "near-duplicate" not in entry.reason, (name, entry.reason)
        assert "blurry" not in entry.reason, (name, entry.reason)
    assert {tuple(p.folders) for p in report.photos} == {(f,) for f in {n.split("/")[0] for n in files}}
    report, ctx, e = prepare(make_ctx, beans)  # without keep_all: culled, none failed, none lost
    assert len(e) == 48 and all(x.status == "culled" for x in e.values())


def test_hash_distances_separate_copies_from_other_shots():
    """The numbers behind the thresholds, on synthetic scenes (the real ones are in BENCHMARKS.md)."""
    from clood_candy_plugins.prep import dedup

    def grey(img):
        g = img.convert("L")
        g.thumbnail((256, 256))
        return g

    a = candy_photo(blobs=((300, 260, 50, 35), (480, 330, 40, 40)), seed=2)
    b = candy_photo(blobs=((420, 200, 50, 35), (260, 380, 40, 40)), seed=2)
    a_copy = Image.open(io.BytesIO(_jpeg(ImageEnhance.Brightness(a).enhance(1.15), 75))).convert("RGB")
    ha, hb, hc = (dedup.view_hashes(grey(x)) for x in (a, b, a_copy))
    assert dedup.hash_distance(ha, hc)[0] <= 2
    d_ab, i, j = dedup.hash_distance(ha, hb)
    detail = dedup.detail_match(np.asarray(grey(a)), i, np.asarray(grey(b)), j)
    assert d_ab > 6 or detail < dedup.MIN_DETAIL_MATCH
