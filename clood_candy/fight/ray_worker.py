"""One config's round on a Ray worker (and a captioner's turn in the caption fight): the
worker loads the model family and base itself, through the plugin registry as the driver
would (a loaded base does not travel), trains the config to the round's steps in the run
folder — continuing from its newest checkpoint there, which is why that folder must be on
storage every node reads — and says where it ran.

Imported by Ray on the worker; nothing here needs Ray at import time.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

from pydantic import BaseModel

from clood_candy import fsutil
from clood_candy.config import CloodConfig
from clood_candy.context import StageContext
from clood_candy.plugins import build_registry, load_plugin_dir, load_plugins
from clood_candy.progress import Progress
from clood_candy.records import CaptionResult, Photo, TrainConfig, TrainOutcome, TrainSet, TrialRun
from clood_candy.runstore import RunStore, fingerprint

TRIAL_FILE = "trial.json"  # in the config's folder: where its round runs now, for the user (and the tests)


class TrialRequest(BaseModel):
    """What the driver sends: plain data, no model, no secret."""

    config: dict  # the run's config without secrets (run.json's own rule)
    run_root: str
    data: TrainSet
    recipe: TrainConfig
    steps: int | None  # None: the config's full length
    token: str  # one per submission: an attempt that finds its own token ran before and was lost
    submitted: float  # the driver's time.time() at submission
    plugin_env: dict[str, str]  # CLOOD_LOAD_PLUGINS and the like, as the driver had them
    plugin_dirs: list[str]


class TrialResult(BaseModel):
    outcome: TrainOutcome
    trial: TrialRun


# A worker process that runs several trials keeps the base it loaded (Ray reuses CPU
# workers; a GPU worker exits after each task, so its device is never stale).
_bases: dict[str, object] = {}


def run_trial(request: dict) -> dict:
    """The Ray task's body: train one config to the round's steps; returns a TrialResult."""
    import ray

    began = time.time()
    req = TrialRequest.model_validate(request)
    _load_plugins(req.plugin_env, req.plugin_dirs)
    config = CloodConfig.model_validate(req.config)
    out_dir = Path(req.run_root) / "train" / "fight" / req.recipe.name
    context = ray.get_runtime_context()
    gpus = [str(g) for g in context.get_accelerator_ids().get("GPU", [])]
    node = f"{socket.gethostname()} ({ray.util.get_node_ip_address()})"
    attempts = _note_attempt(out_dir, req, node)
    ctx = StageContext(run=RunStore.open(Path(req.run_root)), config=config, registry=build_registry(),
                       progress=Progress(quiet=True), log=_trial_log(out_dir, req.recipe.name))
    key = fingerprint(config.base, config.family, config.plugins, config.prep.model_dump(mode="json"))
    if key not in _bases:
        _bases.clear()
        _bases[key] = ctx.base()
    ctx._base = _bases[key]
    first_step: list[int] = []
    outcome = ctx.family().train(ctx._base, req.data, req.recipe, out_dir, ctx, max_steps=req.steps,
                                 on_step=lambda step, loss: first_step or first_step.append(step))
    trial = TrialRun(node=node, node_id=context.get_node_id(), pid=os.getpid(),
                     device=f"GPU {','.join(gpus)}" if gpus else "CPU",
                     waited_s=round(max(0.0, began - req.submitted), 3), seconds=round(time.time() - began, 3),
                     attempts=attempts, resumed_from=first_step[0] - 1 if first_step else None)
    return TrialResult(outcome=outcome, trial=trial).model_dump(mode="json")


def _note_attempt(out_dir: Path, req: TrialRequest, node: str) -> int:
    """Which attempt this is at the submission (Ray retries a lost worker's task), written
    where the user and other nodes can see it."""
    path = out_dir / TRIAL_FILE
    before = fsutil.read_json(path) if path.is_file() else {}
    attempt = int(before.get("attempt", 0)) + 1 if before.get("token") == req.token else 1
    fsutil.write_json(path, {"token": req.token, "attempt": attempt, "steps": req.steps, "node": node,
                             "pid": os.getpid(), "started": time.time()})
    return attempt


def _trial_log(out_dir: Path, name: str) -> logging.Logger:
    """The trial's warnings in its own file (RUN/train/fight/<config>/trial.log): nodes
    appending to one shared log.txt could interleave."""
    log = logging.getLogger(f"clood_candy.trial.{name}")
    log.propagate = False
    log.setLevel(logging.INFO)
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out_dir / "trial.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s: %(message)s"))
    log.addHandler(handler)
    return log


class CaptionRequest(BaseModel):
    """A captioner's turn in the caption fight, sent to a worker: plain data, no secret."""

    config: dict
    run_root: str
    captioner: str
    photos: list[Photo]
    submitted: float
    plugin_env: dict[str, str]
    plugin_dirs: list[str]


class CaptionReply(BaseModel):
    results: dict[str, CaptionResult] | None  # None: the captioner sat out
    why: str | None = None
    trial: TrialRun


def run_captioner(request: dict) -> dict:
    """The Ray task's body for a captioner that runs a model: it asks the captioner on the
    worker whether it can run there (the weights are the worker's), then captions."""
    import ray

    began = time.time()
    req = CaptionRequest.model_validate(request)
    _load_plugins(req.plugin_env, req.plugin_dirs)
    out_dir = Path(req.run_root) / "caption" / req.captioner
    ctx = StageContext(run=RunStore.open(Path(req.run_root)), config=CloodConfig.model_validate(req.config),
                       registry=build_registry(), progress=Progress(quiet=True),
                       log=_trial_log(out_dir, f"caption.{req.captioner}"))
    captioner = ctx.registry.get("captioner", req.captioner)
    why = captioner.unavailable(ctx)
    results = None if why else captioner.caption(req.photos, ctx)
    context = ray.get_runtime_context()
    gpus = [str(g) for g in context.get_accelerator_ids().get("GPU", [])]
    trial = TrialRun(node=f"{socket.gethostname()} ({ray.util.get_node_ip_address()})", node_id=context.get_node_id(),
                     pid=os.getpid(), device=f"GPU {','.join(gpus)}" if gpus else "CPU",
                     waited_s=round(max(0.0, began - req.submitted), 3), seconds=round(time.time() - began, 3))
    return CaptionReply(results=results, why=why, trial=trial).model_dump(mode="json")


def _load_plugins(env: dict[str, str], dirs: list[str]) -> None:
    os.environ.update(env)
    load_plugins()
    for folder in dirs:
        load_plugin_dir(Path(folder))
