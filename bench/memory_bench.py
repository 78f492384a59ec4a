"""Peak memory of real-size training steps on the CPU, against the plan's estimate.

Each row runs in its own process: an SD1.5- (or SDXL-) size pipeline with random weights
built from the shipped configs (no download), the recipe's adapter attached as training
attaches it (``lora.attach``), clood's optimizer and autocast (``recipe``), and a few
training steps on random latents and text embeddings at a small resolution. The child's
peak RSS (``ru_maxrss``) is the measurement; the estimate is what ``clood plan`` would say
for the same recipe on the CPU (``ModelFamily.model_size`` + ``clood_candy.plan.memory``).

These are CPU RSS figures on random weights: the CPU keeps what a GPU keeps (weights,
adapter, optimizer, the activations autograd saves), but its allocator, its attention
kernel and the runtime differ, so they check the model's parts, not a GPU's peak.

    python bench/memory_bench.py --family sd1 --resolution 256 --steps 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import resource
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SECTION = "Memory estimate against peak RSS (`bench/memory_bench.py`)"
ROWS = ["fp32", "fp32+ckpt", "bf16", "bf16+ckpt"]
MB = 1024**2


def recipe_for(row: str, rank: int):
    from clood_candy.records import TrainConfig

    precision, _, ckpt = row.partition("+")
    return TrainConfig(rank=rank, alpha=float(rank), mixed_precision="no" if precision == "fp32" else precision,
                       gradient_checkpointing=ckpt == "ckpt")


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def child(family: str, row: str, resolution: int, steps: int, rank: int) -> dict:
    import time

    import torch
    import torch.nn.functional as F
    from clood_candy_plugins.sd import lora, recipe
    from clood_candy_plugins.sd.sizing import shipped
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    after_imports = rss_mb()
    configs = shipped(family)
    torch.manual_seed(0)
    began = time.perf_counter()
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(configs / "unet"))
    parts = {"unet": unet, "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(configs / "vae")),
             "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(configs / "text_encoder"))}
    if family == "sdxl":
        parts["text_encoder_2"] = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(configs / "text_encoder_2"))
    built = time.perf_counter() - began
    for module in parts.values():
        module.requires_grad_(False)
        module.eval()
    after_weights = rss_mb()

    class Pipe:  # what lora.attach and recipe.make_optimizer read from a pipeline
        pass

    pipe = Pipe()
    for name, module in parts.items():
        setattr(pipe, name, module)
    config = recipe_for(row, rank)
    params = lora.attach(pipe, config)
    optimizer = recipe.make_optimizer(config, pipe)
    autocast = recipe.autocast_for(config, torch.device("cpu"))
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    side = resolution // 8
    extra = {}
    if unet.config.addition_embed_type == "text_time":
        pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        extra["added_cond_kwargs"] = {"text_embeds": torch.randn(1, pooled), "time_ids": torch.randn(1, 6)}
    seconds = []
    # What autograd keeps for backward on the real step (outside checkpointed blocks), to set
    # beside the count made on the meta device: every tensor once, the model's own weights not.
    own = {p.untyped_storage().data_ptr() for m in parts.values() for p in m.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in own:
            saved[storage.data_ptr()] = max(saved.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    for step in range(steps):
        began = time.perf_counter()
        noisy, noise = torch.randn(1, 4, side, side), torch.randn(1, 4, side, side)
        cond = torch.randn(1, 77, unet.config.cross_attention_dim)
        hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t) if step == 0 else contextlib.nullcontext()
        with autocast, hooks:
            pred = unet(noisy, torch.randint(0, 1000, (1,)), cond, **extra).sample
        loss = F.mse_loss(pred.float(), noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - began)
    return {"after_imports_mb": after_imports, "after_weights_mb": after_weights, "peak_mb": peak_mb(),
            "saved_mb": round(sum(saved.values()) / MB),
            "build_s": round(built, 1), "step_s": [round(s, 1) for s in seconds],
            "trainable": sum(p.numel() for p in params)}


def estimate(family: str, row: str, resolution: int, rank: int) -> dict:
    from clood_candy_plugins.sd.planning import CPU_RUNTIME, CPU_WORKSPACE
    from clood_candy_plugins.sd.sizing import model_size

    from clood_candy.config import load_config
    from clood_candy.plan.memory import ACTIVATION_BYTES, Recipe
    from clood_candy.plan.memory import estimate as plan_estimate
    from clood_candy.plan.records import DeviceInfo

    base = {"sd1": "stable-diffusion-v1-5/stable-diffusion-v1-5", "sdxl": "stabilityai/stable-diffusion-xl-base-1.0"}
    config = recipe_for(row, rank)
    size = model_size(load_config(None, {"base": base[family]}), family, config, resolution)
    cpu = DeviceInfo(kind="cpu", name="bench", runtime_bytes=CPU_RUNTIME, workspace_share=CPU_WORKSPACE)
    made = plan_estimate(size, cpu, Recipe(1, 1, config.mixed_precision, config.gradient_checkpointing,
                                           config.optimizer), None)
    elements = size.checkpointed_elements if config.gradient_checkpointing else size.activation_elements
    weights = size.checkpointed_kept_weight_params if config.gradient_checkpointing else size.kept_weight_params
    half = config.mixed_precision != "no"
    counted = elements * (ACTIVATION_BYTES[config.mixed_precision]) + (weights * 2 if half else 0)
    return {"estimate_mb": made.total / MB, "parts_mb": {k: round(v / MB) for k, v in made.parts.items()},
            "trainable_counted": size.trainable_params, "counted_saved_mb": round(counted / MB)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=["sd1", "sdxl"], default="sd1")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "memory.json")
    parser.add_argument("--no-record", action="store_true", help="do not write BENCHMARKS.md")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.family, args.child, args.resolution, args.steps, args.rank)))
        return
    command = " ".join(["python bench/memory_bench.py", *sys.argv[1:]])
    results = []
    for row in args.rows.split(","):
        done = subprocess.run([sys.executable, __file__, "--child", row, "--family", args.family, "--resolution",
                               str(args.resolution), "--steps", str(args.steps), "--rank", str(args.rank)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            results.append({"row": row, "error": done.stderr.strip().splitlines()[-1:]})
            print(row, "failed:", done.stderr[-2000:], file=sys.stderr)
            continue
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        result = {"row": row, **measured, **estimate(args.family, row, args.resolution, args.rank)}
        result["error_pct"] = round(100 * (result["estimate_mb"] - result["peak_mb"]) / result["peak_mb"], 1)
        results.append(result)
        print(json.dumps(result), flush=True)
    record = {"command": command, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores",
              "family": args.family, "resolution": args.resolution, "rank": args.rank, "rows": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    previous[f"{args.family}-{args.resolution}-{args.rows}"] = record  # one table per command
    args.out.write_text(json.dumps(previous, indent=2) + "\n", encoding="utf-8")
    if not args.no_record:
        from bench.bench_markdown import update_section

        update_section(SECTION, markdown(previous))


def markdown(records: dict) -> list[str]:
    lines = ["CPU peak RSS of real-size training steps on random weights (the shipped configs, no download), "
             "against `clood plan`'s estimate for the same recipe on the CPU. These are CPU RSS figures, not GPU "
             "memory: the parts match (weights, adapter, optimizer, the tensors autograd keeps), the allocator, "
             "kernels and runtime do not. \"kept\": the tensors autograd holds for backward, counted by the family "
             "on the meta device / measured on the real step's first pass (with checkpointing the real figure "
             "sees only what is kept outside the checkpointed blocks). The CPU's workspace share (0.6 of a full "
             "forward's activations), runtime (0.7 GB) and bf16 bytes per kept element (2.4) were fitted to earlier "
             "SD1.5 runs of these rows; the SDXL rows took no part in the fit. The GPU's terms are not measured. "
             "Step seconds are only indicative: other processes shared the two cores during some rows.",
             ""]
    for record in records.values():
        lines += [f"- {record['date'][:10]}, {record['machine']}: `{record['command']}`", "",
                  "| recipe | measured peak RSS | estimate | error | kept: counted / real | after imports "
                  "| after weights | step s |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in record["rows"]:
            if "error" in row:
                lines.append(f"| {row['row']} | failed: {' '.join(row['error'])} | | | | | | |")
                continue
            lines.append(f"| {record['family']} {record['resolution']} px, rank {record['rank']}, {row['row']} | "
                         f"{row['peak_mb']:.0f} MB | {row['estimate_mb']:.0f} MB | {row['error_pct']:+.1f} % | "
                         f"{row.get('counted_saved_mb', '?')} / {row.get('saved_mb', '?')} MB | "
                         f"{row['after_imports_mb']:.0f} MB | {row['after_weights_mb']:.0f} MB | "
                         f"{'/'.join(str(s) for s in row['step_s'])} |")
        lines.append("")
    return lines


if __name__ == "__main__":
    main()
