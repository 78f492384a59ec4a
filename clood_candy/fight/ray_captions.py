"""The caption fight's captioners on Ray: each one that runs a model (``runs_a_model``) is a
Ray task with the fight's per-trial resources ([fight] gpus_per_trial, …), so on a
machine with several GPUs they caption at once, one model per GPU; an API captioner
(Claude) stays in the driver, where its key is, and runs while the workers do.

Captioning is one call per captioner per run, so a task that loads the model, captions
every photo and ends holds the model exactly as long as an actor would. What each returns
is the same CaptionResult records the driver would have made, so the fight and its
verdicts are the local executor's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from clood_candy.context import StageContext
from clood_candy.fight.ray_rounds import RayRounds, plugin_env
from clood_candy.fight.ray_worker import CaptionReply, CaptionRequest, run_captioner
from clood_candy.records import CaptionResult, Photo, TrialRun
from clood_candy.runstore import without_secrets

Outcome = tuple[dict[str, CaptionResult] | None, str | None]


class RemoteCaptioners:
    """``start`` each model captioner on Ray; ``result(name)`` waits for its captions."""

    def __init__(self, rounds: RayRounds | None, ctx: StageContext):
        self.rounds, self.ctx = rounds, ctx
        self.pending: dict[str, Any] = {}
        self.placements: dict[str, TrialRun] = {}

    def start(self, names: list[str], photos: list[Photo]) -> None:
        if self.rounds is None:
            return
        ray, ctx = self.rounds.ray, self.ctx
        task = ray.remote(run_captioner).options(max_retries=ctx.config.fight.max_retries, retry_exceptions=False,
                                                 **self.rounds.resources)
        env, dirs = plugin_env()
        config = without_secrets(ctx.config.model_dump(mode="json"))
        for name in names:
            if ctx.registry.get("captioner", name).runs_a_model:
                request = CaptionRequest(config=config, run_root=str(ctx.run.root.resolve()), captioner=name,
                                         photos=photos, submitted=time.time(), plugin_env=env, plugin_dirs=dirs)
                self.pending[name] = task.remote(request.model_dump(mode="json"))
        if self.pending:
            ctx.progress.say(f"  on Ray: {', '.join(self.pending)}")

    def __contains__(self, name: str) -> bool:
        return name in self.pending

    def result(self, name: str) -> Outcome:
        """(results, None), or (None, why it sat out or failed), as the driver's own run says it."""
        ray = self.rounds.ray
        try:
            reply = CaptionReply.model_validate(ray.get(self.pending.pop(name)))
        except ray.exceptions.RayTaskError as exc:  # the captioner raised: it forfeits, the run goes on
            cause = getattr(exc, "cause", None) or exc
            self.ctx.log.warning("captioner %s failed on Ray: %s", name, cause)
            return None, f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}".rstrip(": ")
        except ray.exceptions.RayError as exc:  # its worker or node was lost more often than max_retries
            return None, f"lost on Ray: {type(exc).__name__}"
        self.placements[name] = reply.trial
        return reply.results, reply.why


@contextmanager
def remote_captioners(ctx: StageContext, names: list[str]) -> Iterator[RemoteCaptioners]:
    """Local executor, or no captioner that runs a model: none is remote. Ray: connected
    for the stage, the trial's resources checked against the cluster."""
    models = [n for n in names if ctx.registry.get("captioner", n).runs_a_model]
    if ctx.config.fight.executor != "ray" or not models:
        yield RemoteCaptioners(None, ctx)
        return
    with RayRounds(ctx, None, remote_task=False) as rounds:
        yield RemoteCaptioners(rounds, ctx)
