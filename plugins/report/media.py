"""Pictures for the report, embedded as data URIs so the file opens from disk with no
server: downscaled thumbnails, crop boxes drawn on originals, latent channels as grey
images, and matplotlib charts."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from clood_candy_plugins.report.page import esc

ROTATING = {5, 6, 7, 8}  # EXIF orientations that swap width and height
SMALL = 160  # below this, an image is sent as PNG at its own size and enlarged by CSS


def data_uri(image: Image.Image, max_side: int = 320, quality: int = 80) -> str:
    """A downscaled copy as a data URI: JPEG for photos, PNG for small or generated images
    (a 64 px sample must stay sharp, not blur into JPEG blocks)."""
    picture = image.convert("RGB")
    if max(picture.size) > max_side:
        picture = picture.copy()
        picture.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if max(picture.size) <= SMALL:
        picture.save(buffer, format="PNG", optimize=True)
        kind = "png"
    else:
        picture.save(buffer, format="JPEG", quality=quality, optimize=True)
        kind = "jpeg"
    return f"data:image/{kind};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def img(image: Image.Image, alt: str, *, max_side: int = 320, cls: str = "") -> str:
    classes = cls + (" pixel" if max(image.size) <= SMALL else "")
    return f'<img src="{data_uri(image, max_side)}" alt="{esc(alt)}" class="{classes.strip()}">'


def image_cell(path: Path | None, alt: str, cls: str = "mid") -> str:
    """A grid cell: the image at ``path``, or a dash where it is missing."""
    if path is None or not path.is_file():
        return "—"
    with Image.open(path) as handle:
        return img(handle.convert("RGB"), alt, cls=cls)


def png_bytes_uri(data: bytes) -> str:
    return f"data:image/png;base64,{base64.b64encode(data).decode('ascii')}"


def open_thumbnail(path: Path, max_side: int = 320) -> tuple[Image.Image, tuple[int, int]]:
    """(an upright thumbnail, the upright original's full size). JPEG draft mode decodes a
    12-megapixel phone photo at 1/8 scale, so a contact sheet of many stays fast."""
    with Image.open(path) as handle:
        width, height = handle.size
        orientation = handle.getexif().get(0x0112, 1)
        handle.draft("RGB", (max_side * 2, max_side * 2))
        picture = ImageOps.exif_transpose(handle.convert("RGB") if handle.mode not in ("RGB", "L") else handle)
        picture = picture.convert("RGB")
    full = (height, width) if orientation in ROTATING else (width, height)
    picture.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return picture, full


def draw_box(thumb: Image.Image, full: tuple[int, int], box: list[int], colour=(255, 120, 0)) -> Image.Image:
    """The crop box (in the upright original's pixels) drawn on its thumbnail, the area
    outside it dimmed: what training will see, and what it will never see."""
    sx, sy = thumb.width / full[0], thumb.height / full[1]
    x0, y0, x1, y1 = box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy
    shade = Image.new("L", thumb.size, 110)
    ImageDraw.Draw(shade).rectangle([x0, y0, x1, y1], fill=0)
    out = Image.composite(Image.new("RGB", thumb.size, (0, 0, 0)), thumb, shade)
    width = max(2, round(min(thumb.size) / 90))
    ImageDraw.Draw(out).rectangle([x0, y0, x1 - 1, y1 - 1], outline=colour, width=width)
    return out


def channel_image(channel: np.ndarray, side: int) -> Image.Image:
    """One latent channel as a grey picture: its own darkest value black, brightest white."""
    lo, hi = float(channel.min()), float(channel.max())
    scaled = np.zeros_like(channel) if hi - lo < 1e-12 else (channel - lo) / (hi - lo)
    grey = Image.fromarray((scaled * 255).round().astype(np.uint8), mode="L")
    # Nearest-neighbour: each latent cell stays a visible square, which is the point.
    return grey.resize((side, side * channel.shape[0] // channel.shape[1]), Image.Resampling.NEAREST)


def chart_figure(width: float = 7.0, height: float = 3.4):
    """A matplotlib Figure drawn by the Agg renderer, without pyplot: no display, no
    global state, nothing left open in a long-lived process."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def chart_uri(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return png_bytes_uri(buffer.getvalue())
