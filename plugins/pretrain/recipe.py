"""The candy-mini recipe: every size, step count and learning rate in one typed record.

Sized for the 2-core CPU machine (the whole recipe in well under 3 hours, measured in
BENCHMARKS.md): 64 px images, a VAE that halves twice (16 × 16 × 4 latents, 12× fewer
numbers than pixels), a UNet with cross-attention at its two coarser levels only (attention
over 256 positions at 16 × 16 doubled the step time for little gain at this size), and a
CLIP pair whose text half becomes the pipeline's text encoder, as OpenAI's CLIP text model
is SD1's.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class StageSteps(BaseModel):
    steps: int = Field(ge=1)
    batch: int = Field(ge=1)
    lr: float = Field(gt=0)
    warmup: int = Field(0, ge=0)
    checkpoint_every: int = Field(250, ge=1)


class Recipe(BaseModel):
    name: str = "candy-mini"
    seed: int = 0
    shots: int = Field(20000, ge=10, description="studio shots rendered for the training set")
    render_side: int = Field(96, description="rendered at this size, then downsampled (less aliasing)")
    side: int = Field(64, description="training and sampling resolution, px")
    holdout: int = Field(256, ge=8, description="shots kept out of training, for the VAE's PSNR and curves")
    caption_dropout: float = Field(0.1, ge=0, le=1, description="empty captions: classifier-free guidance")
    clip: StageSteps = StageSteps(steps=1000, batch=128, lr=5e-4, warmup=100)
    vae: StageSteps = StageSteps(steps=2500, batch=32, lr=1e-3, warmup=100)
    vae_crop: int = Field(32, description="VAE trains on random crops (it is fully convolutional)")
    vae_kl: float = 1e-6
    # The decoder again, encoder frozen, on shots with their colours turned: any colour, not
    # just the palette's (stages.tune_vae_decoder). None: the VAE stage's decoder ships.
    vae_decoder: StageSteps | None = StageSteps(steps=1500, batch=32, lr=3e-4, warmup=50)
    unet: StageSteps = StageSteps(steps=4000, batch=32, lr=4e-4, warmup=200, checkpoint_every=250)
    # A second cosine cycle from where the first ended (a warm restart): the UNet keeps its
    # weights and EMA, the optimizer starts afresh at a lower rate. Sharper beans, same batches' law.
    unet_refine: StageSteps | None = StageSteps(steps=3000, batch=32, lr=2e-4, warmup=100, checkpoint_every=250)
    text_lr: float = Field(5e-5, description="the text encoder keeps learning with the UNet, slowly")
    ema: float = Field(0.999, ge=0, lt=1)
    # Min-SNR-γ on the x0 error, counted from v-prediction's own weight (SNR + 1), so the
    # noisiest steps — where a zero-terminal-SNR model must draw the layout from the text
    # alone — keep weight 1 rather than the min(SNR, γ) → 0 of the ε-form.
    min_snr_gamma: float = 5.0
    snapshot_every: int = Field(500, ge=1, description="UNet steps between snapshot grids")

    def smoke(self) -> Recipe:
        """A few steps of everything: proves the recipe end to end in seconds (CI)."""
        tiny = {"steps": 3, "checkpoint_every": 2, "warmup": 1}
        return self.model_copy(update={
            "shots": 48, "holdout": 8, "snapshot_every": 2,
            "clip": self.clip.model_copy(update={**tiny, "batch": 8}),
            "vae": self.vae.model_copy(update={**tiny, "batch": 4}),
            "vae_decoder": self.vae_decoder and self.vae_decoder.model_copy(update={**tiny, "batch": 4}),
            "unet": self.unet.model_copy(update={**tiny, "batch": 4}),
            "unet_refine": self.unet_refine and self.unet_refine.model_copy(update={**tiny, "batch": 4})})


TEXT_HIDDEN = 48  # also the UNet's cross-attention width; 48 keeps all weights under 30 MB (49,408 token rows)


def clip_config():
    from transformers import CLIPConfig

    # bos/eos/pad ids as the real CLIP BPE numbers them; eos marks the pooled token.
    text = dict(vocab_size=49408, hidden_size=TEXT_HIDDEN, intermediate_size=256, num_hidden_layers=4,
                num_attention_heads=4, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                pad_token_id=49407, hidden_act="quick_gelu")
    vision = dict(image_size=64, patch_size=8, hidden_size=96, intermediate_size=384, num_hidden_layers=4,
                  num_attention_heads=4, hidden_act="quick_gelu")
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=64)


def vae_model():
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(16, 32, 64), layers_per_block=1, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                         norm_num_groups=8, sample_size=64)


def unet_model():
    from diffusers import UNet2DConditionModel

    # layers_per_block=2 keeps LDM's input_blocks_{1+3i+j} numbering, which LoRA key
    # conversion relies on.
    return UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 64, 128),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN, attention_head_dim=8, norm_num_groups=32)


# SD1's betas, rescaled to zero terminal SNR, with v-prediction (Lin et al. 2023, "Common
# diffusion noise schedules and sample steps are flawed"; SD2 and NovelAI's v-models). The
# first base, trained on SD1's schedule as is (ε, 0.0047 of the signal left at t = 999, and
# offset noise later), learned colours crudely and backgrounds not at all: the noisiest step
# still held the noise's own mean colour, so the text never had to set it. "trailing"
# spacing samples from t = 999, the pure noise the model learned to start from.
SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "clip_sample": False, "steps_offset": 1,
            "prediction_type": "v_prediction", "rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}
