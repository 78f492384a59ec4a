"""Choosing the crop: a square that keeps every candy whole with a margin, sized so the
subject fills about ``target_fill`` of it, or (``prep.buckets``) a box of the nearest aspect
bucket's ratio (clood_candy.buckets); high-quality resampling.

All boxes are [x0, y0, x1, y1] (x1/y1 exclusive) in pixels of the upright original."""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

from clood_candy.buckets import nearest_bucket


@dataclass
class Framing:
    box: list[int]
    out_size: tuple[int, int]
    note: str
    fill: float | None = None  # subject's longer side / crop side
    cut: int = 0  # candies (separate subject pieces) the crop cuts through
    left_out: int = 0  # candies wholly outside the crop


def _clamp(start: float, length: int, limit: int) -> int:
    return int(round(min(max(start, 0.0), limit - length)))


def _overlap_stats(lo: int, side: int, pieces: list[tuple[int, int]]) -> tuple[int, int, int]:
    """(cut, left out, kept length) for a crop [lo, lo+side) along one axis."""
    cut = out = kept = 0
    hi = lo + side
    for a0, a1 in pieces:
        if a0 >= lo and a1 <= hi:
            kept += a1 - a0
        elif a1 <= lo or a0 >= hi:
            out += 1
        else:
            cut += 1
    return cut, out, kept


def _best_position(length: int, side: int, pieces: list[tuple[int, int]], centre: float) -> tuple[int, int, int]:
    """Slide a crop of ``side`` along an axis of ``length``: fewest candies cut, then the
    most subject kept, then closest to the subject's centre. Only positions where a crop
    edge meets a candy's edge can be optimal, so those are the candidates."""
    limit = length - side
    starts = {_clamp(centre - side / 2, side, length), 0, limit}
    for a0, a1 in pieces:
        for s in (a0, a1, a0 - side, a1 - side):
            starts.add(_clamp(s, side, length))
    best = None
    for s in sorted(starts):
        cut, out, kept = _overlap_stats(s, side, pieces)
        key = (cut, -kept, abs(s + side / 2 - centre))
        if best is None or key < best[0]:
            best = (key, s, cut, out)
    assert best is not None
    return best[1], best[2], best[3]


