"""Opening one photo safely: size limits, JPEG DCT scaling, EXIF orientation, and every
odd pixel format turned into plain 8-bit RGB."""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageCms, UnidentifiedImageError

try:  # optional: HEIC/HEIF from iPhones
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_OK = True
except Exception:  # not installed, or a broken build: those files get a per-file reason
    HEIF_OK = False

NEUTRAL_GREY = (128, 128, 128)  # what transparent pixels become: neither black nor white
HEIF_SUFFIXES = {".heic", ".heif", ".hif"}

# EXIF fields captioners use (time of day, distance, flash, light level), as JSON-safe values.
_IFD0_TAGS = {271: "Make", 272: "Model"}
_EXIF_TAGS = {
    36867: "DateTimeOriginal", 37382: "SubjectDistance", 37386: "FocalLength", 37385: "Flash",
    33434: "ExposureTime", 33437: "FNumber", 34855: "ISOSpeedRatings", 37379: "BrightnessValue",
}
_TRANSPOSE = {
    2: [Image.Transpose.FLIP_LEFT_RIGHT],
    3: [Image.Transpose.ROTATE_180],
    4: [Image.Transpose.FLIP_TOP_BOTTOM],
    5: [Image.Transpose.TRANSPOSE],
    6: [Image.Transpose.ROTATE_270],
    7: [Image.Transpose.TRANSVERSE],
    8: [Image.Transpose.ROTATE_90],
}


class PhotoError(Exception):
    """A file that cannot become a training photo; the message is the user-facing reason."""


@dataclass
class Opened:
    """A decoded, upright RGB photo. ``scale`` maps original (upright) pixels to ``image``
    pixels: ``image.size ≈ size * scale`` (below 1 when JPEG DCT scaling was used)."""

    image: Image.Image
    size: tuple[int, int]  # upright original size
    scale: float
    exif: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    orientation: int = 1
    format: str = ""


def _json_safe(value: Any) -> Any:
    if isinstance(value, bytes):
        text = value.decode("ascii", "ignore").strip("\x00 ").strip()
        return text or None
    if isinstance(value, str):
        return value.strip("\x00 ").strip() or None
    if isinstance(value, (tuple, list)):
        items = [_json_safe(v) for v in value]
        return items[0] if len(items) == 1 else items
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    try:  # IFDRational and friends
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) else None


def read_exif(image: Image.Image) -> tuple[dict[str, Any], int]:
    """The fields captioners use, and the orientation tag (1 when absent or nonsense)."""
    try:
        exif = image.getexif()
    except Exception:  # a corrupt EXIF block must not cost the photo
        return {}, 1
    out: dict[str, Any] = {}
    for tag, name in _IFD0_TAGS.items():
        if tag in exif:
            out[name] = _json_safe(exif[tag])
    try:
        sub = exif.get_ifd(ExifTags.IFD.Exif)
    except Exception:
        sub = {}
    for tag, name in _EXIF_TAGS.items():
        if tag in sub:
            out[name] = _json_safe(sub[tag])
    orientation = exif.get(274, 1)
    try:
        orientation = int(orientation)
    except (TypeError, ValueError):
        orientation = 1
    return {k: v for k, v in out.items() if v is not None}, orientation if orientation in range(1, 9) else 1


def _to_rgb(image: Image.Image, notes: list[str]) -> Image.Image:
    """Any Pillow mode → 8-bit RGB, done right: 16-bit scaled (not clipped), alpha on grey,
    CMYK through its ICC profile when it has one."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        if mode == "F" or arr.max(initial=0) > 65535 or arr.min(initial=0) < 0:  # float / 32-bit: stretch
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            arr = (arr - lo) / (hi - lo or 1.0) * 255.0
        else:
            arr = arr / 257.0  # 16-bit → 8-bit: full range preserved
            notes.append("16-bit image scaled to 8 bits")
        grey = Image.fromarray(np.clip(np.nan_to_num(arr) + 0.5, 0, 255).astype(np.uint8), "L")
        return grey.convert("RGB")
    if mode == "CMYK":
        profile = image.info.get("icc_profile")
        if profile:
            try:
                src = ImageCms.ImageCmsProfile(io.BytesIO(profile))
                return ImageCms.profileToProfile(image, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
            except Exception:
                pass  # a broken profile: the plain conversion below is still close
        notes.append("CMYK converted to RGB")
        return image.convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        if image.mode == "RGB":
            return image
    if mode in ("LA", "La", "PA", "RGBa") or image.mode in ("RGBA",):
        rgba = image.convert("RGBA")
        alpha = rgba.getchannel("A")
        if alpha.getextrema()[0] < 255:
            notes.append("transparency composited on neutral grey")
        background = Image.new("RGBA", rgba.size, NEUTRAL_GREY + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, YCbCr, LAB, HSV, RGBX …


def _sniff(path: Path) -> str:
    """Why a file Pillow cannot identify is not a photo, in words."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError:
        return ""
    if not head:
        return "empty file (0 bytes)"
    if path.suffix.lower() in HEIF_SUFFIXES or head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypmsf1"):
        if not HEIF_OK:
            return "HEIC/HEIF photo, but pillow-heif is not installed (pip install pillow-heif)"
        return "HEIC/HEIF file pillow-heif could not read"
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head)
    if printable > 0.9 * len(head):
        return "not an image: the file holds text"
    return "not an image Pillow can read (unknown format or corrupt header)"


