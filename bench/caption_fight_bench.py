"""Wall time of a Claude caption fight against the local fake Messages API.

    python bench/caption_fight_bench.py [--photos 24] [--latency 0.25] [--concurrency 4] [--out result.json]

N photos are captioned twice by the ``claude`` captioner (two caption styles: tags and
natural, i.e. two strategies), then the ``claude`` judge compares the two captions of
every photo in both orders: 4·N API calls, each answered after a fixed injected latency.
With a bound of C requests in flight the fight should take about
(2·⌈N/C⌉ + ⌈2N/C⌉)·latency, not the serial 4·N·latency. The real SDK, our retries and the
thread pool all run; only the server is fake (so no key and no money are needed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(Path(__file__).resolve().parent)]

from bench_markdown import update_section  # noqa: E402
from fakes.anthropic_server import PALETTE, FakeAnthropic, solid_photos  # noqa: E402

from clood_candy.config import load_config  # noqa: E402
from clood_candy.context import StageContext  # noqa: E402
from clood_candy.plugins import build_registry, load_plugins  # noqa: E402
from clood_candy.progress import Progress  # noqa: E402
from clood_candy.records import Candidate, FightItem  # noqa: E402
from clood_candy.runstore import RunStore  # noqa: E402

FAKE_KEY = "sk-ant-bench-fake-key"  # the fake server accepts anything; a real key never goes to it


def context(run_dir: Path, style: str, options: dict) -> StageContext:
    config = load_config(None, {"caption": {"style": style}, "plugins": {"claude": options}})
    run = RunStore.create(run_dir, "bench", config.model_dump(mode="json"), None, demo=False)
    return StageContext(run=run, config=config, registry=build_registry(), progress=Progress(quiet=True))


def timed(fn, *args):
    began = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - began


def run(photos_n: int, latency: float, concurrency: int) -> dict:
    os.environ["ANTHROPIC_API_KEY"] = FAKE_KEY
    load_plugins()
    import anthropic  # noqa: F401  the SDK's one-off import (seconds) is not what is measured
    colours = list(PALETTE.values())
    with FakeAnthropic(latency=latency) as fake, tempfile.TemporaryDirectory(prefix="clood-fight-bench-") as tmp:
        options = {"base_url": fake.url, "max_concurrency": concurrency, "cache": False}
        run_dir = Path(tmp) / "run"
        ctx_tags = context(run_dir, "tags", options)
        ctx_natural = context(run_dir, "natural", options)
        photos = solid_photos(run_dir, {f"p{i:03d}": colours[i % len(colours)] for i in range(photos_n)}, size=(256, 256))
        captioner = ctx_tags.registry.get("captioner", "claude")
        judge = ctx_tags.registry.get("judge", "claude")

        began = time.perf_counter()
        tags, t_tags = timed(captioner.caption, photos, ctx_tags)
        natural, t_natural = timed(captioner.caption, photos, ctx_natural)
        pairs = []
        for photo in photos:
            item = FightItem(id=photo.id, photo=photo, candidates=[
                Candidate(fighter="claude/tags", text=tags[photo.id].caption or ""),
                Candidate(fighter="claude/natural", text=natural[photo.id].caption or "")])
            a, b = item.candidates
            pairs += [(item, a, b), (item, b, a)]
        verdicts, t_judge = timed(judge.compare, pairs, ctx_tags)
        wall = time.perf_counter() - began

        calls = len(fake.messages_calls())
        failed = sum(1 for r in [*tags.values(), *natural.values()] if r.error)
        ideal = (2 * math.ceil(photos_n / concurrency) + math.ceil(2 * photos_n / concurrency)) * latency
        tokens_in = sum(r.usage.get("input_tokens", 0) for r in [*tags.values(), *natural.values()])
        return {
            "benchmark": "caption-fight-fake-api", "date": date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores", "command": " ".join(sys.argv),
            "load_average_1m": round(os.getloadavg()[0], 2), "photos": photos_n, "latency_s": latency, "concurrency": concurrency,
            "api_calls": calls, "max_in_flight": fake.max_in_flight, "caption_failures": failed,
            "verdicts": len(verdicts), "ties": sum(v.winner == "tie" for v in verdicts),
            "seconds": {"captions_tags": round(t_tags, 3), "captions_natural": round(t_natural, 3),
                        "judging": round(t_judge, 3), "total": round(wall, 3)},
            "ideal_seconds": round(ideal, 3), "serial_seconds": round(4 * photos_n * latency, 3),
            "overhead_vs_ideal": round(wall / ideal, 3) if ideal else None,
            "speedup_vs_serial": round(4 * photos_n * latency / wall, 2) if wall else None,
            "caption_input_tokens": tokens_in,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=24, help="photos in the fight (default 24)")
    parser.add_argument("--latency", type=float, default=0.25, help="seconds the fake server takes per call")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4],
                        help="[plugins.claude] max_concurrency; several values: one run each")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "caption_fight.json")
    parser.add_argument("--no-markdown", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args()
    if args.photos < 1 or min(args.concurrency) < 1 or args.latency < 0:
        parser.error("--photos and --concurrency must be ≥ 1, --latency ≥ 0")

    results = []
    for concurrency in args.concurrency:
        result = run(args.photos, args.latency, concurrency)
        results.append(result)
        s = result["seconds"]
        print(f"{result['api_calls']} calls, {result['photos']} photos, latency {args.latency}s, concurrency "
              f"{concurrency} (max in flight {result['max_in_flight']}): {s['total']}s "
              f"(ideal {result['ideal_seconds']}s, serial {result['serial_seconds']}s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results[0] if len(results) == 1 else results, indent=2) + "\n", encoding="utf-8")
    if args.no_markdown:
        return
    rows = [f"| {r['date']} | {r['machine']} | {r['photos']} | {r['latency_s']}s | {r['concurrency']} | "
            f"{r['api_calls']} | {r['max_in_flight']} | {r['seconds']['total']} | {r['ideal_seconds']} | "
            f"{r['serial_seconds']} | {r['speedup_vs_serial']}× |" for r in results]
    update_section("Caption fight against the fake Messages API (bench/caption_fight_bench.py)", [
        "N photos captioned by the `claude` captioner in two styles, then judged pairwise by the `claude` judge in",
        "both orders (4·N calls) through the real SDK against `tests/fakes/anthropic_server.py` with a fixed",
        "injected latency per call. Ideal = (2·⌈N/C⌉ + ⌈2N/C⌉)·latency; serial = 4·N·latency.",
        "",
        "| date | machine | photos | latency | concurrency C | calls | max in flight | wall s | ideal s | serial s | speedup |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Load average (1 min) at the runs: {', '.join(str(r['load_average_1m']) for r in results)}. Command: `python bench/caption_fight_bench.py --photos {args.photos} --latency {args.latency} "
        f"--concurrency {' '.join(map(str, args.concurrency))}`.",
    ])


if __name__ == "__main__":
    main()
