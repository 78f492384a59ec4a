"""Benchmark the prep stage against a naive baseline, in the same run.

Full stage (culling and near-duplicate search included, the process pool, JPEG DCT scaling)
vs "open, exif_transpose, full decode, LANCZOS resize, save PNG" one photo after another.
Also measures the near-duplicate distances between the real photos and made copies
(re-encoded q70, 4 % crop, +15 % brightness) that the thresholds rest on.

    python bench/prep_bench.py --photos ../shared/photos/candy-table --repeat 3 --out results.json

Writes the results as JSON and adds (or updates) this machine's line in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import platform
import resource
import shlex
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CLOOD_LOAD_PLUGINS", "builtin")  # only this package's plugins: a bench must not depend on what else is installed

from PIL import Image, ImageEnhance, ImageOps  # noqa: E402

from clood_candy.config import load_config  # noqa: E402
from clood_candy.context import StageContext  # noqa: E402
from clood_candy.plugins import build_registry, load_plugins  # noqa: E402
from clood_candy.progress import Progress  # noqa: E402
from clood_candy.runstore import RunStore  # noqa: E402
from clood_candy_plugins.prep import dedup  # noqa: E402
from clood_candy_plugins.prep.plugin import available_cores  # noqa: E402
from clood_candy_plugins.prep.sources import IMAGE_SUFFIXES  # noqa: E402
from clood_candy_plugins.prep.worker import PNG_LEVEL, Job, analyse  # noqa: E402

SECTION_START = "<!-- prep-bench:start -->"
SECTION_END = "<!-- prep-bench:end -->"
HEADER = ("| date | machine | command | baseline s best / median | stage s best / median | stage/baseline best / median "
          "| stage images/s (best) | CPU s baseline / stage | load |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")


def photos_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def cpu_seconds() -> float:
    """CPU time of this process and its finished children: the work done, whatever else
    the machine is busy with."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def baseline(paths: list[Path], resolution: int, out: Path) -> tuple[float, int]:
    """The naive way: full decode, Pillow's orientation, one LANCZOS resize of the centre square."""
    done = 0
    start = time.perf_counter()
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as im:
                im = ImageOps.exif_transpose(im)
                im.load()
                w, h = im.size
                s = min(w, h)
                box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
                im.convert("RGB").resize((resolution, resolution), Image.Resampling.LANCZOS, box=box).save(
                    out / f"{i}.png", "PNG", compress_level=PNG_LEVEL)
                done += 1
        except Exception:  # the broken files cost the baseline nothing more than a failed open
            continue
    return time.perf_counter() - start, done


def stage(folder: Path, resolution: int, workers: int | None, run_dir: Path) -> tuple[float, dict]:
    config = load_config(None, {"prep": {"resolution": resolution, "workers": workers}})
    load_plugins()
    run = RunStore.create(run_dir, "bench", config.model_dump(mode="json"), None, demo=False)
    ctx = StageContext(run=run, config=config, registry=build_registry(), progress=Progress(quiet=True))
    preparer = ctx.registry.get("preparer", "default")
    start = time.perf_counter()
    report = preparer.prepare(folder, run.path("prep"), config.prep, ctx)
    seconds = time.perf_counter() - start
    counts = {s: sum(e.status == s for e in report.entries) for s in ("kept", "culled", "failed")}
    return seconds, counts


def _features(image: Image.Image, name: str, tmp: Path, resolution: int):
    path = tmp / f"{name}.png"
    image.save(path)
    result = analyse(Job(0, name, str(path), str(tmp / f"{name}-out.png"), resolution))
    return result


