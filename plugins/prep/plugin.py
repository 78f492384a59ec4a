"""The built-in preparer: a photo folder (or .zip) in, a clean, well-framed set out (square,
or each photo at its aspect bucket with ``prep.buckets``),
with a verdict and a reason for every file."""

from __future__ import annotations

import math
import multiprocessing
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from clood_candy.errors import UserError
from clood_candy.hookspecs import hookimpl
from clood_candy.plan.records import SourceSurvey
from clood_candy.records import Photo, PrepEntry, PrepReport
from clood_candy.stages import Preparer, Upscaler
from clood_candy_plugins.prep import dedup
from clood_candy_plugins.prep.decode import open_photo
from clood_candy_plugins.prep.sources import Listing, list_source, unique_ids, why_no_images
from clood_candy_plugins.prep.worker import PNG_LEVEL, Job, Result, analyse

if TYPE_CHECKING:
    from clood_candy.config import PrepSettings
    from clood_candy.context import StageContext


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _pool_context():
    # fork starts workers in milliseconds; they only use Pillow/numpy/scipy, never torch.
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def run_jobs(jobs: list[Job], workers: int, advance: Callable[..., None]) -> Iterator[Result]:
    """Analyse every job, in a process pool when it pays. A worker that dies (a decoder
    crash, the OOM killer) costs only its own photo."""
    if workers <= 1 or len(jobs) <= 2:
        for job in jobs:
            yield analyse(job)
            advance()
        return
    pending = {job.index: job for job in jobs}
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=_pool_context()) as pool:
            futures = {pool.submit(analyse, job): job.index for job in jobs}
            for future in as_completed(futures):
                result = future.result()
                pending.pop(result.index, None)
                advance()
                yield result
    except BrokenProcessPool:
        for job in list(pending.values()):  # one at a time, to find the file that kills workers
            try:
                with ProcessPoolExecutor(max_workers=1, mp_context=_pool_context()) as solo:
                    result = solo.submit(analyse, job).result()
            except BrokenProcessPool:
                result = Result(job.index, job.rel, failed="the image decoder crashed on this file (corrupt or hostile data)")
            advance()
            yield result


class DefaultPreparer(Preparer):
    name = "default"

    def check_source(self, source: Path) -> str | None:
        return why_no_images(Path(source).expanduser())

    def survey(self, source: Path) -> SourceSurvey:
        from clood_candy_plugins.prep.survey import survey

        return survey(Path(source))

    def prepare(self, source: Path, out_dir: Path, settings: "PrepSettings", ctx: "StageContext") -> PrepReport:
        source = Path(source).expanduser()
        if not source.exists():
            raise UserError(f"photo source not found: {source}")
        resolution = settings.resolution or ctx.base().resolution
        upscaler: Upscaler | None = ctx.registry.get("upscaler", settings.upscaler) if settings.upscaler else None
        out_dir = Path(out_dir)
        images = out_dir / "images"
        if images.exists():
            shutil.rmtree(images)  # a re-run must not leave last time's photos behind
        images.mkdir(parents=True)
        listing = list_source(source, out_dir / "source")
        candidates = [f for f in listing.files if f.problem is None and f.culled is None]
        ids = unique_ids([f.rel for f in candidates])
        jobs = [Job(index=i, rel=f.rel, path=str(f.path), out_path=str(images / f"{ids[f.rel]}.png"), resolution=resolution,
                    crop=settings.crop, target_fill=settings.target_fill, buckets=settings.buckets,
                    min_sharpness=settings.min_sharpness, max_clipped=settings.max_clipped,
                    min_side_ratio=settings.min_side_ratio, keep_all=settings.keep_all, max_pixels=settings.max_pixels,
                    upscaler=upscaler is not None)
                for i, f in enumerate(candidates)]
        results: dict[int, Result] = {}
        with ctx.progress.task("Preparing photos", total=len(jobs)) as advance:
            for result in run_jobs(jobs, settings.workers or available_cores(), advance):
                results[result.index] = result
        duplicates = mark_duplicates([results[j.index] for j in jobs], settings.duplicate_distance)
        if upscaler is not None:
            for job in jobs:
                _upscale(job, results[job.index], upscaler, settings.keep_all)
        return _report(listing, jobs, results, duplicates, ids, images, settings.keep_all, ctx)


