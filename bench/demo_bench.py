"""Wall time and peak memory of ``clood dogfood candy --demo`` from a cold start.

    python bench/demo_bench.py [--repeat 1] [--stages prep,caption,...] [--out result.json]

Each repeat is a fresh process and a fresh run folder (the tiny base is cached after
the first build, as it is for a user; --cold-cache clears that cache too).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_once(stages: str | None, cold_cache: bool) -> dict:
    work = Path(tempfile.mkdtemp(prefix="clood-demo-bench-"))
    env = dict(os.environ)
    if cold_cache:
        env["CLOOD_CACHE"] = str(work / "cache")
    cmd = [sys.executable, "-m", "clood_candy", "dogfood", "candy", "--demo", "--run-dir", str(work / "run"), "-q", "--json"]
    if stages:
        cmd += ["--stages", stages]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    began = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - began
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        raise SystemExit(f"demo failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    summary = json.loads(proc.stdout)
    shutil.rmtree(work, ignore_errors=True)
    # ru_maxrss of children is the largest child so far; report it only when it grew.
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(max(peak_kb, before) / 1024, 1),
            "stages": summary["stages"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--stages", help="subset of stages (default: all)")
    parser.add_argument("--cold-cache", action="store_true", help="also rebuild the tiny base model")
    parser.add_argument("--out", type=Path, default=Path("bench/results/demo.json"))
    parser.add_argument("--no-markdown", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args()
    runs = [run_once(args.stages, args.cold_cache) for _ in range(args.repeat)]
    seconds = sorted(r["seconds"] for r in runs)
    result = {"benchmark": "demo-end-to-end", "date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "command": " ".join(sys.argv), "median_seconds": seconds[len(seconds) // 2],
              "peak_rss_mb": max(r["peak_rss_mb"] for r in runs), "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if not args.no_markdown:
        from bench_markdown import update_section

        update_section("Demo end to end", [
            f"- {result['date']}, {result['machine']}: `python bench/demo_bench.py {' '.join(sys.argv[1:])}` — "
            f"median **{result['median_seconds']} s** wall, peak RSS **{result['peak_rss_mb']} MB** "
            f"({len(runs)} run(s), every stage {'done' if all(set(r['stages'].values()) <= {'done'} for r in runs) else 'NOT done'})."])


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