def square_crop(size: tuple[int, int], pieces: list[list[int]], target_fill: float, min_side: int) -> Framing:
    """The square crop around ``pieces`` (subject boxes, original pixels). ``min_side``: do not
    crop tighter than this (it would only be upscaled again)."""
    width, height = size
    short = min(width, height)
    if not pieces:
        side = short
        return Framing([(width - side) // 2, (height - side) // 2, (width - side) // 2 + side, (height - side) // 2 + side],
                       (side, side), "centre crop")
    x0 = min(p[0] for p in pieces)
    y0 = min(p[1] for p in pieces)
    x1 = max(p[2] for p in pieces)
    y1 = max(p[3] for p in pieces)
    span = max(x1 - x0, y1 - y0)
    side = int(math.ceil(max(span / target_fill, min(min_side, short), 8)))
    side = min(side, short)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if x1 - x0 <= side and y1 - y0 <= side:
        bx, by = _clamp(cx - side / 2, side, width), _clamp(cy - side / 2, side, height)
        fill = span / side
        note = f"subject crop, fill {fill:.0%}" + ("" if fill <= target_fill + 0.02 else " (as loose as the photo allows)")
        return Framing([bx, by, bx + side, by + side], (side, side), note, fill=fill)
    # The subject is wider (or taller) than the photo's short side: some candy must go.
    if width >= height:
        bx, cut, out = _best_position(width, side, [(p[0], p[2]) for p in pieces], cx)
        box = [bx, 0, bx + side, side]
    else:
        by, cut, out = _best_position(height, side, [(p[1], p[3]) for p in pieces], cy)
        box = [0, by, side, by + side]
    parts = []
    if cut:
        parts.append(f"cuts {cut} candy piece{'s' * (cut > 1)}")
    if out:
        parts.append(f"leaves {out} out")
    note = "subject wider than the square: " + (" and ".join(parts) if parts else "keeps every candy whole")
    return Framing(box, (side, side), note, fill=1.0, cut=cut, left_out=out)


def centre_crop(size: tuple[int, int]) -> Framing:
    return square_crop(size, [], 1.0, 0)


def bucket_crop(size: tuple[int, int], pieces: list[list[int]], target_fill: float, resolution: int) -> Framing:
    """A box of the nearest bucket's aspect ratio, out size the bucket. With subject
    ``pieces``: sized so the subject fills about ``target_fill`` of it (never smaller
    than the bucket, which would only be upscaled again), placed to keep candies whole.
    Without: the largest such box, centred: the whole photo but the sliver the ratio needs."""
    width, height = size
    bw, bh = nearest_bucket(size, resolution)
    aspect = bw / bh
    full_w, full_h = (width, round(width / aspect)) if width / height <= aspect else (round(height * aspect), height)
    full_w, full_h = min(full_w, width), min(full_h, height)
    if not pieces:
        bx, by = (width - full_w) // 2, (height - full_h) // 2
        return Framing([bx, by, bx + full_w, by + full_h], (bw, bh), f"bucket {bw}x{bh}, whole frame")
    x0, y0 = min(p[0] for p in pieces), min(p[1] for p in pieces)
    x1, y1 = max(p[2] for p in pieces), max(p[3] for p in pieces)
    sw, sh = x1 - x0, y1 - y0
    box_w = min(max(sw / target_fill, sh / target_fill * aspect, min(bw, full_w), 8), full_w)
    cw = int(round(box_w))
    ch = min(full_h, int(round(cw / aspect)))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if sw <= cw and sh <= ch:
        bx, by = _clamp(cx - cw / 2, cw, width), _clamp(cy - ch / 2, ch, height)
        fill = max(sw / cw, sh / ch)
        note = f"bucket {bw}x{bh}, subject crop, fill {fill:.0%}" + (
            "" if fill <= target_fill + 0.02 else " (as loose as the photo allows)")
        return Framing([bx, by, bx + cw, by + ch], (bw, bh), note, fill=fill)
    # The subject is wider (or taller) than the largest box of this ratio: some candy must go.
    cut = out = 0
    if sw > cw:
        bx, cut_x, out_x = _best_position(width, cw, [(p[0], p[2]) for p in pieces], cx)
        cut, out = cut + cut_x, out + out_x
    else:
        bx = _clamp(cx - cw / 2, cw, width)
    if sh > ch:
        by, cut_y, out_y = _best_position(height, ch, [(p[1], p[3]) for p in pieces], cy)
        cut, out = cut + cut_y, out + out_y
    else:
        by = _clamp(cy - ch / 2, ch, height)
    parts = ([f"cuts {cut} candy piece{'s' * (cut > 1)}"] if cut else []) + ([f"leaves {out} out"] if out else [])
    note = f"bucket {bw}x{bh}, subject larger than the frame: " + (" and ".join(parts) or "keeps every candy whole")
    return Framing([bx, by, bx + cw, by + ch], (bw, bh), note, fill=1.0, cut=cut, left_out=out)


def no_crop(size: tuple[int, int], resolution: int) -> Framing:
    """Whole frame, short side at the resolution (never upscaled beyond it)."""
    width, height = size
    scale = resolution / min(width, height)
    return Framing([0, 0, width, height], (max(1, round(width * scale)), max(1, round(height * scale))), "whole frame")


def resample(image: Image.Image, box: list[int], scale: float, out_size: tuple[int, int]) -> Image.Image:
    """Crop ``box`` (original pixels) out of ``image`` (decoded at ``scale``) and resize it to
    ``out_size``: integer reduce first, then LANCZOS (Pillow's ``reducing_gap``)."""
    scaled = tuple(v * scale for v in box)
    scaled = (max(0.0, scaled[0]), max(0.0, scaled[1]), min(float(image.width), scaled[2]), min(float(image.height), scaled[3]))
    return image.resize(out_size, Image.Resampling.LANCZOS, box=scaled, reducing_gap=3.0)


def check_box(size: tuple[int, int], box: list[int], resolution: int, buckets: bool,
              min_side_ratio: float) -> str | None:
    """Why a crop box given by hand (clood review) cannot be prepared, or None: it must lie
    inside the upright photo, be square unless prep.buckets (every photo then trains as a
    square), and be no smaller than prep accepts a photo (prep.min_side_ratio × the
    resolution, or the photo's short side when that is smaller: it is all there is)."""
    width, height = size
    if len(box) != 4:
        return "a crop box is four numbers: x0, y0, x1, y1"
    x0, y0, x1, y1 = box
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        return (f"the crop box {x0}, {y0}, {x1}, {y1} is not inside the {width}x{height} photo "
                f"(0 ≤ x0 < x1 ≤ {width} and 0 ≤ y0 < y1 ≤ {height}, in pixels of the upright original)")
    w, h = x1 - x0, y1 - y0
    if not buckets and w != h:
        return f"the crop box is {w}x{h}: it must be square, since prep.buckets is off and every photo trains square"
    need = max(8, min(math.ceil(min_side_ratio * resolution), width, height))
    if min(w, h) < need:
        return (f"the crop box is {w}x{h}: its short side must be at least {need} px (prep.min_side_ratio "
                f"{min_side_ratio} × resolution {resolution}); a smaller crop would only be blown up")
    return None


def given_box(size: tuple[int, int], box: list[int], resolution: int, buckets: bool) -> Framing:
    """A hand-set crop box (checked by :func:`check_box`) as prep frames it: the square at the
    resolution, or with buckets its nearest bucket, the box trimmed about its centre to that
    bucket's exact ratio (as :func:`bucket_crop` trims the whole frame) so nothing is stretched."""
    x0, y0, x1, y1 = box
    if not buckets:
        return Framing(list(box), (resolution, resolution), "your crop box")
    bw, bh = nearest_bucket((x1 - x0, y1 - y0), resolution)
    aspect = bw / bh
    w, h = x1 - x0, y1 - y0
    tw, th = (min(w, round(h * aspect)), h) if w / h > aspect else (w, min(h, round(w / aspect)))
    tx, ty = x0 + (w - tw) // 2, y0 + (h - th) // 2
    trimmed = [tx, ty, tx + tw, ty + th]
    note = f"your crop box, bucket {bw}x{bh}" + ("" if trimmed == list(box) else
                                                  f" (trimmed to its ratio: {', '.join(map(str, trimmed))})")
    return Framing(trimmed, (bw, bh), note)
