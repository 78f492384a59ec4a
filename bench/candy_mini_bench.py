"""candy-mini, the learned miniature base: how it was made and what it learned.

    python bench/candy_mini_bench.py [--base candy-mini|FOLDER] [--record PRETRAINING_FOLDER] [--no-demo]

Reads the recipe's figures from the pretraining record (parameters, steps, time, final
losses), measures the shipped base on images it draws (prompt → bean colour, prompt →
background, read by vision-stats' pixel analysis; the VAE's PSNR on fresh shots), then runs
the demo once (``clood dogfood candy --demo``): its wall time and how often its LoRA's samples
show the held-out teal look at weight 1 against weight 0. The judges' agreement figures come
from ``pytest -s tests/test_candy_mini.py -k judges`` (they need the fight machinery).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def recipe_figures(record: dict) -> dict:
    stages = record.get("stages", {})
    last = {name: (s.get("log") or [{}])[-1] for name, s in stages.items()}
    return {"command": record.get("command"), "seed": record.get("recipe", {}).get("seed"),
            "shots": record.get("figures", {}).get("shots"),
            "parameters_m": record.get("figures", {}).get("parameters_m", {}),
            "seconds": record.get("figures", {}).get("seconds", {}),
            "steps": {name: s.get("steps") for name, s in stages.items()},
            "final_loss": {name: round(v["loss"], 4) for name, v in last.items() if "loss" in v}}


def demo_figures() -> dict:
    from clood_candy_plugins.pretrain.evaluate import look_arrival

    with tempfile.TemporaryDirectory(prefix="clood-candy-mini-bench-") as work:
        run = Path(work) / "run"
        cmd = [sys.executable, "-m", "clood_candy", "dogfood", "candy", "--demo", "--run-dir", str(run), "-q", "--json"]
        began = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - began
        if proc.returncode != 0:
            raise SystemExit(f"demo failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
        return {"seconds": round(seconds, 1), "look": look_arrival(run)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="candy-mini", help="candy-mini or a diffusers folder of one")
    parser.add_argument("--record", type=Path, help="pretraining folder (default: the shipped one)")
    parser.add_argument("--no-demo", action="store_true", help="skip the demo run (its time and the teal figures)")
    parser.add_argument("--guidance", default="", help="also sweep colour/background control over these "
                        "classifier-free guidance scales, e.g. 7,4,3 (on --sweep-seeds)")
    parser.add_argument("--sweep-seeds", default="0,1,2,3,4,5,6,7", help="seeds of the guidance sweep")
    parser.add_argument("--out", type=Path, default=Path("bench/results/candy_mini.json"))
    parser.add_argument("--no-markdown", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args()

    from clood_candy_plugins import candy_mini
    from clood_candy_plugins.pretrain import evaluate

    folder = args.record or candy_mini.folder("pretraining")
    if folder is None:
        raise SystemExit("no pretraining record: run `clood pretrain candy-mini --out DIR --ship` first")
    record = json.loads((folder / "record.json").read_text(encoding="utf-8"))
    base = evaluate.load(args.base)
    colour, background = evaluate.colour_control(base), evaluate.background_control(base)
    result = {"benchmark": "candy-mini", "date": date.today().isoformat(),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "command": " ".join(["python", *sys.argv]),
              "recipe": recipe_figures(record),
              "colour_control": {k: colour[k] for k in ("share", "n", "misses")},
              "background_control": {k: background[k] for k in ("share", "n", "misses")},
              "vae_psnr_db": round(evaluate.vae_psnr(base.pipe.vae), 2), "guidance": base.guidance_scale}
    if args.guidance:
        seeds = tuple(int(s) for s in args.sweep_seeds.split(","))
        result["guidance_sweep"] = {"seeds": list(seeds), "by_guidance": {
            g: {"colour": evaluate.colour_control(base, seeds, float(g))["share"],
                "background": evaluate.background_control(base, seeds, float(g))["share"]}
            for g in args.guidance.split(",")}}
    if not args.no_demo:
        result["demo"] = demo_figures()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result, indent=2, default=str))
    if not args.no_markdown:
        from bench_markdown import update_section

        update_section("candy-mini, the learned miniature base (bench/candy_mini_bench.py)", markdown(result))


def markdown(r: dict) -> list[str]:
    rec = r["recipe"]
    params = ", ".join(f"{k} {v} M" for k, v in rec["parameters_m"].items())
    secs = ", ".join(f"{k} {v / 60:.1f} min" for k, v in rec["seconds"].items())
    steps = ", ".join(f"{k} {v}" for k, v in rec["steps"].items() if v)
    losses = ", ".join(f"{k} {v}" for k, v in rec["final_loss"].items())
    lines = [f"- {r['date']}, {r['machine']}, CPU fp32: `{r['command']}`. All figures are of candy-mini, a 64 px "
             "miniature clood trains on its own rendered studio — not of a real base.",
             f"- Recipe (rebuild: `{rec['command']}`, seed {rec['seed']}): {rec['shots']} rendered shots; "
             f"parameters {params}; steps {steps}; time {secs}; final losses {losses}.",
             f"- Prompt controls bean colour (8 colours × 4 seeds, read by vision-stats): **{r['colour_control']['share']:.0%}** "
             f"of {r['colour_control']['n']} (goal ≥ 70 %, chance 12.5 %).",
             f"- Prompt controls background (4 backgrounds × 4 seeds): **{r['background_control']['share']:.0%}** "
             f"of {r['background_control']['n']} (goal ≥ 70 %).",
             f"- VAE on fresh shots: **{r['vae_psnr_db']} dB** PSNR (goal ≥ 26 dB)."]
    if "guidance_sweep" in r:
        sweep = r["guidance_sweep"]
        lines.append(f"- Guidance sweep (classifier-free guidance; the figures above use the base's own, "
                     f"{r.get('guidance', 7)}), seeds {sweep['seeds'][0]}–{sweep['seeds'][-1]}: "
                     + "; ".join(f"{g}: colour {v['colour']:.0%}, background {v['background']:.0%}"
                                 for g, v in sweep["by_guidance"].items()) + ".")
    if "demo" in r:
        look = r["demo"]["look"]
        at = {float(w): v for w, v in look.items()}
        one, zero = at.get(1.0, {}), at.get(0.0, {})
        lines.append(f"- Demo (`clood dogfood candy --demo`, one cold-ish run): **{r['demo']['seconds']} s** wall (goal ≤ 120 s); "
                     f"samples showing the held-out teal look: **{one.get('present', 0):.0%}** of {one.get('n', 0)} at "
                     f"weight 1 (goal ≥ 60 %), **{zero.get('present', 0):.0%}** of {zero.get('n', 0)} at weight 0 (goal ≤ 10 %); "
                     "per weight: " + ", ".join(f"{w}: {v['present']:.0%}" for w, v in at.items()) + ".")
    return lines


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
