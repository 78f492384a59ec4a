"""A loaded SD3 / SD3.5 base: an MMDiT that patches the latent itself, flow matching on a
fixed shift, three text encoders (CLIP-L and CLIP-G, whose pooled vectors are joined, and
T5, whose token embeddings follow theirs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from clood_candy_plugins.flow.base import FlowBase
from clood_candy_plugins.sd.denoise import Cond

# The diffusers SD3 example's LoRA targets (attention and its context projections) plus both
# feed-forwards; SD3.5's second attention (attn2) in its first blocks too. The last block
# reads the context but does not update it, so it has no context output or feed-forward.
_ATTN = r"attn2?\.(to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|to_add_out)"
TARGETS = {"full": rf"transformer_blocks\.\d+\.({_ATTN}|ff\.net\.(0\.proj|2)|ff_context\.net\.(0\.proj|2))",
           "attention": rf"transformer_blocks\.\d+\.{_ATTN}"}


class SD3Base(FlowBase):
    targets = TARGETS
    t5_name = "tokenizer_3"
    # SD3's paper samples σ from a logit-normal (0, 1); its scheduler's shift of 3 is for sampling.
    flow_defaults = {"timestep_sampling": "logit_normal"}
    clip_role = ("CLIP-L and CLIP-G: a vector per piece for the first 75 and a pooled one; "
                 "T5's vectors follow theirs, so what they cut still reaches the model through T5")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model_name": "Stable Diffusion 3", "real_base": "stabilityai/stable-diffusion-3.5-medium",
                "denoiser_words": "a transformer over 2×2 patches of the latent (SD3's MMDiT)",
                "text_encoder_words": "three text encoders: CLIP-L and CLIP-G (pooled and per token) and T5 (per token)",
                "lora_tools": ["ComfyUI"],
                "not_loaded_by": "Automatic1111 itself does not load SD3; ComfyUI does"}

    def encode_text(self, captions: list[str], resolution: int) -> Cond:
        embeds, _, pooled, _ = self.pipe.encode_prompt(prompt=captions, prompt_2=None, prompt_3=None, device=self.device,
                                                       num_images_per_prompt=1, do_classifier_free_guidance=False,
                                                       max_sequence_length=self.t5_window)
        return Cond(embeds, pooled)

    default_guidance = 5.0  # SD3's usual

    def draw(self, prompt: str, *, seed: int, steps: int | None = None, negative_prompt: str = "",
             guidance: float | None = None):
        generator = torch.Generator("cpu").manual_seed(int(seed))
        return self.pipe(prompt=prompt, negative_prompt=negative_prompt or None,
                         num_inference_steps=steps or (4 if self.is_toy else 28),
                         guidance_scale=self.guidance_scale if guidance is None else guidance,
                         height=self.resolution, width=self.resolution, max_sequence_length=self.t5_window,
                         generator=generator).images[0]

    def model_version(self) -> tuple[str, str]:
        if self.is_toy:
            return f"clood_{self.base}", f"clood-{self.base}-toy"
        large = "large" in self.base.lower()
        return "sd3", "stable-diffusion-v3" + ("-large" if large else "-medium")

    def write_lora(self, out_base: Path, state, config, metadata: dict[str, str]) -> tuple[Path, Path]:
        from clood_candy_plugins.flow.files import write_sd3_lora

        return write_sd3_lora(self.pipe, out_base, state, config, self.adapter_targets(config), metadata)

    def read_lora(self, path: Path, adapter_name: str) -> None:
        self.pipe.load_lora_weights(str(path), adapter_name=adapter_name)

    def verify_lora(self, kohya: Path, *, config, resolution: int, prompt: str, diffusers_file: Path | None = None):
        from clood_candy_plugins.flow.verify import verify_sd3_lora

        return verify_sd3_lora(self, kohya, config=config, prompt=prompt, diffusers_file=diffusers_file)
