"""What every stage and plugin is handed: the run, the config, the registry, progress,
and the base model (loaded once, on first use)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from clood_candy.config import CloodConfig
from clood_candy.errors import UserError
from clood_candy.plugins import Registry
from clood_candy.progress import Progress
from clood_candy.runstore import RunStore
from clood_candy.stages import LoadedBase, ModelFamily

M = TypeVar("M", bound=BaseModel)


def find_family(config: CloodConfig, registry: Registry) -> ModelFamily:
    """The family named in the config, else the first that can load its base."""
    families = registry.of("family")
    if config.family:
        return registry.get("family", config.family)
    for family in families.values():
        if family.matches(config.base):
            return family
    raise UserError(f"no model family can load base '{config.base}' (families: {', '.join(families) or 'none'})")


@dataclass
class StageContext:
    run: RunStore
    config: CloodConfig
    registry: Registry
    progress: Progress = field(default_factory=Progress)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("clood_candy"))
    _base: LoadedBase | None = None

    def options(self, plugin_name: str) -> dict[str, Any]:
        """The ``[plugins.<name>]`` table of clood.toml."""
        return dict(self.config.plugins.get(plugin_name, {}))

    def typed_options(self, plugin_name: str, model: type[M]) -> M:
        """The ``[plugins.<name>]`` table validated by a plugin's own pydantic model; a bad
        key or value raises ValueError with one line naming it."""
        try:
            return model.model_validate(self.options(plugin_name))
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ValueError(f"[plugins.{plugin_name}] {'.'.join(map(str, first['loc']))}: {first['msg']}") from None

    def family(self) -> ModelFamily:
        return find_family(self.config, self.registry)

    def base(self) -> LoadedBase:
        if self._base is None:
            self.progress.say(f"Loading base model {self.config.base} …")
            self._base = self.family().load(self.config.base, self)
        return self._base
