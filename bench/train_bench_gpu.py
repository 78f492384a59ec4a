"""``bench/train_bench.py --gpu``: LoRA training throughput of SD1.5- and SDXL-size UNets.

The UNets are built from the configs clood ships (the real architectures) with random
weights, so nothing is downloaded; weights in bf16, the adapter in fp32 under bf16
autocast, as clood trains. The step is clood's: latents and text embeddings are cached,
so a step is the UNet forward and backward, gradient clipping and the (fused) AdamW
update; random latents and embeddings of the real shapes stand in for the cached ones.

Reported per family: it/s (steps/s) and images/s, peak GPU memory, FLOPs per step
(counted by torch's FlopCounterMode over one forward + backward) and the model FLOP
utilisation against ``--peak-tflops``.
"""

from __future__ import annotations

import os
import platform
import time
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

GPU_SECTION = "LoRA trainer on a GPU (`bench/train_bench.py --gpu`)"
GPU_INTRO = ("SD1.5- and SDXL-architecture UNets at real size (from the shipped configs, random weights, no download), "
             "bf16 weights, fp32 LoRA on the attention projections under bf16 autocast, cached-latent steps as clood "
             "trains them (UNet forward + backward, clipping, fused AdamW). MFU: FLOPs per step (torch "
             "FlopCounterMode, forward + backward) × steps/s ÷ the device's peak.")


def _unet(family: str, config_dir: str | None, device, dtype):
    from diffusers import UNet2DConditionModel

    from clood_candy_plugins.sd.base import quiet_libraries
    from clood_candy_plugins.sd.loading import CONFIG_NAMES

    quiet_libraries()
    folder = Path(config_dir) if config_dir else Path(
        str(resources.files("clood_candy_plugins.sd") / "configs" / CONFIG_NAMES[family] / "unet"))
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder))
    return unet.to(device=device, dtype=dtype)


def _inputs(unet, batch: int, device, dtype):
    import torch

    from clood_candy_plugins.sd.denoise import Cond

    cfg = unet.config
    side = cfg.sample_size
    gen = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.randn(shape, generator=gen).to(device, dtype)  # noqa: E731
    cond = Cond(rand(batch, 77, cfg.cross_attention_dim))
    if cfg.addition_embed_type == "text_time":  # SDXL: pooled text + 6 size/crop ids
        pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        res = side * 8
        cond = Cond(cond.embeds, rand(batch, pooled),
                    torch.tensor([[res, res, 0, 0, res, res]] * batch, device=device, dtype=dtype))
    return rand(batch, cfg.in_channels, side, side), rand(batch, cfg.in_channels, side, side), cond


def bench_family(family: str, a) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from clood_candy.records import TrainConfig
    from clood_candy_plugins.sd import lora, recipe
    from clood_candy_plugins.sd.denoise import predict

    device = torch.device(a.device)
    cuda = device.type == "cuda"
    if device.type == "meta":  # shapes only: counts FLOPs per step in seconds, without a GPU
        with torch.device("meta"):
            unet = _unet(family, a.unet_config, device, torch.bfloat16)
    else:
        unet = _unet(family, a.unet_config, device, torch.bfloat16)
    unet.requires_grad_(False)
    config = TrainConfig(rank=a.rank, alpha=float(a.rank), learning_rate=1e-4, optimizer="adamw", targets="attention",
                         gradient_checkpointing=a.gradient_checkpointing, mixed_precision="bf16")
    unet.add_adapter(lora.adapter_config(config, lora.unet_targets(config)))
    params = [p for p in unet.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    if a.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    optimizer = torch.optim.AdamW([{"params": params, "lr": 1e-4}], weight_decay=1e-2, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    noisy, noise, cond = _inputs(unet, a.batch, device, torch.bfloat16)
    timesteps = torch.randint(0, 1000, (a.batch,), device=device)

    def step() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            pred = predict(unet, noisy, timesteps, cond)
        torch.nn.functional.mse_loss(pred.float(), noise.float()).backward()
        recipe.update(params, optimizer, scheduler, None)

    if device.type == "meta":
        with FlopCounterMode(display=False) as counter:
            with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=False):
                pred = predict(unet, noisy, timesteps, cond)
            torch.nn.functional.mse_loss(pred.float(), noise.float()).backward()
        return {"family": family, "resolution": unet.config.sample_size * 8, "batch": a.batch, "rank": a.rank,
                "unet_parameters": sum(p.numel() for p in unet.parameters()), "tflops_per_step": counter.get_total_flops() / 1e12,
                "device": "meta (FLOPs counted, nothing timed)", "torch": torch.__version__}
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(a.warmup):
        step()
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    began = time.perf_counter()
    for _ in range(a.steps):
        step()
    sync()
    seconds = (time.perf_counter() - began) / a.steps
    result = {"family": family, "resolution": unet.config.sample_size * 8, "batch": a.batch, "rank": a.rank,
              "gradient_checkpointing": a.gradient_checkpointing,
              "unet_parameters": sum(p.numel() for p in unet.parameters()), "lora_parameters": sum(p.numel() for p in params),
              "it_per_s": 1 / seconds, "images_per_s": a.batch / seconds, "tflops_per_step": flops / 1e12,
              "achieved_tflops": flops / seconds / 1e12, "device": torch.cuda.get_device_name(device) if cuda else str(device),
              "torch": torch.__version__}
    if cuda:
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if a.peak_tflops:
        result["mfu"] = result["achieved_tflops"] / a.peak_tflops
    return result


def gpu_bench(a) -> dict:
    import torch

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA GPU (--device meta counts the FLOPs per step without one; --device cpu "
                         "tries the code path on a small --unet-config)")
    families = ["sd1", "sdxl"] if a.family == "both" else [a.family]
    results = []
    for family in families:
        results.append(bench_family(family, a))
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the first UNet's memory, before the second is built
    return {"gpu": results}


def record_gpu(result: dict, a, argv: list[str]) -> None:
    from bench.train_bench import append_row, shown

    header = ["| date | device | command | UNet | px × batch, rank | it/s | images/s | peak GiB | TFLOP/step | MFU | torch |",
              "|" + " --- |" * 11]
    for r in result["gpu"]:
        fmt = lambda key, spec: format(r[key], spec) if key in r else "–"  # noqa: E731
        mfu = f"{r['mfu'] * 100:.1f} %" if "mfu" in r else "–"
        row = (f"| {datetime.now(timezone.utc).date()} | {r['device']}, {platform.machine()} {os.cpu_count()} cores | "
               f"`{shown(argv)}` | {r['family']} ({r['unet_parameters'] / 1e6:.0f} M) | "
               f"{r['resolution']} × {r['batch']}, r{r['rank']}{', GC' if r.get('gradient_checkpointing') else ''} | "
               f"{fmt('it_per_s', '.2f')} | {fmt('images_per_s', '.2f')} | {fmt('peak_memory_gib', '.1f')} | "
               f"{r['tflops_per_step']:.2f} | {mfu} | "
               f"{r['torch']} |")
        append_row(GPU_SECTION, GPU_INTRO, "train-bench-gpu", header, row)