def open_photo(path: Path, *, max_pixels: int, need_short_side: int | None) -> Opened:
    """Decode ``path`` upright as RGB. With ``need_short_side`` a JPEG is decoded at the
    smallest DCT scale whose short side is still at least that many pixels."""
    previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, max_pixels
    try:
        return _open(path, max_pixels, need_short_side)
    finally:
        Image.MAX_IMAGE_PIXELS = previous  # in-process runs must not change Pillow for everyone


def _open(path: Path, max_pixels: int, need_short_side: int | None) -> Opened:
    try:
        image = Image.open(path)
    except PermissionError:
        raise PhotoError("cannot read the file: permission denied (check its permissions)") from None
    except FileNotFoundError:
        raise PhotoError("file vanished or is a broken link") from None
    except Image.DecompressionBombError as exc:
        raise PhotoError(_bomb_reason(str(exc), max_pixels)) from None
    except UnidentifiedImageError:
        raise PhotoError(_sniff(path)) from None
    except OSError as exc:
        if exc.errno == 40:  # ELOOP
            raise PhotoError("symlink loop: the link points back at itself") from None
        raise PhotoError(f"cannot read the file: {exc.strerror or exc}") from None
    with image:
        return _decode(image, path, max_pixels, need_short_side)


def _bomb_reason(message: str, max_pixels: int) -> str:
    return (f"decompression-bomb guard: {message.split('could be')[0].strip().rstrip(',')}; "
            f"the limit is prep.max_pixels = {max_pixels:,} — raise it if you trust this file")


def _decode(image: Image.Image, path: Path, max_pixels: int, need: int | None) -> Opened:
    fmt = image.format or ""
    width, height = image.size
    if width * height > max_pixels:
        raise PhotoError(f"too many pixels: {width}x{height} = {width * height / 1e6:.0f} MP, above "
                         f"prep.max_pixels = {max_pixels:,} (decompression-bomb guard; raise it if you trust this file)")
    if width < 1 or height < 1:
        raise PhotoError(f"image has no pixels ({width}x{height})")
    exif, orientation = read_exif(image)
    notes: list[str] = []
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
        notes.append(f"first of {image.n_frames} frames")
    if need and fmt == "JPEG":
        short = min(width, height)
        factor = max(1.0, short / need)
        # draft keeps at least the requested size, so ask for the size at that factor
        image.draft(image.mode if image.mode in ("RGB", "L", "CMYK") else None,
                    (math.ceil(width / factor), math.ceil(height / factor)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
    except PermissionError:
        raise PhotoError("cannot read the file: permission denied (check its permissions)") from None
    except OSError as exc:
        text = str(exc)
        if "truncated" in text or "broken data stream" in text or "premature end" in text.lower():
            raise PhotoError(f"truncated {fmt or 'image'} file: the data ends early (copy it again from the camera)") from None
        raise PhotoError(f"corrupt {fmt or 'image'} data: {text}") from None
    except (SyntaxError, ValueError, EOFError) as exc:
        raise PhotoError(f"corrupt {fmt or 'image'} data: {exc}") from None
    scale = image.size[0] / width
    rgb = _to_rgb(image, notes)
    for op in _TRANSPOSE.get(orientation, []):
        rgb = rgb.transpose(op)
    if orientation != 1:
        notes.append(f"EXIF orientation {orientation} applied")
    upright = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    return Opened(image=rgb, size=upright, scale=scale, exif=exif, notes=notes, orientation=orientation, format=fmt)


