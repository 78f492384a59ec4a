"""Real-size SD1.5 / SDXL pipelines with random weights, as local diffusers folders: the
shipped configs (the real architectures) and the real CLIP tokenizer, no download.
Built once per machine under clood's cache; several GB each."""

from pathlib import Path


def random_weight_folder(family: str, dtype: str = "fp32") -> Path:
    """``dtype`` "bf16": weights stored in bfloat16 (SDXL in fp32 is 14 GB on disk)."""
    import torch
    from clood_candy_plugins.sd.cache import build_once, cache_dir
    from clood_candy_plugins.sd.loading import _pipeline_class, configs_folder
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    configs = configs_folder(family)

    def build(folder: Path) -> None:
        torch.manual_seed(0)
        parts = {
            "unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(configs / "unet")),
            "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(configs / "vae")),
            "scheduler": DDPMScheduler.from_pretrained(configs / "scheduler"),
            "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(configs / "text_encoder")),
            "tokenizer": CLIPTokenizer.from_pretrained(configs / "tokenizer"),
        }
        if family == "sdxl":
            parts["text_encoder_2"] = CLIPTextModelWithProjection(
                CLIPTextConfig.from_pretrained(configs / "text_encoder_2"))
            parts["tokenizer_2"] = CLIPTokenizer.from_pretrained(configs / "tokenizer_2")
        else:
            parts.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe = _pipeline_class(family)(**parts)
        if dtype == "bf16":
            pipe.to(torch.bfloat16)
        pipe.save_pretrained(folder, safe_serialization=True)

    return build_once(cache_dir() / "random-weights" / f"{family}-{dtype}", build)
