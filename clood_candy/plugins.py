"""The plugin manager: entry points (built-ins included), a user's plugin files, and
the registry of everything they register."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from clood_candy import hookspecs
from clood_candy.errors import UserError

GROUP = "clood_candy"
OWN_DIST = "clood-candy"

pm = pluggy.PluginManager(GROUP)
pm.add_hookspecs(hookspecs)

# Which hook registers which kind of thing, and the name the CLI shows for it.
KINDS = {
    "captioner": "register_captioners",
    "judge": "register_judges",
    "preparer": "register_preparers",
    "family": "register_model_families",
    "sampler": "register_samplers",
    "reporter": "register_reporters",
    "upscaler": "register_upscalers",
}

# Hooks that were renamed: a plugin still using the old name is told the new one.
RENAMED_HOOKS = {"register_trainers": "register_model_families"}


@dataclass
class PluginProblem:
    plugin: str
    error: str
    detail: str = ""


@dataclass
class Registered:
    kind: str
    name: str
    obj: Any
    plugin: str
    version: str
    source: str


@dataclass
class Registry:
    items: dict[str, dict[str, Registered]] = field(default_factory=lambda: {k: {} for k in KINDS})
    problems: list[PluginProblem] = field(default_factory=list)

    def of(self, kind: str) -> dict[str, Any]:
        return {name: entry.obj for name, entry in self.items[kind].items()}

    def get(self, kind: str, name: str) -> Any:
        found = self.items[kind].get(name)
        if found is None:
            known = ", ".join(sorted(self.items[kind])) or "none"
            raise UserError(f"unknown {kind} '{name}' (known: {known})")
        return found.obj

    def listing(self) -> list[dict[str, str]]:
        return [
            {"kind": e.kind, "name": e.name, "plugin": e.plugin, "version": e.version, "source": e.source}
            for kind in KINDS
            for e in sorted(self.items[kind].values(), key=lambda e: e.name)
        ]


_loaded_dirs: set[Path] = set()
_entry_points_loaded = False
_load_problems: list[PluginProblem] = []
_sources: dict[str, tuple[str, str]] = {}  # plugin name → (version, source)


def load_plugins(plugins_dir: Path | None = None) -> None:
    """Load entry points once; load ``plugins_dir`` (or ``$CLOOD_PLUGINS_DIR``) files once each.

    ``$CLOOD_LOAD_PLUGINS`` names the entry points to load (comma-separated); the word
    ``builtin`` stands for all of this package's own, which rules out every third-party
    plugin (the tests and benchmarks run that way, so what else is installed never
    changes their outcome).
    """
    global _entry_points_loaded
    if not _entry_points_loaded:
        _entry_points_loaded = True
        wanted = os.environ.get("CLOOD_LOAD_PLUGINS")
        allow = {n.strip() for n in wanted.split(",") if n.strip()} if wanted is not None else None
        for ep in importlib.metadata.entry_points(group=GROUP):
            dist = ep.dist.name if ep.dist else "?"
            if allow is not None and ep.name not in allow and not ("builtin" in allow and dist == OWN_DIST):
                continue
            try:
                module = ep.load()
            except Exception as exc:  # a broken plugin is reported, the rest still load
                _load_problems.append(PluginProblem(ep.name, f"{type(exc).__name__}: {exc}", traceback.format_exc()))
                continue
            if pm.get_plugin(ep.name) is None:
                pm.register(module, name=ep.name)
                version = ep.dist.version if ep.dist else "?"
                _sources[ep.name] = (version, "built-in" if dist == OWN_DIST else f"package {dist}")
    directory = plugins_dir or (Path(os.environ["CLOOD_PLUGINS_DIR"]) if os.environ.get("CLOOD_PLUGINS_DIR") else None)
    if directory is not None:
        load_plugin_dir(directory)


def loaded_plugin_dirs() -> list[Path]:
    """The plugin folders this process loaded, for a worker process to load too."""
    return sorted(_loaded_dirs)


def load_plugin_dir(directory: Path) -> None:
    directory = directory.resolve()
    if directory in _loaded_dirs:
        return
    if not directory.is_dir():
        raise UserError(f"plugins dir not found: {directory}")
    _loaded_dirs.add(directory)
    for path in sorted(directory.glob("*.py")):
        name = path.stem
        if pm.get_plugin(name) is not None:
            continue
        try:
            spec = importlib.util.spec_from_file_location(f"clood_candy_user_plugins.{name}", path)
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        except Exception as exc:
            _load_problems.append(PluginProblem(name, f"{type(exc).__name__}: {exc}", traceback.format_exc()))
            continue
        pm.register(module, name=name)
        _sources[name] = (str(getattr(module, "__version__", "local")), str(path))


def build_registry() -> Registry:
    """Ask every plugin what it registers. One plugin's failure is recorded, not fatal."""
    registry = Registry(problems=list(_load_problems))
    for kind, hook_name in KINDS.items():
        hook = getattr(pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            plugin = impl.plugin_name
            version, source = _sources.get(plugin, (str(getattr(impl.plugin, "__version__", "?")), "registered in code"))

            def register(obj: Any, kind: str = kind, plugin: str = plugin, version: str = version, source: str = source) -> None:
                name = getattr(obj, "name", "") or type(obj).__name__
                registry.items[kind][name] = Registered(kind, name, obj, plugin, version, source)

            try:
                impl.function(register=register)
            except Exception as exc:
                registry.problems.append(
                    PluginProblem(plugin, f"{hook_name}: {type(exc).__name__}: {exc}", traceback.format_exc())
                )
    registry.problems.extend(_unknown_hooks())
    return registry


def _unknown_hooks() -> list[PluginProblem]:
    """pluggy keeps an implementation of a hook nobody declared without a word; a plugin
    written for an older clood would then register nothing and never know why."""
    problems = []
    for hook_name in dir(pm.hook):
        hook = getattr(pm.hook, hook_name)
        if hook_name.startswith("_") or not isinstance(hook, pluggy.HookCaller) or hook.spec is not None:
            continue
        renamed = RENAMED_HOOKS.get(hook_name)
        hint = f"it is now {renamed}" if renamed else f"known hooks: {', '.join(sorted(KINDS.values()))}"
        for impl in hook.get_hookimpls():
            problems.append(PluginProblem(impl.plugin_name, f"{hook_name} is not a clood hook ({hint})"))
    return problems
