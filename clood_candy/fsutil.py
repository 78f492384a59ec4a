"""Atomic file writes: a run folder never holds a half-written file."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel

log = logging.getLogger("clood_candy")  # the logger whose handler writes RUN/log.txt


def write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data: Any) -> Path:
    """Writes strict JSON when it can. NaN and infinities have no JSON form: such a file is
    still written (a diverged training run must still save its checkpoint and stop cleanly;
    Python reads it back), but never silently — the run's log names the file."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    try:
        text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False)
    except ValueError:
        log.warning("%s holds NaN or infinity, which is not valid JSON: other tools may not read it", path)
        text = json.dumps(data, indent=2, ensure_ascii=False)
    return write_text(path, text + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))
