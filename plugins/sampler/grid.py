"""Labelled contact grids of sample images: a title, column labels on top, row labels on
the left, so a grid read on its own (outside the report) still says what each cell is."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

MIN_CELL = 128  # toy models make 64 px images; smaller cells are too small to judge
PAD = 6
BACKGROUND = (255, 255, 255)
INK = (30, 30, 30)
MISSING = (235, 235, 235)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType: the bitmap font has one size
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """Shorten ``text`` with an ellipsis until it fits ``width`` pixels."""
    if _text_size(draw, text, font)[0] <= width:
        return text
    while text and _text_size(draw, text + "…", font)[0] > width:
        text = text[:-1]
    return text + "…"


def labelled_grid(cells: list[list[Image.Image | None]], row_labels: list[str], col_labels: list[str],
                  title: str = "") -> Image.Image:
    """One image of ``cells[row][col]``; a ``None`` cell (an image that failed) is grey
    with the word "failed" so a gap is never mistaken for a black sample."""
    if not cells or not cells[0]:
        raise ValueError("a grid needs at least one cell")
    first = next((c for row in cells for c in row if c is not None), None)
    scale = max(1.0, MIN_CELL / min(first.size)) if first else 1.0
    cw, ch = (round(first.width * scale), round(first.height * scale)) if first else (MIN_CELL, MIN_CELL)
    font, title_font = _font(13), _font(15)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = min(220, max((_text_size(probe, r, font)[0] for r in row_labels), default=0) + 2 * PAD)
    line_h = _text_size(probe, "Ag", font)[1] + 2 * PAD
    title_h = (_text_size(probe, "Ag", title_font)[1] + 2 * PAD) if title else 0
    cols, rows = len(col_labels), len(row_labels)
    width = label_w + cols * (cw + PAD) + PAD
    height = title_h + line_h + rows * (ch + PAD) + PAD
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((PAD, PAD), _fit(draw, title, title_font, width - 2 * PAD), fill=INK, font=title_font)
    top = title_h + line_h
    for c, label in enumerate(col_labels):
        x = label_w + c * (cw + PAD)
        text = _fit(draw, label, font, cw)
        tw = _text_size(draw, text, font)[0]
        draw.text((x + (cw - tw) // 2, title_h + PAD), text, fill=INK, font=font)
    for r, label in enumerate(row_labels):
        y = top + r * (ch + PAD)
        draw.text((PAD, y + ch // 2 - line_h // 2 + PAD), _fit(draw, label, font, label_w - 2 * PAD),
                  fill=INK, font=font)
        for c in range(cols):
            x = label_w + c * (cw + PAD)
            image = cells[r][c] if c < len(cells[r]) else None
            if image is None:
                draw.rectangle([x, y, x + cw - 1, y + ch - 1], fill=MISSING)
                tw, th = _text_size(draw, "failed", font)
                draw.text((x + (cw - tw) // 2, y + (ch - th) // 2), "failed", fill=INK, font=font)
                continue
            # Nearest-neighbour: enlarging a small sample must not invent smooth detail.
            resample = Image.Resampling.NEAREST if image.width < cw else Image.Resampling.LANCZOS
            sheet.paste(image.convert("RGB").resize((cw, ch), resample), (x, y))
    return sheet
