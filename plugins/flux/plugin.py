"""Registers the Flux.1 family (``flux``) exactly as a third-party package would."""

from clood_candy.hookspecs import hookimpl


@hookimpl
def register_model_families(register):
    from clood_candy_plugins.flux.family import FluxFamily  # diffusers is imported on first use

    register(FluxFamily())
