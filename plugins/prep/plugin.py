"""The built-in preparer: a photo folder (or .zip) in, a clean, well-framed set out (square,
or each photo at its aspect bucket with ``prep.buckets``),
with a verdict and a reason for every file."""

from __future__ import annotations

import math
import multiprocessing
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from PIL import Image

from clood_candy.errors import UserError
from clood_candy.hookspecs import hookimpl
from clood_candy.plan.records import SourceSurvey
from clood_candy.records import Photo, PrepEntry, PrepReport, Upscaled
from clood_candy.stages import Preparer, Upscaler
from clood_candy_plugins.prep import dedup, framing
from clood_candy_plugins.prep.decode import open_photo
from clood_candy_plugins.prep.sources import Listing, list_source, locate, read_labels, unique_ids, why_no_images
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
                    upscaler=upscaler is not None, installed_upscalers=tuple(ctx.registry.of("upscaler")))
                for i, f in enumerate(candidates)]
        results: dict[int, Result] = {}
        with ctx.progress.task("Preparing photos", total=len(jobs)) as advance:
            for result in run_jobs(jobs, settings.workers or available_cores(), advance):
                results[result.index] = result
        duplicates = mark_duplicates([results[j.index] for j in jobs], settings.duplicate_distance)
        if upscaler is not None:
            _enlarge(jobs, results, upscaler, settings.keep_all, ctx)
        report = _report(listing, jobs, results, duplicates, ids, images, settings.keep_all, ctx)
        report.resolution = resolution
        return report

    def prepare_one(self, source: Path, rel: str, out_dir: Path, settings: "PrepSettings", ctx: "StageContext", *,
                    resolution: int, photo_id: str | None = None, taken: Collection[str] = (),
                    box: list[int] | None = None) -> tuple[Photo, str]:
        """One photo through the same worker as ``prepare`` (decode, subject, framing,
        measures, the PNG) and the same upscaler step, kept whatever prep would say of it
        (as with prep.keep_all). The PNG is made in a scratch folder and moved into
        ``out_dir`` only once it is whole, so a refusal leaves nothing behind."""
        source = Path(source).expanduser()
        original = locate(source, rel, ctx.run.path("prep", "source"))
        if original is None:
            raise UserError(f"the original of {rel} is not in {source} any more")
        photo_id = photo_id or unique_ids([rel], taken)[rel]
        upscaler: Upscaler | None = ctx.registry.get("upscaler", settings.upscaler) if settings.upscaler else None
        with tempfile.TemporaryDirectory(dir=ctx.run.root, prefix=".prepare-") as scratch:
            job = Job(index=0, rel=rel, path=str(original), out_path=str(Path(scratch) / f"{photo_id}.png"),
                      resolution=resolution, crop=settings.crop, target_fill=settings.target_fill,
                      buckets=settings.buckets, min_sharpness=settings.min_sharpness,
                      max_clipped=settings.max_clipped, min_side_ratio=settings.min_side_ratio, keep_all=True,
                      max_pixels=settings.max_pixels, upscaler=upscaler is not None, box=box)
            result = analyse(job)
            if result.failed is None and upscaler is not None:
                _enlarge([job], {0: result}, upscaler, True, ctx)
            if result.failed is not None or not result.written:
                raise UserError(result.failed or "prep wrote no image for it")
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            png = Path(out_dir) / f"{photo_id}.png"
            os.replace(job.out_path, png)
        # Where list_source reads labels.json: the folder, or the unpacked zip; a single file has none.
        zipped = source.is_file() and source.suffix.lower() == ".zip"
        labels = {} if source.is_file() and not zipped else read_labels(ctx.run.path("prep", "source") if zipped
                                                                         else source)
        photo = photo_record(photo_id, rel, ctx.run.rel(png), original, result, labels.get(rel))
        said = "; ".join([*result.culls, *(n for n in result.notes if n)])
        return photo, said


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


