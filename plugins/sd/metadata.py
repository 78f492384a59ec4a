"""The ``ss_*`` metadata kohya's trainer writes into a LoRA (A1111 shows it: base model,
rank, alpha, steps, resolution, the training tags) plus the modelspec keys."""

from __future__ import annotations

import json
import time

from clood_candy.records import TrainConfig, TrainSet

BASE_VERSION = {"sd1": "sd_v1", "sdxl": "sdxl_base_v1-0"}
ARCHITECTURE = {"sd1": "stable-diffusion-v1", "sdxl": "stable-diffusion-xl-v1-base"}
OPTIMIZERS = {"adamw": "torch.optim.AdamW", "adamw8bit": "bitsandbytes.optim.AdamW8bit",
              "prodigy": "prodigyopt.Prodigy", "sgd": "torch.optim.SGD"}


def base_version(family: str, base_name: str, toy: bool) -> tuple[str, str]:
    """(ss_base_model_version, modelspec architecture). A LoRA of a base clood made (``toy``:
    the random tiny ones, and candy-mini) says it is that base's: named as SD1's, a tool would
    take it for a LoRA of a real SD1.5 checkpoint, match every key and fail on every shape."""
    if toy:
        return f"clood_{base_name}", f"clood-{base_name}" + ("-toy" if base_name.startswith("tiny") else "")
    return BASE_VERSION[family], ARCHITECTURE[family]


def _made_by_clood(base_name: str) -> str:
    if base_name.startswith("tiny"):
        return f"trained on clood's toy base '{base_name}' (random weights): loads on that toy only"
    return (f"trained on clood's miniature base '{base_name}' (learned from 64 px rendered candy): "
            "loads on that miniature only")


def targets_label(config: TrainConfig) -> str:
    """The layers the file adapts, in words: kohya's set ("full"), attention only, or the user's list."""
    words = {"full": "full (kohya's: attention, feed-forward, proj_in/proj_out; text encoders' attention and MLP)",
             "attention": "attention (q, k, v, out)"}[config.targets]
    if config.target_modules is None:
        return words
    return "unet: " + ", ".join(config.target_modules) + (f"; text encoders: {config.targets}"
                                                          if config.train_text_encoder else "")


def lora_metadata(*, family: str, base_name: str, config: TrainConfig, data: TrainSet, steps: int, target: int,
                  resolution: int, prediction_type: str, output_name: str, data_facts: dict[str, str],
                  toy: bool = False, version: tuple[str, str] | None = None) -> dict[str, str]:
    """``version``: (ss_base_model_version, modelspec architecture) for a family this module
    does not know (it brings its own); default: SD1's or SDXL's."""
    version, architecture = version or base_version(family, base_name, toy)
    lycoris = config.variant in ("loha", "lokr")
    args = {"algo": config.variant} if lycoris else {}
    if config.variant == "dora":
        args["dora_wd"] = "True"
    meta = {
        "ss_base_model_version": version,
        "ss_sd_model_name": base_name,
        "ss_v2": "False",
        "ss_network_module": "lycoris.kohya" if lycoris else "networks.lora",
        "ss_network_dim": str(config.rank),
        "ss_network_alpha": str(config.alpha),
        "ss_network_args": json.dumps(args) if args else "null",
        "ss_steps": str(steps),
        "ss_max_train_steps": str(target),
        "ss_resolution": f"({resolution}, {resolution})",
        "ss_learning_rate": str(config.learning_rate),
        "ss_unet_lr": str(config.learning_rate),
        "ss_text_encoder_lr": str(config.text_encoder_lr or config.learning_rate) if config.train_text_encoder else "0",
        "ss_network_train_unet_only": str(not config.train_text_encoder),
        "ss_lr_scheduler": config.lr_scheduler,
        "ss_lr_warmup_steps": str(config.warmup_steps),
        "ss_optimizer": OPTIMIZERS[config.optimizer],
        "ss_batch_size_per_device": str(config.batch_size),
        "ss_gradient_accumulation_steps": str(config.gradient_accumulation),
        "ss_mixed_precision": config.mixed_precision,
        "ss_noise_offset": str(config.noise_offset),
        "ss_min_snr_gamma": str(config.snr_gamma),
        "ss_loss_type": "huber" if config.loss == "huber" else "l2",
        "ss_huber_c": str(config.huber_c),
        "ss_v_parameterization": str(prediction_type == "v_prediction"),
        "ss_caption_dropout_rate": str(config.caption_dropout),
        "ss_shuffle_caption": str(config.shuffle_tags),
        "ss_keep_tokens": str(config.keep_tokens),
        "ss_min_timestep": str(config.timestep_min),
        "ss_max_timestep": str(config.timestep_max),
        "ss_seed": str(config.seed),
        "ss_clip_skip": "None",
        "ss_output_name": output_name,
        "ss_training_finished_at": str(int(time.time())),
        "ss_training_comment": f"trained with clood candy; trigger word: {data.trigger}",
        "trigger": data.trigger,
        "class_word": data.class_word,
        "clood_targets": targets_label(config),
        "clood_config": config.model_dump_json(),
        **({"clood_toy_base": _made_by_clood(base_name)} if toy else {}),
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": f"{architecture}/{'lycoris' if lycoris else 'lora'}",
        "modelspec.implementation": "diffusers",
        "modelspec.title": output_name,
        "modelspec.resolution": f"{resolution}x{resolution}",
        "modelspec.trigger_phrase": data.trigger,
        "modelspec.date": time.strftime("%Y-%m-%d"),
        **data_facts,
    }
    return meta
