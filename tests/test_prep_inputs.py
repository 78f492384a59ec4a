"""Bad and odd input: every file gets a verdict with a reason a user can act on, nothing
stops the run, nothing is written outside the run, originals are never touched."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from clood_candy_plugins.prep import decode
from PIL import Image
from support.prep import candy_photo, prepare


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def _centre(path: Path) -> tuple[int, ...]:
    with Image.open(path) as im:
        return im.convert("RGB").getpixel((im.width // 2, im.height // 2))


@pytest.fixture
def corpus(tmp_path) -> Path:
    """One folder holding every kind of bad or odd file a real photo folder has."""
    src = tmp_path / "photos"
    src.mkdir()
    good = candy_photo()
    good.save(src / "good.jpg", quality=90)
    (src / "empty.jpg").write_bytes(b"")
    data = io.BytesIO()
    candy_photo(seed=1, blobs=((400, 300, 80, 50),)).save(data, "JPEG", quality=90)
    (src / "truncated.jpg").write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    (src / "notes-really.jpg").write_text("these are my holiday notes, not a photo\n" * 5)
    cmyk = Image.new("CMYK", (400, 300), (0, 0, 0, 0))
    cmyk.paste((20, 230, 210, 20), (60, 40, 340, 260))  # red square on white
    cmyk.save(src / "cmyk.jpg", quality=95)
    deep = np.full((300, 400), 40000, np.uint16)
    deep[60:220, 40:200] = 8000  # a dark candy on a light table, in 16 bits
    Image.fromarray(deep).save(src / "deep16.png")
    pal = Image.new("P", (400, 300), 0)
    pal.putpalette([0, 0, 0, 200, 30, 40] + [0] * 762)
    pal.paste(1, (200, 100, 380, 280))
    pal.info["transparency"] = 0
    pal.save(src / "palette.png", transparency=0)
    rgba = Image.new("RGBA", (400, 300), (0, 0, 0, 0))
    rgba.paste((40, 30, 200, 255), (30, 20, 130, 280))
    rgba.save(src / "alpha.png")
    Image.new("RGB", (1, 1), (200, 30, 40)).save(src / "dot.png")
    Image.new("RGB", (4000, 40), (120, 120, 120)).save(src / "strip.png")
    (src / "Süßes und ジェリー").mkdir()
    candy_photo(seed=7, blobs=((200, 200, 50, 70),)).save(src / "Süßes und ジェリー" / "mein Foto 1.jpg")
    (src / "movie.mov").write_bytes(b"\x00\x00\x00\x18ftypqt  " + b"\x00" * 100)
    (src / "notes.txt").write_text("sidecar")
    (src / ".DS_Store").write_bytes(b"\x00\x01junk")
    (src / "shot.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + os.urandom(200))
    os.symlink("loop_b.jpg", src / "loop_a.jpg")
    os.symlink("loop_a.jpg", src / "loop_b.jpg")
    os.symlink(".", src / "again")  # a folder link back to itself
    os.symlink("gone.jpg", src / "dangling.jpg")
    return src


def test_every_file_gets_a_verdict_and_a_reason_naming_the_problem(make_ctx, corpus):
    before = _digest(corpus)
    report, ctx, e = prepare(make_ctx, corpus)

    expected = {
        "empty.jpg": ("failed", "empty"),
        "truncated.jpg": ("failed", "truncated"),
        "notes-really.jpg": ("failed", "text"),
        "dot.png": ("culled", "too small"),
        "strip.png": ("culled", "aspect ratio"),
        "movie.mov": ("culled", "not an image"),
        "shot.heic": ("failed", "heic"),
        "loop_a.jpg": ("failed", "symlink loop"),
        "loop_b.jpg": ("failed", "symlink loop"),
        "dangling.jpg": ("failed", "broken symlink"),
    }
    for name, (status, words) in expected.items():
        assert e[name].status == status, (name, e[name])
        assert words in e[name].reason.lower(), (name, e[name].reason)
    for name in ("good.jpg", "cmyk.jpg", "deep16.png", "palette.png", "alpha.png", "Süßes und ジェリー/mein Foto 1.jpg"):
        assert e[name].status == "kept", (name, e[name])
        assert (ctx.run.root / e[name].output).is_file()
    # Sidecars and junk are not photos; the folder link back to itself is not walked twice.
    assert not {"notes.txt", ".DS_Store"} & set(e)
    assert not any(s.startswith("again/") for s in e)
    assert _digest(corpus) == before  # originals untouched
    assert len(report.photos) == 6


def test_pixel_formats_are_converted_correctly(make_ctx, corpus):
    report, ctx, e = prepare(make_ctx, corpus, crop="center")
    red = _centre(ctx.run.root / e["cmyk.jpg"].output)
    assert red[0] > 180 and red[1] < 60 and red[2] < 60, red
    with Image.open(ctx.run.root / e["deep16.png"].output) as im:  # scaled to 8 bits, not clipped to 255
        table, candy = im.convert("RGB").getpixel((im.width - 3, im.height - 3)), im.convert("RGB").getpixel((im.width // 3, im.height // 2))
    assert all(abs(c - 40000 / 257) < 3 for c in table) and all(abs(c - 8000 / 257) < 3 for c in candy), (table, candy)
    with Image.open(ctx.run.root / e["alpha.png"].output) as im:
        corner = im.convert("RGB").getpixel((im.width - 3, im.height - 3))
    assert all(abs(c - 128) <= 2 for c in corner), f"transparency became {corner}, not neutral grey"
    with Image.open(ctx.run.root / e["palette.png"].output) as im:
        corner = im.convert("RGB").getpixel((3, 3))
    assert all(abs(c - 128) <= 2 for c in corner), corner
    assert "grey" in e["alpha.png"].reason


def test_decompression_bomb_guard_is_reported_not_crashed(make_ctx, tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    candy_photo(size=(400, 300)).save(src / "big.png")
    report, ctx, e = prepare(make_ctx, src, max_pixels=50_000)
    assert e["big.png"].status == "failed"
    assert "max_pixels" in e["big.png"].reason and "bomb" in e["big.png"].reason


def test_other_formats_and_first_gif_frame(make_ctx, tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    for i, fmt in enumerate(("webp", "tiff", "bmp")):
        candy_photo(seed=10 + i, blobs=((250 + 60 * i, 250, 60, 50),)).save(src / f"shot.{fmt}")
    frames = [Image.new("RGB", (300, 300), c) for c in ((200, 30, 40), (30, 40, 200))]
    frames[0].save(src / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    report, ctx, e = prepare(make_ctx, src, crop="center", keep_all=True)
    for name in ("shot.webp", "shot.tiff", "shot.bmp", "anim.gif"):
        assert e[name].status == "kept", e[name]
    first = _centre(ctx.run.root / e["anim.gif"].output)
    assert first[0] > 150 and first[2] < 100, first  # the red first frame, not the blue second
    assert "first of 2 frames" in e["anim.gif"].reason


def test_unreadable_file_fails_with_a_permission_reason(make_ctx, tmp_path, monkeypatch):
    src = tmp_path / "photos"
    src.mkdir()
    candy_photo().save(src / "locked.jpg")
    candy_photo(seed=2, blobs=((500, 300, 70, 60),)).save(src / "fine.jpg")
    if os.geteuid() != 0:
        (src / "locked.jpg").chmod(0)
    else:  # root reads everything: make the open itself refuse, as the OS would for a user
        real_open = decode.Image.open

        def refusing_open(path, *args, **kwargs):
            if Path(path).name == "locked.jpg":
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(decode.Image, "open", refusing_open)
    report, ctx, e = prepare(make_ctx, src, workers=1)
    assert e["locked.jpg"].status == "failed" and "permission" in e["locked.jpg"].reason
    assert e["fine.jpg"].status == "kept"


def _orient(upright: Image.Image, orientation: int) -> bytes:
    """Store ``upright`` the way a camera would with this EXIF orientation."""
    inverse = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
               5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
               8: Image.Transpose.ROTATE_270}
    stored = upright.transpose(inverse[orientation]) if orientation in inverse else upright
    exif = Image.Exif()
    exif[274] = orientation
    out = io.BytesIO()
    stored.save(out, "JPEG", quality=95, exif=exif)
    return out.getvalue()


def test_exif_orientations_1_to_8_give_the_same_upright_photo(make_ctx, tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    # Asymmetric: a big red candy top-left, a small yellow one lower right.
    upright = candy_photo(size=(480, 360), blobs=((130, 110, 60, 45), (360, 260, 30, 25)))
    for o in range(1, 9):
        (src / f"o{o}.jpg").write_bytes(_orient(upright, o))
    report, ctx, e = prepare(make_ctx, src, crop="none", duplicate_distance=-1)
    outs = {}
    for o in range(1, 9):
        entry = e[f"o{o}.jpg"]
        assert entry.status == "kept", entry
        with Image.open(ctx.run.root / entry.output) as im:
            outs[o] = np.asarray(im.convert("RGB"), np.float32)
    for o in range(2, 9):
        assert outs[o].shape == outs[1].shape, o
        assert np.abs(outs[o] - outs[1]).mean() < 4, f"orientation {o} differs from upright"
    red = outs[1][int(110 / 360 * outs[1].shape[0]), int(130 / 480 * outs[1].shape[1])]
    assert red[0] > 150 and red[1] < 80


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=zipfile.ZIP_DEFLATED)
    return path


def test_zip_with_escaping_paths_writes_nothing_outside_the_run(make_ctx, tmp_path):
    photo = io.BytesIO()
    candy_photo().save(photo, "JPEG")
    archive = _zip(tmp_path / "in" / "photos.zip" if (tmp_path / "in").mkdir() is None else tmp_path,
                   {"good/candy.jpg": photo.getvalue(), "../evil.jpg": photo.getvalue(),
                    "../../evil2.jpg": photo.getvalue(), "/tmp/clood-evil-abs.jpg": photo.getvalue(),
                    "good/../../sneaky.jpg": photo.getvalue()})
    before = {p for p in tmp_path.rglob("*")}
    report, ctx, e = prepare(make_ctx, archive)
    assert e["good/candy.jpg"].status == "kept"
    for name in ("../evil.jpg", "../../evil2.jpg", "/tmp/clood-evil-abs.jpg", "good/../../sneaky.jpg"):
        assert e[name].status == "failed" and "unsafe path" in e[name].reason
    assert not Path("/tmp/clood-evil-abs.jpg").exists()
    new = {p for p in tmp_path.rglob("*")} - before
    run_root = ctx.run.root.resolve()
    assert all(p.resolve().is_relative_to(run_root) for p in new), [p for p in new if not p.resolve().is_relative_to(run_root)]
    assert report.photos[0].folders == ["good"] and Path(report.photos[0].original).is_relative_to(run_root)


def test_zip_bomb_is_refused(make_ctx, tmp_path):
    photo = io.BytesIO()
    candy_photo().save(photo, "JPEG")
    archive = _zip(tmp_path / "bomb.zip", {"bomb.bmp": b"\x00" * (40 * 1024 * 1024), "candy.jpg": photo.getvalue()})
    report, ctx, e = prepare(make_ctx, archive)
    assert e["bomb.bmp"].status == "failed" and "zip bomb" in e["bomb.bmp"].reason
    assert e["candy.jpg"].status == "kept"
    assert not any(p.name == "bomb.bmp" for p in ctx.run.root.rglob("*"))


def test_heic_without_pillow_heif_names_the_fix(tmp_path):
    if decode.HEIF_OK:
        pytest.skip("pillow-heif is installed here")
    path = tmp_path / "x.heic"
    path.write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64)
    with pytest.raises(decode.PhotoError, match="pillow-heif"):
        decode.open_photo(path, max_pixels=10**8, need_short_side=None)