def mark_duplicates(results: list[Result], max_distance: float) -> dict[int, str]:
    """Cull all but the best of each near-duplicate group; returns index → kept photo's path."""
    usable = [r for r in results if r.failed is None and r.hashes is not None and r.colours is not None]
    matches = dedup.find_duplicates([r.hashes for r in usable], [r.grey for r in usable], [r.colours for r in usable],
                                    max_distance)
    best_match: dict[int, dedup.Match] = {}
    for m in matches:
        for k in (m.a, m.b):
            if k not in best_match or m.distance < best_match[k].distance:
                best_match[k] = m
    out: dict[int, str] = {}
    for group in dedup.group(len(usable), matches):
        members = [usable[k] for k in group]
        biggest = max(r.size[0] * r.size[1] for r in members)
        # Keep the one that is usable, then full size, then visibly sharpest (blur in steps
        # of 0.3 px: finer differences are JPEG noise), then the least compressed, then largest.
        best = max(members, key=lambda r: (not r.culls, r.size[0] * r.size[1] >= 0.9 * biggest,
                                           r.metrics.get("sharpness", 0.0) >= 0.99,
                                           -round(r.metrics.get("blur_px", 99.0) / 0.3),
                                           r.file_bytes / max(1, r.size[0] * r.size[1]),
                                           r.size[0] * r.size[1], -r.index))
        for k in group:
            r = usable[k]
            if r is best:
                continue
            m = best_match[k]
            r.culls.append(f"near-duplicate of {best.rel} (hash distance {m.distance:.1f}, detail match {m.detail:.2f}); "
                           f"kept the {'sharper' if r.size == best.size else 'larger or sharper'} one")
            out[r.index] = best.rel
    return out


def _upscale(job: Job, result: Result, upscaler: Upscaler, keep_all: bool) -> None:
    """Photos too small for the resolution, enlarged by the configured upscaler plugin."""
    if result.failed or not result.too_small or result.box is None:
        return
    others = [c for c in result.culls if not c.startswith("too small")]
    if others and not keep_all:
        return
    try:
        opened = open_photo(Path(job.path), max_pixels=job.max_pixels, need_short_side=None)
        region = opened.image.crop(tuple(result.box))
        factor = max(2, math.ceil(min(result.out_size) / max(1, min(region.size))))
        big = upscaler.upscale(region, factor)
        out = big.convert("RGB").resize(result.out_size, Image.Resampling.LANCZOS, reducing_gap=3.0)
        out.save(job.out_path, "PNG", compress_level=PNG_LEVEL)
    except Exception as exc:  # a failing plugin (or file) costs this photo, not the run
        result.culls = [c if not c.startswith("too small") else f"{c} (upscaler {upscaler.name} failed: {exc})" for c in result.culls]
        return
    result.culls = others
    result.too_small = False
    result.written = True
    result.notes.append(f"upscaled {factor}x with {upscaler.name}")


def _report(listing: Listing, jobs: list[Job], results: dict[int, Result], duplicates: dict[int, str],
            ids: dict[str, str], images: Path, keep_all: bool, ctx: "StageContext") -> PrepReport:
    by_rel = {job.rel: job for job in jobs}
    entries: list[PrepEntry] = []
    photos: list[Photo] = []
    for found in listing.files:
        if found.problem is not None:
            entries.append(PrepEntry(source=found.rel, status="failed", reason=found.problem))
            continue
        if found.culled is not None:
            entries.append(PrepEntry(source=found.rel, status="culled", reason=found.culled))
            continue
        job = by_rel[found.rel]
        result = results[job.index]
        if result.failed is not None:
            entries.append(PrepEntry(source=found.rel, status="failed", reason=result.failed))
            continue
        png = Path(job.out_path)
        kept = (keep_all or not result.culls) and result.written
        if not kept:
            png.unlink(missing_ok=True)
            entries.append(PrepEntry(source=found.rel, status="culled", reason="; ".join(result.culls), crop_box=result.box,
                                     duplicate_of=duplicates.get(job.index), metrics=result.metrics))
            continue
        reason = "; ".join(n for n in result.notes if n)
        if result.culls:
            reason = f"kept (prep.keep_all) although: {'; '.join(result.culls)} | {reason}"
        image = ctx.run.rel(png)
        entries.append(PrepEntry(source=found.rel, status="kept", reason=reason, crop_box=result.box, output=image,
                                 duplicate_of=duplicates.get(job.index), metrics=result.metrics))
        photos.append(Photo(id=ids[found.rel], source=found.rel, image=image, original=os.path.abspath(found.path),
                            width=result.out_size[0], height=result.out_size[1], crop_box=result.box,
                            original_size=result.size, exif=result.exif,
                            folders=found.folders, metrics=result.metrics, labels=listing.labels.get(found.rel)))
    return PrepReport(entries=entries, photos=photos)


@hookimpl
def register_preparers(register):
    register(DefaultPreparer())
