"""One photo, start to finish, in a worker process: decode once (JPEG DCT-scaled), find the
subject, frame, measure, hash, and write the PNG when it is kept. Never raises: every
problem becomes the photo's verdict."""

from __future__ import annotations

import math
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clood_candy_plugins.prep import dedup, framing, quality
from clood_candy_plugins.prep.decode import Opened, PhotoError, open_photo
from clood_candy_plugins.prep.subject import Subject, find_subject

ANALYSIS_SIDE = 384  # subject search and exposure (long side, pixels)
HASH_GREY_SIDE = 256  # grey thumbnail kept for duplicate verification
PNG_LEVEL = 1  # zlib effort: level 6 is 3x slower for 20 % smaller files


@dataclass
class Job:
    index: int
    rel: str
    path: str
    out_path: str
    resolution: int
    crop: str = "subject"
    target_fill: float = 0.75
    buckets: bool = False
    min_sharpness: float = 0.35
    max_clipped: float = 0.25
    min_side_ratio: float = 0.5
    keep_all: bool = False
    max_pixels: int = 178_956_970
    upscaler: bool = False  # an upscaler plugin will enlarge the photos smaller than their output
    installed_upscalers: tuple[str, ...] = ()  # the upscaler plugins a user could name, for the advice
    box: list[int] | None = None  # a crop box set by hand (clood review) instead of prep's own


def upscaler_advice(job: Job) -> str:
    """"set prep.upscaler = "realesrgan"": the fix, naming an installed upscaler when there is one."""
    if job.installed_upscalers:
        return f'set prep.upscaler = "{job.installed_upscalers[0]}"' + (
            f" (installed: {', '.join(job.installed_upscalers)})" if len(job.installed_upscalers) > 1 else "")
    return "set prep.upscaler to an upscaler plugin"


@dataclass
class Result:
    index: int
    rel: str
    failed: str | None = None
    size: tuple[int, int] = (0, 0)
    exif: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    box: list[int] | None = None
    out_size: tuple[int, int] = (0, 0)
    metrics: dict[str, float] = field(default_factory=dict)
    culls: list[str] = field(default_factory=list)
    too_small: bool = False
    enlarge: bool = False  # the crop is smaller than the output: a plain resize would spread its pixels
    upscaled: dict[str, Any] | None = None  # by, factor, detail: what an upscaler plugin did
    hashes: np.ndarray | None = None
    grey: np.ndarray | None = None
    colours: np.ndarray | None = None
    written: bool = False
    file_bytes: int = 0


def _subject_pieces(subject: Subject, size: tuple[int, int], analysis: tuple[int, int]) -> list[list[int]]:
    """Subject boxes in original pixels, grown by one analysis pixel (rounding never cuts)."""
    fx, fy = size[0] / analysis[0], size[1] / analysis[1]
    return [[max(0, math.floor((b[0] - 1) * fx)), max(0, math.floor((b[1] - 1) * fy)),
             min(size[0], math.ceil((b[2] + 1) * fx)), min(size[1], math.ceil((b[3] + 1) * fy))] for b in subject.boxes]


def _sharpness_region(box: list[int], pieces: list[list[int]]) -> list[int]:
    """Where to judge focus: the subject with a 10 % margin (a sharp candy on a soft
    background is in focus), inside the crop; the whole crop when no subject was found."""
    if not pieces:
        return box
    x0, y0 = min(p[0] for p in pieces), min(p[1] for p in pieces)
    x1, y1 = max(p[2] for p in pieces), max(p[3] for p in pieces)
    mx, my = 0.1 * (x1 - x0) + 2, 0.1 * (y1 - y0) + 2
    region = [max(box[0], int(x0 - mx)), max(box[1], int(y0 - my)), min(box[2], int(x1 + mx)), min(box[3], int(y1 + my))]
    return region if region[2] - region[0] >= 24 and region[3] - region[1] >= 24 else box


def _frame(job: Job, size: tuple[int, int], pieces: list[list[int]], subject: Subject) -> framing.Framing:
    if job.buckets:
        # The photo keeps its aspect: a subject crop of the nearest bucket's ratio, or
        # (center, none, no subject found) the whole frame but the sliver that ratio needs.
        frame = framing.bucket_crop(size, pieces if job.crop == "subject" else [], job.target_fill, job.resolution)
        if job.crop == "subject" and not pieces:
            frame.note = f"{subject.note or 'no subject found'}: {frame.note}"
        return frame
    if job.crop == "none":
        return framing.no_crop(size, job.resolution)
    if job.crop == "center":
        frame = framing.centre_crop(size)
    elif not pieces:
        frame = framing.centre_crop(size)
        frame.note = f"{subject.note or 'no subject found'}: centre crop"
    else:
        frame = framing.square_crop(size, pieces, job.target_fill, job.resolution)
    frame.out_size = (job.resolution, job.resolution)
    return frame


def _exposure(result: Result, job: Job, analysis: np.ndarray, box_a: list[int], subject: Subject) -> None:
    region = analysis[box_a[1]:box_a[3], box_a[0]:box_a[2]]
    white, black = quality.clipped_shares(region)
    result.metrics.update(clipped=round(white + black, 4), blown=round(white, 4), crushed=round(black, 4))
    level = quality.exposure_level(region)
    if level:
        result.culls.append(level)
        return
    if white + black <= job.max_clipped:
        return
    mask = subject.mask[box_a[1]:box_a[3], box_a[0]:box_a[2]] if subject.found and subject.mask is not None else None
    if mask is not None and mask.any():
        s_white, s_black = quality.clipped_shares(region, mask, colour=True)
        if s_white + s_black <= job.max_clipped:
            # A blown white studio backdrop is a choice, not a fault, while the candy is fine.
            result.notes.append(f"background {'blown to white' if white >= black else 'crushed to black'} "
                                f"({white + black:.0%}), subject well exposed")
            return
    if white >= black:
        result.culls.append(f"overexposed: {white:.0%} of pixels blown to white (prep.max_clipped {job.max_clipped:.0%})")
    else:
        result.culls.append(f"underexposed: {black:.0%} of pixels crushed to black (prep.max_clipped {job.max_clipped:.0%})")


