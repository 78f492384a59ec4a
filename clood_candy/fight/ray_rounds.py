"""The Ray executor for the config fight: a round's configs run at once, each a Ray task
with its resources ([fight] gpus_per_trial, cpus_per_trial, memory_per_trial), so Ray
places them on free GPUs (it sets CUDA_VISIBLE_DEVICES) and nodes.

Why Ray tasks driven by our own halving rather than Ray Tune: the rungs and survivors
must be the local executor's to the letter (same seeds, same answers), and a trial's
state is the family's checkpoint in the run folder, which any worker continues from.
Ray does the rest: placement, retrying a task whose worker or node was lost
(max_retries; the retry continues from the newest checkpoint), and the cluster.
A failure the trainer reports (out of memory, NaN, a bad recipe) or an exception in the
trial is not retried: it forfeits with its reason, as locally. Ctrl-C cancels the
round's trials and leaves their checkpoints: ``--resume`` continues the fight.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from typing import Any

from clood_candy.context import StageContext
from clood_candy.errors import UserError
from clood_candy.fight.halving import Trained
from clood_candy.fight.ray_worker import TrialRequest, TrialResult, run_trial
from clood_candy.plugins import loaded_plugin_dirs
from clood_candy.records import TrainConfig, TrainSet
from clood_candy.runstore import without_secrets

NEEDS_RAY = "[fight] executor = \"ray\" needs Ray: pip install 'clood-candy[ray]'"
PLUGIN_ENV = ("CLOOD_LOAD_PLUGINS", "CLOOD_PLUGINS_DIR")
WAIT_S = 0.5  # ray.wait in short slices, so Ctrl-C reaches the driver at once


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError(NEEDS_RAY) from None
    return ray


def connect(ray: Any, address: str) -> bool:
    """Join the Ray instance this process already has, else connect to ``address`` (empty:
    start or join one on this machine). True when it connected here (and should disconnect)."""
    address = address.strip()
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"log_to_driver": False}
    if not address:
        options["include_dashboard"] = False  # the dashboard needs ray[default]; nothing here reads it
    try:
        ray.init(address=address or None, **options)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = address or "this machine"
        raise UserError(f"[fight] ray_address: could not reach a Ray instance at {where}: "
                        f"{str(exc).splitlines()[0]}") from None
    return True


def plugin_env() -> tuple[dict[str, str], list[str]]:
    """What a worker needs to load the plugins the driver has: their environment and folders."""
    return ({k: os.environ[k] for k in PLUGIN_ENV if k in os.environ}, [str(d) for d in loaded_plugin_dirs()])


class RayRounds:
    """``with RayRounds(ctx, data) as rounds: successive_halving(..., train_round=rounds.train_round)``.
    Joins the Ray instance already initialised in this process, else connects to
    ``[fight] ray_address`` (empty: starts or joins one on this machine) and, if it
    connected, disconnects at the end."""

    def __init__(self, ctx: StageContext, data: TrainSet | None, *, remote_task: bool = True):
        self.ctx, self.data, self.settings = ctx, data, ctx.config.fight
        self.ray = import_ray()
        self.connected_here = False
        self.remote_task = remote_task  # False: only connected (the caption fight makes its own tasks)

    def __enter__(self) -> "RayRounds":
        ray = self.ray
        self.connected_here = connect(ray, self.settings.ray_address)
        self.resources = self._resources()
        if self.remote_task:
            self.remote = ray.remote(run_trial).options(max_retries=self.settings.max_retries,
                                                        retry_exceptions=False, **self.resources)
        what = "Config fight" if self.remote_task else "Caption fight"
        self.ctx.progress.say(f"{what} on Ray: {self._cluster()}; each trial {_describe(self.resources)}")
        return self

    def __exit__(self, *exc_info) -> None:
        if self.connected_here:
            self.ray.shutdown()

    def _resources(self) -> dict[str, float]:
        """Ray's options for one trial; a trial no node could ever take is a one-line error."""
        s, nodes = self.settings, [n for n in self.ray.nodes() if n.get("Alive")]
        gpus = s.gpus_per_trial
        if gpus is None:  # a trial on a GPU wherever the cluster has them
            gpus = 1.0 if any(n["Resources"].get("GPU", 0) > 0 for n in nodes) else 0.0
        wanted = {"num_cpus": s.cpus_per_trial, "num_gpus": gpus}
        if s.memory_per_trial:
            wanted["memory"] = s.memory_per_trial * 1024**3
        need = {"num_cpus": "CPU", "num_gpus": "GPU", "memory": "memory"}
        fits = any(all(n["Resources"].get(need[k], 0) >= v for k, v in wanted.items() if v) for n in nodes)
        if not fits:
            raise UserError(f"no node of the Ray cluster ({self._cluster()}) has what [fight] asks for one trial: "
                            f"{_describe(wanted)}")
        return {k: v for k, v in wanted.items() if v or k == "num_gpus"}

    def _cluster(self) -> str:
        total = self.ray.cluster_resources()
        nodes = sum(1 for n in self.ray.nodes() if n.get("Alive"))
        return f"{nodes} node(s), {total.get('CPU', 0):g} CPU, {total.get('GPU', 0):g} GPU"

    def _request(self, config: TrainConfig, steps: int | None) -> dict:
        env, dirs = plugin_env()
        return TrialRequest(config=without_secrets(self.ctx.config.model_dump(mode="json")),
                            run_root=str(self.ctx.run.root.resolve()), data=self.data, recipe=config, steps=steps,
                            token=uuid.uuid4().hex, submitted=time.time(), plugin_env=env,
                            plugin_dirs=dirs).model_dump(mode="json")

    def train_round(self, entries: list[tuple[TrainConfig, int]]) -> dict[str, Trained]:
        """Every config of the round at once; each result as it comes in."""
        ray = self.ray
        pending = {self.remote.remote(self._request(config, steps)): config.name for config, steps in entries}
        results: dict[str, Trained] = {}
        budget = max((steps for _, steps in entries), default=0)
        with self.ctx.progress.task(f"Config fight: {len(entries)} trials → {budget} steps on Ray",
                                    total=len(entries)) as advance:
            try:
                while pending:
                    done, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_S)
                    for ref in done:
                        name = pending.pop(ref)
                        results[name] = self._result(ref)
                        trial = results[name].trial
                        advance(1, note=f"{name} on {trial.node} {trial.device}" if trial else f"{name} failed")
            except KeyboardInterrupt:
                self._cancel(list(pending))
                raise
        return results

    def _result(self, ref) -> Trained:
        ray = self.ray
        try:
            got = TrialResult.model_validate(ray.get(ref))
        except ray.exceptions.RayTaskError as exc:  # the trial raised: deterministic, not retried
            cause = getattr(exc, "cause", None) or exc
            return Trained(loss=math.inf, error=f"{type(cause).__name__}: {_first_line(cause)}")
        except ray.exceptions.RayError as exc:  # its worker or node was lost more often than max_retries
            return Trained(loss=math.inf, error=f"lost on Ray after {self.settings.max_retries + 1} attempt(s): "
                                                f"{type(exc).__name__}: {_first_line(exc)}")
        outcome = got.outcome
        if outcome.error:
            return Trained(loss=math.inf, error=f"RuntimeError: {outcome.error}", trial=got.trial)
        loss = outcome.final_val_loss if outcome.final_val_loss is not None else math.inf
        return Trained(loss=loss, trial=got.trial, outcome=outcome)

    def _cancel(self, refs: list) -> None:
        """Ctrl-C: stop the round's trials on the cluster; their checkpoints stay for --resume."""
        for ref in refs:
            self.ray.cancel(ref, force=True)
        self.ctx.progress.say(f"Interrupted: cancelled {len(refs)} trial(s) on Ray; --resume continues the fight "
                              "from their checkpoints")


def _describe(resources: dict[str, float]) -> str:
    parts = [f"{resources.get('num_cpus', 0):g} CPU", f"{resources.get('num_gpus', 0):g} GPU"]
    if resources.get("memory"):
        parts.append(f"{resources['memory'] / 1024**3:g} GB memory")
    return ", ".join(parts)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
