"""A loaded flow-matching transformer base (FlowBase), and Flux.1's (FluxBase; SD3's is in
sd3.py). It is an SDBase in everything these share with SD (the caches of latents and
conditioning, the lock, sampling adapters, the training loop that drives it) and overrides
what differs: the model is a transformer over latent patches, it learns flow matching, its
conditioning is T5's token embeddings plus CLIP's pooled vector, and Flux's LoRA files use
Flux's key layout (keymap.py, verify.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from clood_candy.errors import UserError
from clood_candy_plugins.flow.objective import FlowMatching, FlowSettings
from clood_candy_plugins.sd.base import SDBase
from clood_candy_plugins.sd.denoise import Cond

# The diffusers Flux example's LoRA targets (attention and its context projections, both
# feed-forwards) plus the single blocks' MLP input and output, which kohya's Flux LoRA also
# trains: everything the fused kohya modules hold except the modulations.
_DOUBLE_ATTN = r"attn\.(to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|to_add_out)"
_SINGLE_ATTN = r"attn\.(to_q|to_k|to_v)"
TARGETS = {
    "full": rf"(transformer_blocks\.\d+\.({_DOUBLE_ATTN}|ff\.net\.(0\.proj|2)|ff_context\.net\.(0\.proj|2))"
            rf"|single_transformer_blocks\.\d+\.({_SINGLE_ATTN}|proj_mlp|proj_out))",
    "attention": rf"(transformer_blocks\.\d+\.{_DOUBLE_ATTN}|single_transformer_blocks\.\d+\.{_SINGLE_ATTN})",
}


class FlowBase(SDBase):
    """What Flux.1 and SD3 share: a transformer that learns flow matching, read with T5."""

    native_resolution = 1024  # both were trained up to 1024² (and train well at 512)
    flow_defaults: dict[str, Any] = {}  # the family's own FlowSettings defaults
    t5_name = "tokenizer_2"  # the pipeline's T5 tokenizer

    def __init__(self, loaded, base: str, *, options: dict[str, Any], **kwargs):
        self.flow = FlowSettings.from_options({**self.flow_defaults, **options}, table=loaded.family)
        window = int(options.get("max_sequence_length", 0)) or None
        super().__init__(loaded, base, **kwargs)
        tokenizer_window = getattr(self.pipe, self.t5_name).model_max_length
        # Flux.1-dev and SD3 read up to 512 T5 tokens, schnell 256; a tokenizer that says less (the toy's) is the limit.
        self.t5_window = min(window or (256 if "schnell" in base.lower() else 512), tokenizer_window)
        # The caption budget is T5's (it adds only </s>): CLIP's 75 bound only its own share (encoder_windows).
        self.token_window = self.t5_window - 1

    clip_role = ""  # what the CLIP encoder(s) give the model, for the report

    def tokens(self, text: str) -> list[str]:
        return self.tokens_t5(text)

    def encoder_windows(self) -> list[tuple[str, int, Any, str]]:
        """(encoder, window, its tokenizer, what it gives the model) for each text encoder:
        the report says what each one drops."""
        clip = self.pipe.tokenizer
        return [("T5", self.token_window, self.tokens_t5, "one vector per piece: the caption the model reads"),
                ("CLIP-L", clip.model_max_length - 2, clip.tokenize, self.clip_role)]

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.pipe.transformer

    def describe(self) -> dict[str, Any]:
        # Read by the report (with defaults for SD): what this architecture is, in words, and where its LoRA loads.
        return {**super().describe(), "denoiser": "transformer",
                "objective_words": "flow matching (it predicts the straight line from photo to noise)"}

    @property
    def prediction_type(self) -> str:
        return "flow_matching"

    def sampling_scheduler(self):
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler.from_config(self.scheduler_config)

    def objective(self, prediction_type: str | None = None) -> FlowMatching:
        return FlowMatching(self.flow, self.scheduler_config, self.patches,
                            bool(getattr(self.denoiser.config, "guidance_embeds", False)))

    @property
    def patches(self) -> bool:
        """True when the objective hands the model 2×2 patches as tokens (Flux); SD3 patches inside."""
        return False

    def tokens_t5(self, text: str) -> list[str]:
        return getattr(self.pipe, self.t5_name).tokenize(text)

    def adapter_targets(self, config) -> str | list[str]:
        if config.train_text_encoder:
            raise UserError(f"train_text_encoder is not available for {self.describe()['model_name']} yet: "
                            "train the transformer only (kohya's default, too)")
        if config.variant != "lora":
            raise UserError(f"variant {config.variant} is not available for {self.describe()['model_name']} yet: "
                            "use variant = \"lora\"")
        return list(config.target_modules) if config.target_modules is not None else self.targets[config.targets]

    def lora_facts(self) -> dict[str, str]:
        # kohya's names for the flow-matching settings, so its tools show them
        f = self.flow
        return {"ss_timestep_sampling": f.timestep_sampling, "ss_discrete_flow_shift": str(f.discrete_flow_shift),
                "ss_sigmoid_scale": str(f.logit_std), "ss_weighting_scheme": f.loss_weighting,
                "ss_guidance_scale": str(f.guidance), "ss_model_prediction_type": "raw"}

    # --- what the report shows: the same lessons on a straight noising line

    def signal_share(self, timesteps: list[int]) -> list[float]:
        """The image's share of the noised latent's variance at σ = t/1000: (1−σ)² / ((1−σ)² + σ²)."""
        shares = []
        for t in timesteps:
            s = min(max(t, 0), 1000) / 1000
            shares.append((1 - s) ** 2 / ((1 - s) ** 2 + s ** 2))
        return shares

    @torch.no_grad()
    def denoise_steps(self, image: Path, caption: str, timesteps: list[int], *, seed: int = 0):
        """The latent noised to σ = t/1000 and the transformer's one-step guess of the clean
        latent from it (x₀ = x_σ − σ·v, v being its predicted direction), decoded."""
        objective = self.objective()
        model = self.denoiser
        device, dtype = self.device, model.dtype
        out = []
        with self._base_alone():
            res = self.resolution - self.resolution % 16
            clean = self.latents([Path(image)], res).to(device)
            noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed)).to(device)
            cond = self.encode_text([caption], res).to(device, dtype)
            for t in timesteps:
                sigma = torch.tensor([min(max(t, 0), 1000) / 1000], device=device)
                noisy, _ = objective.noised(clean, noise, sigma)
                direction = objective.predict(model, noisy.to(dtype), sigma, cond).float()
                guess = noisy - sigma.view(-1, 1, 1, 1) * direction
                out.append((int(t), self.decode_latents(noisy[0].cpu().numpy()),
                            self.decode_latents(guess[0].cpu().numpy())))
        return out

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.denoiser.parameters())


class FluxBase(FlowBase):
    targets = TARGETS
    clip_role = "one pooled vector from its first 75 pieces; what it cuts still reaches the model through T5"

    @property
    def patches(self) -> bool:
        return True

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model_name": "Flux.1", "real_base": "black-forest-labs/FLUX.1-dev",
                "denoiser_words": "a transformer that reads the latent as 2×2 patches (Flux.1's MMDiT)",
                "text_encoder_words": "two text encoders: CLIP-L (one pooled vector) and T5 (one vector per token)",
                "lora_tools": ["ComfyUI", "Forge"],
                "not_loaded_by": "Automatic1111 itself does not load Flux; its fork Forge does"}

    def encode_text(self, captions: list[str], resolution: int) -> Cond:
        embeds, pooled, _ = self.pipe.encode_prompt(prompt=captions, prompt_2=None, device=self.device,
                                                    num_images_per_prompt=1, max_sequence_length=self.t5_window)
        return Cond(embeds, pooled)

    @property
    def default_guidance(self) -> float:
        return 3.5 if self.denoiser.config.guidance_embeds else 0.0  # dev's usual; schnell ignores it

    def draw(self, prompt: str, *, seed: int, steps: int | None = None, negative_prompt: str = "",
             guidance: float | None = None):
        generator = torch.Generator("cpu").manual_seed(int(seed))
        guidance = self.guidance_scale if guidance is None else guidance
        return self.pipe(prompt=prompt, num_inference_steps=steps or (4 if self.is_toy else 28), guidance_scale=guidance,
                         height=self.resolution, width=self.resolution, max_sequence_length=self.t5_window,
                         generator=generator).images[0]

    # --- LoRA files: Flux's layouts (keymap.py), checked by verify.py

    def model_version(self) -> tuple[str, str]:
        if self.is_toy:
            return f"clood_{self.base}", f"clood-{self.base}-toy"
        return "flux1", "flux-1-schnell" if "schnell" in self.base.lower() else "flux-1-dev"

    def write_lora(self, out_base: Path, state, config, metadata: dict[str, str]) -> tuple[Path, Path]:
        from clood_candy_plugins.flow.files import write_flux_lora

        return write_flux_lora(self.pipe, out_base, state, config, self.adapter_targets(config), metadata)

    def read_lora(self, path: Path, adapter_name: str) -> None:
        from clood_candy_plugins.flow.files import read_flux_lora

        read_flux_lora(self.pipe, path, adapter_name)

    def verify_lora(self, kohya: Path, *, config, resolution: int, prompt: str, diffusers_file: Path | None = None):
        from clood_candy_plugins.flow.verify import verify_flux_lora

        return verify_flux_lora(self, kohya, config=config, prompt=prompt, diffusers_file=diffusers_file)
