"""Benchmark clood's LoRA trainer against the diffusers example, and its GPU throughput.

CPU (default): the tiny SD1 base, the same prepared images and captions, resolution,
batch, rank and steps for both sides; clood's trainer (``family.train``) vs diffusers'
``examples/text_to_image/train_text_to_image_lora.py`` (not part of this project: pass its
path). Each side runs in its own process, alternately (A B A B …). A global optimizer
step hook timestamps every step on both sides alike; s/step is the median after the
warm-up steps; peak RSS is the child's maximum resident set (wait4).

    python bench/train_bench.py --diffusers-script /tmp/train_text_to_image_lora.py \\
        --python /tmp/venv-tv/bin/python --steps 40 --repeat 2

The example needs ``datasets`` and torchvision, which does not install beside torch 2.13:
a separate venv (torch 2.14.1 + torchvision 0.29.1 + diffusers, peft, transformers,
accelerate, datasets, and this project with ``pip install -e``) works; ``--python`` runs
both sides in it (the fair setting: one torch build), or ``--clood-python`` /
``--diffusers-python`` one each.

GPU (``--gpu``): SD1.5- and SDXL-size UNets built from the shipped configs with random
weights (no download), bf16, a LoRA on the attention projections, random latents and
text embeddings; it/s, peak GPU memory, and model FLOP utilisation against
``--peak-tflops`` (FLOPs per step counted by torch's FlopCounterMode).

Results go to ``--out`` as JSON and (unless ``--no-record``) to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SECTION = "LoRA trainer (`bench/train_bench.py`)"
COLOURS = ["red", "blue", "green", "pink", "yellow", "white", "black", "orange"]


# --- the shared data ---------------------------------------------------------------


def make_data(folder: Path, count: int, resolution: int) -> tuple[Path, Path]:
    """Bean-like photos at the bench resolution, written once for both sides: a TrainSet
    JSON for clood and the imagefolder layout (metadata.jsonl) the example reads."""
    import numpy as np
    from PIL import Image

    images = folder / "train"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows, items = [], []
    for i in range(count):
        img = np.full((resolution, resolution, 3), 235, np.uint8)
        y, x = np.mgrid[:resolution, :resolution]
        cy, cx = rng.integers(resolution // 4, 3 * resolution // 4, 2)
        img[((y - cy) ** 2 + ((x - cx) / 1.6) ** 2) < (resolution // 5) ** 2] = rng.integers(0, 255, 3)
        name = f"bean{i:03d}.png"
        Image.fromarray(img).save(images / name)
        caption = f"jlybn, jellybean, {COLOURS[i % len(COLOURS)]}"
        rows.append({"file_name": name, "text": caption})
        items.append({"image": str(images / name), "caption": caption})
    (images / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    trainset = {"train": items, "validation": [], "trigger": "jlybn", "class_word": "jellybean", "resolution": resolution}
    (folder / "trainset.json").write_text(json.dumps(trainset))
    return folder / "trainset.json", images


def step_clock() -> list[float]:
    """Timestamps after every optimizer step of this process, whoever's loop it is."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    stamps: list[float] = []
    register_optimizer_step_post_hook(lambda optimizer, args, kwargs: stamps.append(time.perf_counter()))
    return stamps


# --- the two sides (each in its own child process) ----------------------------------


def worker_clood(args) -> dict:
    os.environ.setdefault("CLOOD_LOAD_PLUGINS", "builtin")  # only this project's plugins
    from clood_candy.config import load_config
    from clood_candy.context import StageContext
    from clood_candy.plugins import build_registry, load_plugins
    from clood_candy.progress import Progress
    from clood_candy.records import TrainConfig, TrainSet
    from clood_candy.runstore import RunStore

    stamps = step_clock()
    work = Path(args.work)
    plugins = {"sd": {"tensorboard": False, **({"threads": args.threads} if args.threads else {})}}
    config = load_config(None, {"base": "tiny", "plugins": plugins})
    load_plugins()
    run = RunStore.create(work / "run", "bench", config.model_dump(mode="json"), None, demo=False)
    ctx = StageContext(run=run, config=config, registry=build_registry(), progress=Progress(quiet=True))
    data = TrainSet.model_validate_json(Path(args.trainset).read_text())
    recipe = TrainConfig(name="bench", rank=args.rank, alpha=float(args.rank), learning_rate=1e-4, steps=args.steps,
                         batch_size=args.batch, checkpoint_every=args.steps, validate_every=args.steps,
                         resolution=args.resolution, seed=0, compile=bool(args.compile),
                         targets="attention")  # the layers the diffusers example trains: the same work
    base = ctx.base()
    began = time.perf_counter()
    outcome = ctx.family().train(base, data, recipe, work / "out", ctx)
    if outcome.error:
        raise SystemExit(f"clood training failed: {outcome.error}")
    import torch

    # The trainer sets its own thread count while it holds the model (1 for the tiny base).
    return {"stamps": stamps, "threads": base.lock.threads or torch.get_num_threads(), "torch": torch.__version__,
            "first_step_s": stamps[0] - began}