def _write(opened: Opened, job: Job, frame: framing.Framing, path: Path) -> Image.Image:
    side_decoded = min(frame.box[2] - frame.box[0], frame.box[3] - frame.box[1]) * opened.scale
    if opened.scale < 1 and side_decoded < min(frame.out_size):
        # A tight crop of a DCT-scaled decode: go back for the pixels it needs.
        full = min(frame.box[2] - frame.box[0], frame.box[3] - frame.box[1])
        need = math.ceil(min(opened.size) * min(frame.out_size) / full)
        opened = open_photo(Path(job.path), max_pixels=job.max_pixels, need_short_side=need)
    out = framing.resample(opened.image, frame.box, opened.scale, frame.out_size)
    tmp = path.with_name(f".{path.name}.tmp")
    out.save(tmp, "PNG", compress_level=PNG_LEVEL)
    os.replace(tmp, path)
    return out


def analyse(job: Job) -> Result:
    result = Result(job.index, job.rel)
    try:
        _analyse(job, result)
    except PhotoError as exc:
        result.failed = str(exc)
    except MemoryError:
        result.failed = "not enough memory to decode this image"
    except Exception as exc:  # one strange file must never stop the run
        detail = traceback.format_exc(limit=-1).strip().splitlines()[-1]
        result.failed = f"unexpected error while preparing: {type(exc).__name__}: {exc} ({detail})"
    return result


def _analyse(job: Job, result: Result) -> None:
    res = job.resolution
    opened = open_photo(Path(job.path), max_pixels=job.max_pixels, need_short_side=res)
    result.size, result.exif, result.notes = opened.size, opened.exif, list(opened.notes)
    result.file_bytes = os.path.getsize(job.path)
    width, height = opened.size
    analysis = opened.image.copy()
    analysis.thumbnail((ANALYSIS_SIDE, ANALYSIS_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0)
    rgb = np.asarray(analysis)
    subject = find_subject(rgb)  # also for centre crops: exposure is judged on the subject
    pieces = _subject_pieces(subject, opened.size, analysis.size) if subject.found else []
    if job.box is not None:
        problem = framing.check_box(opened.size, job.box, res, job.buckets, job.min_side_ratio)
        if problem:
            raise PhotoError(problem)
        frame = framing.given_box(opened.size, job.box, res, job.buckets)
    else:
        frame = _frame(job, opened.size, pieces, subject)
    result.box, result.out_size = frame.box, frame.out_size
    result.notes.append(frame.note)
    if subject.found:
        result.metrics["subjects"] = float(len(subject.boxes))
    if frame.fill is not None:
        result.metrics["subject_fill"] = round(frame.fill, 3)
    fx, fy = analysis.width / width, analysis.height / height
    box_a = [int(frame.box[0] * fx), int(frame.box[1] * fy), max(int(frame.box[0] * fx) + 1, math.ceil(frame.box[2] * fx)),
             max(int(frame.box[1] * fy) + 1, math.ceil(frame.box[3] * fy))]

    short = min(width, height)
    ratio = short / res
    result.metrics.update(short_side=float(short), side_ratio=round(ratio, 3))
    aspect = max(width, height) / short
    if ratio < job.min_side_ratio:
        result.too_small = True
        odd = f"; extreme {aspect:.0f}:1 aspect ratio" if aspect >= 4 else ""
        fix = "an upscaler will enlarge it" if job.upscaler else f"{upscaler_advice(job)}, or use larger photos"
        result.culls.append(f"too small: {short} px short side, needs {res} — {ratio:.2g}x "
                            f"(prep.min_side_ratio {job.min_side_ratio}){odd}; {fix}")

    region = _sharpness_region(frame.box, pieces)
    score, sigma = quality.sharpness(opened.image, [v * opened.scale for v in region])
    result.metrics["sharpness"] = round(score, 3)
    if not math.isnan(sigma):
        result.metrics["blur_px"] = round(sigma, 2)
    if math.isnan(sigma):
        result.notes.append("no clear edges to judge sharpness by")
    elif score < job.min_sharpness:
        result.culls.append(f"blurry: sharpness {score:.2f} < prep.min_sharpness {job.min_sharpness} "
                            f"(edges about {2 * sigma:.1f} px wide at {quality.MEASURE_SIDE} px)")
    _exposure(result, job, rgb, box_a, subject)

    grey = analysis.convert("L")
    grey.thumbnail((HASH_GREY_SIDE, HASH_GREY_SIDE), Image.Resampling.BILINEAR)
    result.hashes = dedup.view_hashes(grey)
    result.grey = np.asarray(grey)
    result.colours = dedup.colour_layout(rgb)

    crop_side = min(frame.box[2] - frame.box[0], frame.box[3] - frame.box[1])
    result.enlarge = crop_side < min(frame.out_size)
    # With an upscaler the main process writes these (the model runs there, once, not per worker).
    deferred = job.upscaler and (result.too_small or result.enlarge)
    if result.enlarge and not result.too_small and not deferred:
        result.notes.append(f"upscaled {min(frame.out_size) / crop_side:.1f}x (LANCZOS; {upscaler_advice(job)} "
                            "for real detail)")
    if (not result.culls or job.keep_all) and not deferred:
        _write(opened, job, frame, Path(job.out_path))
        result.written = True
