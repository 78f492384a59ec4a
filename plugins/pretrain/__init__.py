"""Pretraining: the project's own miniature Stable Diffusion (``candy-mini``), trained from
nothing on the candy studio's renders."""