def worker_diffusers(args) -> dict:
    import runpy

    import torch

    stamps = step_clock()
    sys.argv = [args.script, *args.rest]
    runpy.run_path(args.script, run_name="__main__")
    return {"stamps": stamps, "threads": torch.get_num_threads(), "torch": torch.__version__}


def diffusers_args(base: Path, images: Path, out: Path, a) -> list[str]:
    return ["--pretrained_model_name_or_path", str(base), "--train_data_dir", str(images), "--caption_column", "text",
            "--resolution", str(a.resolution), "--train_batch_size", str(a.batch), "--rank", str(a.rank),
            "--max_train_steps", str(a.steps), "--learning_rate", "1e-4", "--lr_scheduler", "constant",
            "--checkpointing_steps", str(a.steps + 1), "--seed", "0", "--output_dir", str(out),
            "--dataloader_num_workers", "0", "--mixed_precision", "no"]


def run_side(side: str, python: str, a, base: Path, trainset: Path, images: Path, work: Path) -> dict:
    result = work / f"{side}.json"
    cmd = [python, str(Path(__file__).resolve()), "--worker", side, "--work", str(work), "--result", str(result),
           "--steps", str(a.steps), "--batch", str(a.batch), "--rank", str(a.rank), "--resolution", str(a.resolution),
           "--trainset", str(trainset)]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    if a.compile and side == "clood":
        cmd += ["--compile"]
    if side == "diffusers":
        cmd += ["--script", a.diffusers_script, "--", *diffusers_args(base, images, work / "out", a)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(work / "hf"),
           "PYTHONPATH": str(ROOT), **({"OMP_NUM_THREADS": str(a.threads)} if a.threads else {})}
    began = time.perf_counter()
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - began
    if child.returncode != 0:
        raise SystemExit(f"{side} side failed ({child.returncode}):\n{output[-3000:]}")
    data = json.loads(result.read_text())
    stamps = data.pop("stamps")
    if len(stamps) != a.steps:
        raise SystemExit(f"{side}: expected {a.steps} optimizer steps, timed {len(stamps)}")
    gaps = [b - c for b, c in zip(stamps[1:], stamps[:-1])]
    per_step = gaps[a.warmup:]
    return {"side": side, "s_per_step": statistics.median(per_step), "s_per_step_p90": sorted(per_step)[
        int(0.9 * (len(per_step) - 1))], "wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024,
        "step_ms": [round(g * 1000, 1) for g in gaps], **data}


def cpu_bench(a) -> dict:
    base = None
    if not a.skip_diffusers:  # the example reads the tiny base's diffusers folder (clood builds it once)
        from clood_candy_plugins.sd.tiny import tiny_folder

        base = tiny_folder("tiny")
    sides = ["clood"] + ([] if a.skip_diffusers else ["diffusers"])
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        trainset, images = make_data(Path(tmp) / "data", a.images, a.resolution)
        for r in range(a.repeat):
            for side in sides:  # alternately: A B A B
                work = Path(tmp) / f"{side}-{r}"
                work.mkdir()
                python = (a.clood_python if side == "clood" else a.diffusers_python) or a.python or sys.executable
                runs.append({**run_side(side, python, a, base, trainset, images, work), "round": r, "python": python})
    summary = {}
    for side in sides:
        mine = [x for x in runs if x["side"] == side]
        summary[side] = {"s_per_step": statistics.median(x["s_per_step"] for x in mine),
                         "peak_rss_mb": max(x["peak_rss_mb"] for x in mine),
                         "wall_s": statistics.median(x["wall_s"] for x in mine),
                         "threads": mine[0]["threads"], "torch": mine[0]["torch"],
                         **({"first_step_s": max(x["first_step_s"] for x in mine)} if "first_step_s" in mine[0] else {})}
    if "diffusers" in summary:
        summary["ratio"] = summary["clood"]["s_per_step"] / summary["diffusers"]["s_per_step"]
    return {"runs": runs, "summary": summary}


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def append_row(section: str, intro: str, marker: str, header: list[str], row: str) -> None:
    """Add a row to a section's table in BENCHMARKS.md, keeping earlier rows and the notes
    written under the table."""
    from bench.bench_markdown import BENCHMARKS, update_section

    text = BENCHMARKS.read_text(encoding="utf-8") if BENCHMARKS.exists() else ""
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    rows, notes = [], ""
    if start in text:
        table, rest = text.split(start, 1)[1].split(end, 1)
        rows = table.strip().splitlines()[len(header):]
        notes = rest.split("\n## ", 1)[0].strip("\n")
    update_section(section, [intro, "", start, *header, *rows, row, end, *([""] + notes.splitlines() if notes else [])])