def _enlarge(jobs: list[Job], results: dict[int, Result], upscaler: Upscaler, keep_all: bool,
             ctx: "StageContext") -> None:
    """The photos smaller than their output, enlarged by the configured upscaler plugin
    before the resize to the output size. An upscaler that cannot run is said once, in one
    line, and those photos get the plain resize (the too-small ones stay culled)."""
    todo = [job for job in jobs if _wants_upscale(results[job.index], keep_all)]
    if not todo:
        return
    try:  # asked only now: a set of large photos never loads (or downloads) a model
        why = upscaler.unavailable(ctx)
    except Exception as exc:  # a third-party upscaler's bug is one more reason, not a failed run
        why = f"{type(exc).__name__}: {exc}"
    if why:
        why = " ".join(str(why).split())  # one line, whatever the plugin said
        line = f"upscaler {upscaler.name} unavailable, prep goes on without it: {why}"
        ctx.log.warning(line)
        ctx.progress.say(line)
    with ctx.progress.task(f"Upscaling with {upscaler.name}", total=len(todo)) as advance:
        for job in todo:
            _upscale(job, results[job.index], None if why else upscaler, upscaler.name,
                     f"unavailable: {why}" if why else None, keep_all)
            advance()


def _wants_upscale(result: Result, keep_all: bool) -> bool:
    if result.failed or result.box is None or not (result.too_small or result.enlarge):
        return False
    others = [c for c in result.culls if not c.startswith("too small")]
    return not others or keep_all  # a photo culled for blur is not worth a model's time


def _upscale(job: Job, result: Result, upscaler: Upscaler | None, name: str, why: str | None, keep_all: bool) -> None:
    others = [c for c in result.culls if not c.startswith("too small")]
    assert result.box is not None
    opened = None
    try:
        opened = open_photo(Path(job.path), max_pixels=job.max_pixels, need_short_side=None)
        if upscaler is not None:
            region = opened.image.crop(tuple(result.box))
            factor = max(2, math.ceil(min(result.out_size) / max(1, min(region.size))))
            big = upscaler.upscale(region, factor)
            _save(big.convert("RGB").resize(result.out_size, Image.Resampling.LANCZOS, reducing_gap=3.0), job.out_path)
            result.culls, result.too_small, result.written = others, False, True
            detail = upscaler.describe()
            result.upscaled = {"by": upscaler.name, "factor": factor, "detail": detail}
            result.notes.append(f"upscaled {factor}x with {detail}")
            return
    except Exception as exc:  # a failing plugin (or file) costs this photo its upscaling, not the run
        why = f"failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    result.culls = [c if not c.startswith("too small") else f"{c} (upscaler {name} {why})" for c in result.culls]
    if opened is None:  # the worker read it, this process could not: say so rather than drop it silently
        if not result.culls:
            result.failed = f"could not reopen the photo to enlarge it ({why})"
        return
    if result.culls and not keep_all:
        return
    # Not too small, only smaller than the output: the plain resize it would have had without an upscaler.
    side = min(result.box[2] - result.box[0], result.box[3] - result.box[1])
    _save(framing.resample(opened.image, result.box, opened.scale, result.out_size), job.out_path)
    result.written = True
    if not result.too_small:
        result.notes.append(f"upscaled {min(result.out_size) / side:.1f}x (LANCZOS; upscaler {name} {why})")


def _save(image: Image.Image, out_path: str) -> None:
    tmp = Path(out_path).with_name(f".{Path(out_path).name}.tmp")
    image.save(tmp, "PNG", compress_level=PNG_LEVEL)
    os.replace(tmp, out_path)


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
        upscaled = Upscaled(**result.upscaled) if result.upscaled else None
        entries.append(PrepEntry(source=found.rel, status="kept", reason=reason, crop_box=result.box, output=image,
                                 duplicate_of=duplicates.get(job.index), metrics=result.metrics, upscaled=upscaled))
        photos.append(photo_record(ids[found.rel], found.rel, image, found.path, result, listing.labels.get(found.rel)))
    return PrepReport(entries=entries, photos=photos)


def photo_record(photo_id: str, rel: str, image: str, original: Path, result: Result,
                 labels: dict | None) -> Photo:
    """The record of a kept photo: what captioners, judges and the trainer read of it."""
    upscaled = Upscaled(**result.upscaled) if result.upscaled else None
    return Photo(id=photo_id, source=rel, image=image, original=os.path.abspath(original),
                 width=result.out_size[0], height=result.out_size[1], crop_box=result.box,
                 original_size=result.size, exif=result.exif, folders=list(PurePosixPath(rel).parts[:-1]),
                 metrics=result.metrics, labels=labels, upscaled=upscaled)


@hookimpl
def register_preparers(register):
    register(DefaultPreparer())
