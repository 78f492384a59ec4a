"""The plugin hooks. Every built-in stage registers through these, exactly as a
third-party package would (entry point group ``clood_candy``)."""

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("clood_candy")
hookimpl = HookimplMarker("clood_candy")


@hookspec
def register_captioners(register):
    """Call ``register(captioner)`` for each :class:`clood_candy.fighters.Captioner`."""


@hookspec
def register_judges(register):
    """Call ``register(judge)`` for each :class:`clood_candy.fighters.Judge`."""


@hookspec
def register_preparers(register):
    """Call ``register(preparer)`` for each :class:`clood_candy.stages.Preparer`."""


@hookspec
def register_model_families(register):
    """Call ``register(family)`` for each :class:`clood_candy.stages.ModelFamily`."""


@hookspec
def register_samplers(register):
    """Call ``register(sampler)`` for each :class:`clood_candy.stages.Sampler`."""


@hookspec
def register_reporters(register):
    """Call ``register(reporter)`` for each :class:`clood_candy.stages.Reporter`."""


@hookspec
def register_upscalers(register):
    """Call ``register(upscaler)`` for each :class:`clood_candy.stages.Upscaler`:
    prep offers it for photos too small for the training resolution."""


@hookspec
def register_commands(cli):
    """Add click commands to the ``clood`` group."""


@hookspec(firstresult=True)
def review_before_training(run_dir, port, open_browser, echo):
    """``dogfood candy --review``: serve a review of ``run_dir`` until the user asks to train
    (return True) or stops (False; Ctrl-C). Return None when this plugin does not review."""
