"""Wall time of the config fight, local against Ray, in the same run on the same machine.

    python bench/ray_fight_bench.py [--budgets 100 200] [--cpus 2] [--out result.json]

The demo's fight (its default grid of four recipes on the tiny base, bean photos at 64 px)
with rungs long enough that start-up does not dominate: once with the local executor (one
trial after another in this process), once on a local Ray instance with ``--cpus`` workers
(each trial one CPU, so two at a time on two cores). Ray's start-up (``ray.init``) is timed
on its own, so a user can tell from what fight size Ray pays. The tiny base is a toy: the
figures say how the executors compare, not how long a real base trains.
"""

from __future__ import annotations

import argparse
import json
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
from support.sd import module_ctx, train_set  # noqa: E402

from clood_candy import fsutil  # noqa: E402
from clood_candy.config import DEMO_OVERRIDES, deep_merge  # noqa: E402
from clood_candy.pipeline.config_fight import fight_configs  # noqa: E402
from clood_candy.pipeline.planning import planned_recipes  # noqa: E402
from clood_candy.pipeline.train_stage import load_trainset  # noqa: E402

TITLE = "Config fight: local against Ray (bench/ray_fight_bench.py)"


def fight(root: Path, budgets: list[int], executor: str) -> tuple[dict, float]:
    # The recipes' own length past the last rung: a rung never trains a config beyond its steps.
    overrides = deep_merge(DEMO_OVERRIDES, {"fight": {"executor": executor},
                                            "train": {"defaults": {"steps": 2 * budgets[-1]},
                                                      "fight": {"budgets": budgets}}})
    ctx = module_ctx(root, **overrides)
    dataset = ctx.run.path("dataset")
    data = train_set(dataset)
    fsutil.write_text(dataset / "metadata.jsonl", "\n".join(
        json.dumps({"file_name": item.image.rsplit("/", 1)[-1], "text": item.caption})
        for item in data.train + data.validation) + "\n")
    data = load_trainset(ctx)
    _, configs, rungs = planned_recipes(ctx, data)
    began = time.perf_counter()
    fight_configs(ctx, data, configs, rungs)
    seconds = time.perf_counter() - began
    return json.loads(ctx.run.path("train", "fight.json").read_text()), seconds


def run(budgets: list[int], cpus: int) -> dict:
    import ray

    with tempfile.TemporaryDirectory(prefix="clood-ray-bench-") as tmp:
        local, t_local = fight(Path(tmp) / "local", budgets, "local")
        began = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        t_start = time.perf_counter() - began
        try:
            on_ray, t_ray = fight(Path(tmp) / "ray", budgets, "ray")
        finally:
            ray.shutdown()
    trained = sum(len(r["scores"]) * r["budget"] for r in local["rounds"])  # upper bound: survivors resume
    return {
        "benchmark": "config-fight-local-vs-ray", "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "command": " ".join(sys.argv),
        "load_average_1m": round(os.getloadavg()[0], 2), "base": "tiny (toy, random weights)",
        "configs": len(local["configs"]), "budgets": budgets, "ray_cpus": cpus, "trial_steps_at_most": trained,
        "seconds": {"local": round(t_local, 2), "ray": round(t_ray, 2), "ray_start": round(t_start, 2)},
        "ray_over_local": round(t_ray / t_local, 3),
        "ray_with_start_over_local": round((t_ray + t_start) / t_local, 3),
        "same_winner": local["winner"] == on_ray["winner"],
        "same_survivors": [r["survivors"] for r in local["rounds"]] == [r["survivors"] for r in on_ray["rounds"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", type=int, nargs="+", default=[100, 200], help="steps per rung")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance (default 2)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ray_fight.json")
    parser.add_argument("--no-markdown", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args()
    r = run(args.budgets, args.cpus)
    s = r["seconds"]
    print(f"{r['configs']} configs, rungs {args.budgets}: local {s['local']} s, Ray {s['ray']} s "
          f"(+ {s['ray_start']} s start-up) → {r['ray_over_local']}× local; same winner {r['same_winner']}, "
          f"same survivors {r['same_survivors']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(r, indent=2) + "\n", encoding="utf-8")
    if args.no_markdown:
        return
    update_section(TITLE, [
        "The demo's four-recipe fight on the tiny base (a toy: the ratio is what counts, not the seconds) with",
        "longer rungs, run with the local executor and then on a local Ray instance in the same run. Ray's",
        "start-up (`ray.init`) is timed on its own; each Ray worker also loads the base once, inside its time.",
        "",
        "| date | machine | load (1 min) | rungs | Ray CPUs | local s | Ray s | Ray ÷ local | Ray start-up s | "
        "(Ray + start-up) ÷ local | same winner, survivors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {r['date']} | {r['machine']} | {r['load_average_1m']} | {', '.join(map(str, args.budgets))} | {args.cpus} "
        f"| {s['local']} | {s['ray']} | {r['ray_over_local']}× | {s['ray_start']} | {r['ray_with_start_over_local']}× "
        f"| {r['same_winner']}, {r['same_survivors']} |",
        "",
        f"Command: `python bench/ray_fight_bench.py --budgets {' '.join(map(str, args.budgets))} --cpus {args.cpus}`.",
    ])


if __name__ == "__main__":
    main()