def shown(argv: list[str]) -> str:
    """The command as recorded: where the JSON went does not matter to a reader."""
    kept = [x for i, x in enumerate(argv) if x != "--out" and (i == 0 or argv[i - 1] != "--out")]
    return "python bench/train_bench.py " + shlex.join(kept)


def record_cpu(result: dict, a, argv: list[str]) -> None:
    s = result["summary"]
    both = "diffusers" in s
    row = (f"| {datetime.now(timezone.utc).date()} | {platform.machine()}, {os.cpu_count()} cores | "
           f"`{shown(argv)}` | {a.steps} ({a.warmup} warm-up) × {a.repeat} | "
           f"{a.resolution} px, batch {a.batch}, rank {a.rank}, {a.images} images"
           + (f"; clood compiled (first step ≤ {s['clood']['first_step_s']:.0f} s)" if a.compile else "") + " | "
           f"{s['clood']['s_per_step'] * 1000:.1f} ms ({s['clood']['threads']} thr) | "
           + (f"{s['diffusers']['s_per_step'] * 1000:.1f} ms ({s['diffusers']['threads']} thr) | {s['ratio']:.2f} | "
              if both else "– | – | ")
           + f"{s['clood']['peak_rss_mb']:.0f} / " + (f"{s['diffusers']['peak_rss_mb']:.0f}" if both else "–")
           + f" | {s['clood']['torch']} | {result['load']} |")
    header = ["| date | machine | command | steps × rounds | setting | clood s/step | example s/step | clood/example "
              "| peak RSS MB clood / example | torch | load |", "|" + " --- |" * 11]
    append_row(SECTION, CPU_INTRO, "train-bench-cpu", header, row)


CPU_INTRO = ("Tiny SD1 base, same prepared images and captions, resolution, batch, rank and steps on both sides: "
             "clood's trainer (`family.train`) vs diffusers' `examples/text_to_image/train_text_to_image_lora.py`, "
             "each in its own process, alternately. s/step: median time between optimizer steps after the warm-up "
             "(a global optimizer-step hook timestamps both sides alike). Goal: clood ≤ 0.5 × the example.")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--diffusers-script", help="path of train_text_to_image_lora.py (not shipped with clood)")
    p.add_argument("--skip-diffusers", action="store_true", help="run clood's side only")
    p.add_argument("--python", help="interpreter for both sides (default: this one)")
    p.add_argument("--clood-python", help="interpreter for clood's side")
    p.add_argument("--diffusers-python", help="interpreter for the example's side")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5, help="steps left out of the median")
    p.add_argument("--repeat", type=int, default=2, help="rounds of A B")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--threads", type=int, help="torch threads for both sides (default: each side's own choice)")
    p.add_argument("--compile", action="store_true", help="clood's side trains with compile = true (torch.compile)")
    p.add_argument("--gpu", action="store_true", help="the GPU benchmark (real-size UNets, random weights, bf16)")
    p.add_argument("--family", choices=["sd1", "sdxl", "both"], default="both", help="--gpu: which UNet")
    p.add_argument("--device", default="cuda", help="--gpu: device (cpu only to try the code path)")
    p.add_argument("--peak-tflops", type=float, help="--gpu: the device's dense bf16 peak, for MFU (H100 SXM: 989)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="--gpu")
    p.add_argument("--unet-config", help="--gpu: a UNet config folder instead of the shipped real-size one")
    p.add_argument("--out", type=Path, help="write the results here as JSON")
    p.add_argument("--no-record", action="store_true", help="do not update BENCHMARKS.md")
    # A child process's own role (used by the bench itself).
    p.add_argument("--worker", choices=["clood", "diffusers"], help=argparse.SUPPRESS)
    for hidden in ("--work", "--result", "--trainset", "--script"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    p.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    a = p.parse_args(argv)

    if a.worker:
        result = worker_clood(a) if a.worker == "clood" else worker_diffusers(a)
        Path(a.result).write_text(json.dumps(result))
        return 0
    if a.gpu:
        from bench.train_bench_gpu import gpu_bench, record_gpu

        result = gpu_bench(a)
        record = record_gpu
    else:
        if not a.skip_diffusers and not a.diffusers_script:
            p.error("give --diffusers-script PATH (or --skip-diffusers)")
        if a.steps <= a.warmup + 1:
            p.error("--steps must exceed --warmup + 1")
        load_before = load_average()
        result = cpu_bench(a)
        result["load"] = max(load_before, load_average())
        record = record_cpu
    result["command"] = "python bench/train_bench.py " + shlex.join(argv)
    if a.out:
        a.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result.get("summary", result), indent=2))
    if not a.no_record:
        record(result, a, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
