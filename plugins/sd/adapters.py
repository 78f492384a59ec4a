"""LoRA files applied to a loaded pipeline for sampling: each file becomes a named
adapter once (kept while in use, oldest dropped), then every image just picks it and
its weight. Weight 0 or no file means the base alone."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from clood_candy.errors import UserError
from clood_candy_plugins.sd.lora import quiet_peft, release_empty_layers

CAPACITY = 6  # adapters kept loaded; a weight×checkpoint grid reuses a few files many times


def _adapter_name(path: Path) -> str:
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_mtime_ns}:{stat.st_size}"
    return "clood_" + hashlib.sha256(key.encode()).hexdigest()[:12]


class AdapterSlots:
    def __init__(self, pipe, family: str, reader: Callable[[Path, str], None]):
        self.pipe = pipe
        self.family = family
        self.reader = reader  # loads a file as a named adapter (the base's read_lora)
        self.loaded: OrderedDict[str, Path] = OrderedDict()

    def _load(self, path: Path) -> str:
        if not path.is_file():
            raise UserError(f"LoRA file not found: {path}")
        name = _adapter_name(path)
        if name in self.loaded:
            self.loaded.move_to_end(name)
            return name
        while len(self.loaded) >= CAPACITY:
            old, _ = self.loaded.popitem(last=False)
            with quiet_peft():
                self.pipe.delete_adapters(old)
            release_empty_layers(self.pipe)
        try:
            with quiet_peft():
                self.reader(path, name)
        except UserError:
            raise
        except Exception as exc:
            raise UserError(f"could not load LoRA {path.name}: {str(exc).strip().splitlines()[0][:200]}") from None
        self.loaded[name] = path
        return name

    def activate(self, path: Path | None, weight: float) -> None:
        if path is None or weight == 0:
            if self.loaded:
                self.pipe.disable_lora()
            return
        name = self._load(Path(path))
        self.pipe.enable_lora()
        self.pipe.set_adapters([name], adapter_weights=[float(weight)])

    def forget(self, path: Path) -> None:
        """Drop a file's adapter (it was rewritten, or verification is done with it)."""
        for name, loaded in list(self.loaded.items()):
            if loaded == path:
                with quiet_peft():
                    self.pipe.delete_adapters(name)
                del self.loaded[name]
        release_empty_layers(self.pipe)

    def clear(self) -> None:
        """Drop every loaded file (they load again when next sampled). Training does this
        first: a LoHa/LoKr file's layers around a conv would keep a LoRA off that conv."""
        for path in list(self.loaded.values()):
            self.forget(path)
