"""What clood knows about Hugging Face ids without asking the Hub: which family a
well-known base is, which ids moved, and which names are not Stable Diffusion UNets.

Names alone are a weak signal (an SDXL fine-tune need not say "xl"), so the ids users
name most often are listed; a cached ``model_index.json`` beats every guess here.
"""

from __future__ import annotations

KNOWN_FAMILIES = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "sd1",
    "stable-diffusion-v1-5/stable-diffusion-inpainting": "sd1",
    "CompVis/stable-diffusion-v1-4": "sd1",
    "Lykon/dreamshaper-8": "sd1",
    "SG161222/Realistic_Vision_V6.0_B1_noVAE": "sd1",
    "stabilityai/stable-diffusion-xl-base-1.0": "sdxl",
    "stabilityai/sdxl-turbo": "sdxl",
    "playgroundai/playground-v2.5-1024px-aesthetic": "sdxl",
    "RunDiffusion/Juggernaut-XL-v9": "sdxl",
    "SG161222/RealVisXL_V4.0": "sdxl",
    "Lykon/dreamshaper-xl-1-0": "sdxl",
}

# Removed from the Hub (RunwayML deleted its repositories in 2024); the maintained copy
# has the same files. A copy already in the user's cache is still used as it is.
MOVED = {
    "runwayml/stable-diffusion-v1-5": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "runwayml/stable-diffusion-inpainting": "stable-diffusion-v1-5/stable-diffusion-inpainting",
}

# Transformer (flow-matching / DiT) bases: a UNet family must not claim them.
NOT_UNET = ("flux", "stable-diffusion-3", "sd3", "sd-3", "auraflow", "pixart", "hunyuan", "qwen-image",
            "z-image", "sana", "lumina", "cogview", "kolors", "wan2", "hidream", "chroma")

_LOWER = {k.lower(): v for k, v in KNOWN_FAMILIES.items()}


def known_family(repo_id: str) -> str | None:
    return _LOWER.get(repo_id.lower()) or _LOWER.get(MOVED.get(repo_id, "").lower())


def is_not_unet(repo_id: str) -> bool:
    name = repo_id.lower()
    return any(hint in name for hint in NOT_UNET)


def maintained_id(repo_id: str, cached: bool) -> str:
    """The id to download: a moved repository's new home unless the old one is cached."""
    return repo_id if cached or repo_id not in MOVED else MOVED[repo_id]
