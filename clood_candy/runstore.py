"""The run folder: ``run.json`` (config, stage status, timings, versions, outputs) and
helpers for stage folders. The layout is a contract (README, "The run store")."""

from __future__ import annotations

import hashlib
import json
import platform
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from clood_candy import fsutil

STAGES = ["prep", "caption", "train", "sample", "report"]
Status = Literal["pending", "running", "done", "failed", "skipped"]
SECRET_WORDS = ("key", "token", "secret", "password")
REDACTED = "<redacted>"


class StageState(BaseModel):
    status: Status = "pending"
    started: str | None = None
    finished: str | None = None
    seconds: float | None = None
    fingerprint: str | None = None
    error: str | None = None
    outputs: dict[str, Any] = Field(default_factory=dict)


class RunState(BaseModel):
    name: str
    created: str
    source: str | None = None
    demo: bool = False
    config: dict[str, Any]  # the effective config, secrets redacted
    # Where the config came from, so a resumed run builds it the same way, secrets and all:
    # the clood.toml the run used (resolved) and the command-line flags laid over it.
    config_file: str | None = None
    flags: dict[str, Any] = Field(default_factory=dict)
    # The keys the user set (file, flags, --demo), secrets redacted: a config rebuilt from
    # them tells the user's choices from defaults, so the plan fills the same gaps again.
    config_set: dict[str, Any] | None = None
    stages: dict[str, StageState] = Field(default_factory=lambda: {s: StageState() for s in STAGES})
    versions: dict[str, str] = Field(default_factory=dict)
    outputs: dict[str, Any] = Field(default_factory=dict)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for dist in ("clood-candy", "torch", "diffusers", "peft", "transformers", "pillow", "anthropic"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return found


def _is_secret(key: str, value: Any) -> bool:
    return isinstance(value, str) and any(w in key.lower() for w in SECRET_WORDS)


def redact(value: Any) -> Any:
    """Anything that looks like a secret replaced by a placeholder before it reaches disk."""
    if isinstance(value, dict):
        return {k: REDACTED if _is_secret(k, v) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def without_secrets(value: Any) -> Any:
    """The same with the secret-looking keys left out, placeholders included: a config
    rebuilt from run.json gets them from the user's file or the plugin's own default
    (which may read the environment), never as the placeholder."""
    if isinstance(value, dict):
        return {k: without_secrets(v) for k, v in value.items() if not _is_secret(k, v)}
    if isinstance(value, list):
        return [without_secrets(v) for v in value]
    return value


def fingerprint(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class RunStore:
    def __init__(self, root: Path, state: RunState):
        self.root = root
        self.state = state

    @classmethod
    def create(cls, root: Path, name: str, config: dict[str, Any], source: str | None, demo: bool, *,
               config_file: str | None = None, flags: dict[str, Any] | None = None,
               config_set: dict[str, Any] | None = None) -> "RunStore":
        root.mkdir(parents=True, exist_ok=True)
        if (root / "run.json").exists():
            store = cls.open(root)
            store.state.source = source
            store.state.versions = versions()
        else:
            store = cls(root, RunState(name=name, created=now(), source=source, demo=demo, config={}, versions=versions()))
        store.set_config(config, config_file, flags or {}, config_set)
        return store

    def set_config(self, config: dict[str, Any], config_file: str | None, flags: dict[str, Any],
                   config_set: dict[str, Any] | None = None) -> None:
        """Record the effective config (secrets redacted), what it was built from, and which
        of its keys the user set."""
        self.state.config, self.state.config_file, self.state.flags = redact(config), config_file, redact(flags)
        self.state.config_set = None if config_set is None else redact(config_set)
        self.save()

    @classmethod
    def open(cls, root: Path) -> "RunStore":
        return cls(root, RunState.model_validate(fsutil.read_json(root / "run.json")))

    def save(self) -> None:
        fsutil.write_json(self.root / "run.json", self.state)

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def rel(self, path: Path) -> str:
        return str(Path(path).resolve().relative_to(self.root.resolve()))

    def stage(self, name: str) -> StageState:
        return self.state.stages.setdefault(name, StageState())

    def start(self, name: str, fp: str) -> float:
        st = self.stage(name)
        st.status, st.started, st.finished, st.error, st.fingerprint = "running", now(), None, None, fp
        self.save()
        return time.perf_counter()

    def finish(self, name: str, began: float, outputs: dict[str, Any] | None = None) -> None:
        st = self.stage(name)
        st.status, st.finished, st.seconds = "done", now(), round(time.perf_counter() - began, 3)
        st.outputs = outputs or {}
        self.save()

    def fail(self, name: str, began: float, error: str) -> None:
        st = self.stage(name)
        st.status, st.finished, st.seconds, st.error = "failed", now(), round(time.perf_counter() - began, 3), error
        self.save()

    def is_fresh(self, name: str, fp: str) -> bool:
        st = self.stage(name)
        return st.status == "done" and st.fingerprint == fp
