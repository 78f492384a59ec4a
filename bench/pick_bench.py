"""What the pick fight's sampling costs against the run it chooses for, in the same run.

    python bench/pick_bench.py [--base tiny tiny-sdxl ...] [--out result.json]

Runs ``clood dogfood candy --demo --base B`` for each base and reads, from the run folder,
the seconds the sample judges' sampling took (train/fight.json: the pick's candidates and
the config fight's rounds the panel decided), its samples per second, and the stages' own
seconds (run.json): the share of the train stage and of the whole run. The issue's goal:
sampling at most 25 % of the run. candy-mini is clood's 64 px miniature and the tiny bases
are toys with random weights: the figures compare the sampling with its run, not a real
base's speed.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_markdown import update_section  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from clood_candy.cli import cli  # noqa: E402

TITLE = "Pick fight: sampling against the run (bench/pick_bench.py)"


def measure(base: str, work: Path) -> dict:
    run = work / base
    result = CliRunner().invoke(cli, ["dogfood", "candy", "--demo", "--base", base, "--run-dir", str(run), "-q"])
    if result.exit_code != 0:
        raise SystemExit(f"{base}: the demo failed: {result.output.strip()[-300:]}")
    fight = json.loads((run / "train" / "fight.json").read_text())
    pick = fight["pick"]
    stages = {k: v.get("seconds") or 0.0 for k, v in json.loads((run / "run.json").read_text())["stages"].items()}
    rounds = [r["panel"]["sheet"] for r in fight["rounds"] if r.get("panel")]
    sheets = [pick["sheet"], *rounds]
    sampling, images = sum(s["seconds"] for s in sheets), sum(len(s["images"]) for s in sheets)
    return {"base": base, "candidates": len(pick["sheet"]["candidates"]), "rounds_judged": len(rounds),
            "samples": images, "sampling_s": sampling, "samples_per_s": round(images / sampling, 2),
            "judging_s": round(pick["seconds"] + sum(r["panel"]["seconds"] for r in fight["rounds"] if r.get("panel")), 3),
            "train_stage_s": round(stages["train"], 1), "run_s": round(sum(stages.values()), 1),
            "share_of_train": round(sampling / stages["train"], 3),
            "share_of_run": round(sampling / sum(stages.values()), 3), "winner": pick["winner"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", nargs="+", default=["candy-mini", "tiny", "tiny-sdxl"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "pick.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(base, Path(tmp)) for base in args.base]
    found = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
             "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(found, indent=2) + "\n")
    lines = [f"`python bench/pick_bench.py --base {' '.join(args.base)}` on {found['date']}, 2 CPU cores, the demo's "
             "settings (candy-mini, clood's 64 px miniature, and toy bases with random weights: the figures compare the "
             "sampling with its own run). Sampling: the pick's candidates and the fight's rounds the sample judges "
             "decided. Goal: sampling ≤ 25 % of the run.", "",
             "| base | candidates | rounds judged | samples | sampling | samples/s | judging | train stage | run "
             "| sampling / train stage | sampling / run |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['base']} | {r['candidates']} | {r['rounds_judged']} | {r['samples']} | {r['sampling_s']:.1f} s | "
                     f"{r['samples_per_s']:.2f} | {r['judging_s']:.2f} s | {r['train_stage_s']:.1f} s | {r['run_s']:.1f} s"
                     f" | {100 * r['share_of_train']:.0f} % | {100 * r['share_of_run']:.0f} % |")
    update_section(TITLE, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