def dedup_distances(paths: list[Path], resolution: int) -> dict:
    """Hash distance and detail match for every pair of real photos, and for made copies."""
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        real = {}
        images = {}
        for path in paths:
            try:
                with Image.open(path) as im:
                    im.draft("RGB", (im.width // 2, im.height // 2))
                    images[path.name] = ImageOps.exif_transpose(im).convert("RGB")
            except Exception:
                continue
            real[path.name] = _features(images[path.name], path.stem, tmp, resolution)

        def measure(a, b) -> dict:
            distance, i, j = dedup.hash_distance(a.hashes, b.hashes)
            return {"hash_distance": distance, "detail_match": round(dedup.detail_match(a.grey, i, b.grey, j), 3),
                    "colour_change": round(dedup.colour_change(a.colours, b.colours), 3)}

        pairs = {f"{a} vs {b}": measure(real[a], real[b]) for a, b in itertools.combinations(sorted(real), 2)}
        copies = {}
        for name, im in images.items():
            w, h = im.size
            made = {"q70": Image.open(io.BytesIO(_jpeg(im, 70))).convert("RGB"),
                    "crop4": im.crop((int(0.04 * w), int(0.04 * h), w, h)),
                    "bright15": ImageEnhance.Brightness(im).enhance(1.15)}
            for kind, copy in made.items():
                copies[f"{name} {kind}"] = measure(real[name], _features(copy, f"{name}-{kind}", tmp, resolution))
    hd = [v["hash_distance"] for v in pairs.values()]
    dm = [v["detail_match"] for v in pairs.values()]
    return {"different_shots": pairs, "copies": copies,
            "summary": {"different_shots_min_hash_distance": min(hd, default=None),
                        "different_shots_max_detail_match": max(dm, default=None),
                        "copies_max_hash_distance": max((v["hash_distance"] for v in copies.values()), default=None),
                        "copies_min_detail_match": min((v["detail_match"] for v in copies.values()), default=None),
                        "thresholds": {"duplicate_distance": 6, "min_detail_match": dedup.MIN_DETAIL_MATCH}}}


def _jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {available_cores()} cores"


def record(benchmarks: Path, line_key: str, line: str) -> None:
    """Add or replace this machine+command's line inside the prep section of BENCHMARKS.md."""
    text = benchmarks.read_text(encoding="utf-8") if benchmarks.exists() else "# Benchmarks\n"
    if SECTION_START not in text:
        text = text.rstrip("\n") + (
            "\n\n## Prep stage (`bench/prep_bench.py`)\n\n"
            "Full prep stage (decode with JPEG DCT scaling, subject search, blur/exposure/size culling, "
            "near-duplicate search, framing, LANCZOS resample, PNG) against a naive sequential "
            "baseline (open, exif_transpose, full decode, LANCZOS resize of the centre square, PNG), "
            "same photos, same run, median of the repeats. Goal: stage ≤ 0.5 × baseline on 2 cores.\n\n"
            f"{SECTION_START}\n{HEADER}\n{SECTION_END}\n")
    head, rest = text.split(SECTION_START, 1)
    body, tail = rest.split(SECTION_END, 1)
    rows = [r for r in body.strip().splitlines()[2:] if r.strip() and line_key not in r]
    rows.append(line)
    text = f"{head}{SECTION_START}\n{HEADER}\n" + "\n".join(rows) + f"\n{SECTION_END}{tail}"
    benchmarks.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "photos" / "candy-table",
                        help="folder of photos (default: ../shared/photos/candy-table)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, interleaved; medians reported (default 3)")
    parser.add_argument("--out", type=Path, default=Path("results.json"), help="JSON results (default results.json)")
    parser.add_argument("--resolution", type=int, default=512, help="training resolution (default 512)")
    parser.add_argument("--workers", type=int, default=None, help="stage worker processes (default: the cores available)")
    parser.add_argument("--cpus", type=int, default=None,
                        help="pin this process and its workers to the first N cores (e.g. 2 to measure the 2-core goal)")
    parser.add_argument("--benchmarks", type=Path, default=ROOT / "BENCHMARKS.md", help="file to record the result in")
    parser.add_argument("--no-record", action="store_true", help="do not touch BENCHMARKS.md")
    parser.add_argument("--no-dedup-report", action="store_true", help="skip the near-duplicate distance measurements")
    args = parser.parse_args(argv)

    if args.cpus:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cpus])
    photos = args.photos.resolve()
    if not photos.is_dir():
        parser.error(f"no such folder: {photos}")
    paths = photos_in(photos)
    base_times, stage_times, base_cpu, stage_cpu = [], [], [], []
    counts: dict = {}
    decoded = 0
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for r in range(args.repeat):
            out = tmp / f"baseline{r}"
            out.mkdir()
            cpu = cpu_seconds()
            seconds, decoded = baseline(paths, args.resolution, out)
            base_times.append(seconds)
            base_cpu.append(cpu_seconds() - cpu)
            cpu = cpu_seconds()
            seconds, counts = stage(photos, args.resolution, args.workers, tmp / f"run{r}")
            stage_times.append(seconds)
            stage_cpu.append(cpu_seconds() - cpu)
    # Best of the repeats is the run least disturbed by whatever else the machine is doing.
    base, full = min(base_times), min(stage_times)
    base_med, full_med = statistics.median(base_times), statistics.median(stage_times)
    command = "python bench/prep_bench.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    results = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": command,
        "photos": str(photos),
        "files": len(paths),
        "decodable": decoded,
        "resolution": args.resolution,
        "workers": args.workers or available_cores(),
        "baseline_seconds": base_times,
        "stage_seconds": stage_times,
        "baseline_best": round(base, 3),
        "stage_best": round(full, 3),
        "ratio": round(full / base, 3),
        "baseline_median": round(base_med, 3),
        "stage_median": round(full_med, 3),
        "ratio_median": round(full_med / base_med, 3),
        "stage_images_per_second": round(decoded / full, 2),
        "baseline_images_per_second": round(decoded / base, 2),
        "stage_verdicts": counts,
        "baseline_cpu_seconds": [round(c, 3) for c in base_cpu],
        "stage_cpu_seconds": [round(c, 3) for c in stage_cpu],
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    if not args.no_dedup_report:
        results["dedup"] = dedup_distances(paths, args.resolution)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    summary = (f"best of {args.repeat}: baseline {base:.2f} s, stage {full:.2f} s, ratio {full / base:.2f} "
               f"(medians {base_med:.2f} / {full_med:.2f} s, {full_med / base_med:.2f}), "
               f"{decoded / full:.1f} images/s; CPU s baseline {statistics.median(base_cpu):.2f}, "
               f"stage {statistics.median(stage_cpu):.2f}; load {results['load_average_1min']} ({results['machine']})")
    print(summary)
    if "dedup" in results:
        print("dedup:", json.dumps(results["dedup"]["summary"]))
    if not args.no_record:
        day = results["date"][:10]
        line = (f"| {day} | {results['machine']} | `{command}` | {base:.2f} / {base_med:.2f} | {full:.2f} / {full_med:.2f} | "
                f"{full / base:.2f} / {full_med / base_med:.2f} | "
                f"{decoded / full:.1f} | {statistics.median(base_cpu):.2f} / {statistics.median(stage_cpu):.2f} | "
                f"{results['load_average_1min']} |")
        record(args.benchmarks, f"| {results['machine']} | `{command}` |", line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
