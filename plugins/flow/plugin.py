"""Registers the flow-matching transformer families, ``flux`` (Flux.1) and ``sd3`` (SD3 /
SD3.5), exactly as a third-party package would."""

from clood_candy.hookspecs import hookimpl


@hookimpl
def register_model_families(register):
    from clood_candy_plugins.flow.family import FluxFamily, SD3Family  # diffusers is imported on first use

    register(FluxFamily())
    register(SD3Family())
