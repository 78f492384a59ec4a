"""Where the SD plugin keeps things it builds once: tiny pipelines, tokenizer files,
configs folders for single-file checkpoints."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_dir() -> Path:
    """``$CLOOD_CACHE`` or ``~/.cache/clood_candy``."""
    root = os.environ.get("CLOOD_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "clood_candy"


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Build a folder into a temporary sibling and rename it into place, so a crash or a
    second process never leaves a half-built folder at ``target``."""
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # lost a race to another process: theirs is as good
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
