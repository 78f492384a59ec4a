"""Culling with reasons: blur (normalised so 150 px crops and 12 MP photos are judged
alike), exposure, size for the resolution, upscalers, keep_all."""

from __future__ import annotations

import pytest
from PIL import Image, ImageFilter, ImageOps
from support.prep import candy_photo, prepare

from clood_candy.plugins import Registered
from clood_candy.stages import Upscaler


def test_blurred_photo_is_culled_with_its_reason_and_the_sharp_one_kept(make_ctx, tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    blobs = ((300, 260, 70, 50), (480, 330, 50, 40))
    candy_photo(blobs=blobs).save(src / "sharp.png")
    candy_photo(blobs=blobs, seed=9).filter(ImageFilter.GaussianBlur(6)).save(src / "blurred.png")
    report, ctx, e = prepare(make_ctx, src)
    assert e["sharp.png"].status == "kept"
    assert e["blurred.png"].status == "culled" and "blurry" in e["blurred.png"].reason
    assert e["blurred.png"].metrics["sharpness"] < 0.35 <= e["sharp.png"].metrics["sharpness"]
    report, ctx, e = prepare(make_ctx, src, keep_all=True)  # kept, still explained
    assert e["blurred.png"].status == "kept" and "blurry" in e["blurred.png"].reason


def test_small_crops_are_judged_like_big_photos(make_ctx, tmp_path):
    """A sharp 150 px photo is not blurry; the same scene blurred is, at any size."""
    src = tmp_path / "photos"
    src.mkdir()
    small = candy_photo(size=(150, 110), blobs=((70, 55, 40, 28),), texture=4)
    small.save(src / "small-sharp.png")
    small.filter(ImageFilter.GaussianBlur(2.5)).save(src / "small-blurred.png")
    big = candy_photo(size=(3000, 2200), blobs=((1400, 1100, 800, 560),), texture=4).filter(ImageFilter.GaussianBlur(2))
    big.save(src / "big-sharp.jpg", quality=90)
    big.filter(ImageFilter.GaussianBlur(40)).save(src / "big-blurred.jpg", quality=90)
    report, ctx, e = prepare(make_ctx, src, keep_all=True, duplicate_distance=-1)
    assert "blurry" not in e["small-sharp.png"].reason and "blurry" not in e["big-sharp.jpg"].reason
    assert "blurry" in e["small-blurred.png"].reason and "blurry" in e["big-blurred.jpg"].reason
    assert "too small" in e["small-sharp.png"].reason  # 110 px for 256: still said
    assert 'set prep.upscaler = "realesrgan"' in e["small-sharp.png"].reason  # the fix names the installed one


def test_exposure_culls_name_the_problem(make_ctx, tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    photo = candy_photo()
    photo.point(lambda v: int(v * 0.12)).save(src / "dark.png")
    photo.point(lambda v: min(255, int(v * 1.9))).save(src / "blown.png")  # colours clipped too
    velvet = candy_photo(background=(3, 3, 3), blobs=((400, 300, 60, 40),), texture=1)
    velvet.save(src / "black-velvet.png")  # a black backdrop is a choice while the candy is lit
    night = candy_photo(blobs=((400, 300, 60, 40),)).point(lambda v: max(0, v - 190))
    night.save(src / "crushed.png")
    studio = candy_photo(background=(255, 255, 255), texture=0, blobs=((400, 300, 80, 60), (250, 250, 40, 40)))
    studio.save(src / "white-backdrop.png")
    report, ctx, e = prepare(make_ctx, src)
    assert e["dark.png"].status == "culled" and "underexposed" in e["dark.png"].reason
    assert e["blown.png"].status == "culled" and "overexposed" in e["blown.png"].reason
    assert e["crushed.png"].status == "culled" and "underexposed" in e["crushed.png"].reason
    assert e["black-velvet.png"].status == "kept" and "background crushed to black" in e["black-velvet.png"].reason
    assert e["white-backdrop.png"].status == "kept", e["white-backdrop.png"]
    assert "subject well exposed" in e["white-backdrop.png"].reason


class DoublingUpscaler(Upscaler):
    """A real (if plain) upscaler for the test: LANCZOS, and it records its calls."""

    name = "test-lanczos"

    def __init__(self):
        self.calls = []

    def upscale(self, image: Image.Image, factor: int) -> Image.Image:
        self.calls.append((image.size, factor))
        return image.resize((image.width * factor, image.height * factor), Image.Resampling.LANCZOS)


def test_too_small_is_explained_and_an_upscaler_is_offered(make_ctx, tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    candy_photo(size=(200, 150), blobs=((100, 75, 40, 30),)).save(src / "small.png")
    report, ctx, e = prepare(make_ctx, src, resolution=512)
    reason = e["small.png"].reason
    assert e["small.png"].status == "culled"
    assert "150 px short side, needs 512" in reason and "0.29x" in reason and "upscaler" in reason

    ctx = make_ctx(prep={"resolution": 512, "upscaler": "test-lanczos"})
    upscaler = DoublingUpscaler()
    ctx.registry.items["upscaler"]["test-lanczos"] = Registered("upscaler", "test-lanczos", upscaler, "test", "0", "test")
    preparer = ctx.registry.get("preparer", "default")
    report = preparer.prepare(src, ctx.run.path("prep"), ctx.config.prep, ctx)
    entry = report.entries[0]
    assert entry.status == "kept" and "upscaled 4x with test-lanczos" in entry.reason
    assert upscaler.calls == [((150, 150), 4)]
    with Image.open(ctx.run.root / entry.output) as im:
        assert im.size == (512, 512)


def test_unknown_upscaler_is_a_clear_config_error(make_ctx, tmp_path):
    from clood_candy.errors import UserError

    src = tmp_path / "photos"
    src.mkdir()
    candy_photo().save(src / "a.png")
    with pytest.raises(UserError, match="unknown upscaler 'nope'"):
        prepare(make_ctx, src, upscaler="nope")


@pytest.mark.slow
def test_real_photos_sharp_and_blurred(make_ctx, shared_photos, tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    with Image.open(shared_photos / "candy-table" / "20.jpg") as im:
        im.draft("RGB", (1536, 2040))
        photo = ImageOps.exif_transpose(im.convert("RGB"))
    photo.save(src / "table.jpg", quality=92)
    photo.filter(ImageFilter.GaussianBlur(8)).save(src / "table-blurred.jpg", quality=92)
    report, ctx, e = prepare(make_ctx, src, resolution=512)
    assert e["table.jpg"].status == "kept"
    assert e["table-blurred.jpg"].status == "culled" and "blurry" in e["table-blurred.jpg"].reason
