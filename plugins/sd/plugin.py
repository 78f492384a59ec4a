"""Registers the Stable Diffusion families (``sd1``, ``sdxl``) and their LoRA trainer."""

from clood_candy.hookspecs import hookimpl


@hookimpl
def register_model_families(register):
    # Imported here: diffusers/transformers cost seconds, paid only when a family is used.
    from clood_candy_plugins.sd.family import SD1Family, SDXLFamily

    register(SD1Family())
    register(SDXLFamily())
