"""Plugin discovery (entry points, group ``harness``) and the registry of named components.

Built-in components load exactly like third-party ones. A plugin that fails to import or to register is
recorded as a problem naming it; the rest still load, so ``harness plugins`` always works.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import pluggy

from harness import hookspecs
from harness.errors import PluginError
from harness.suggest import did_you_mean

KINDS = ("task", "teacher", "student", "strategy", "sink")
_HOOKS = {
    "task": "register_tasks",
    "teacher": "register_teachers",
    "student": "register_students",
    "strategy": "register_strategies",
    "sink": "register_sinks",
}
PLURAL = {"task": "tasks", "teacher": "teachers", "student": "students", "strategy": "strategies", "sink": "sinks"}

AUTOLOAD_ENV = "HARNESS_DISABLE_PLUGIN_AUTOLOAD"
DISABLE_ENV = "HARNESS_DISABLE_PLUGINS"
ONLY_ENV = "HARNESS_PLUGINS"
"""Allow-list: when set, only these entry points or distributions load (comma-separated)."""


@dataclass(frozen=True)
class Component:
    kind: str
    name: str
    factory: Any
    plugin: str
    distribution: str
    version: str


@dataclass
class Registry:
    """Every registered component by kind and name, plus the problems met while loading plugins."""

    components: dict[str, dict[str, Component]] = field(default_factory=lambda: {k: {} for k in KINDS})
    problems: list[str] = field(default_factory=list)
    manager: pluggy.PluginManager | None = None

    def get(self, kind: str, name: str) -> Component:
        known = self.components[kind]
        if name in known:
            return known[name]
        raise PluginError(self.unknown_message(kind, name))

    def unknown_message(self, kind: str, name: str) -> str:
        known = sorted(self.components[kind])
        available = ", ".join(known) if known else "none (is a plugin failing to load? run 'harness plugins')"
        return f"unknown {kind} '{name}'.{did_you_mean(name, known)} Available: {available}"

    def all(self) -> list[Component]:
        return [c for kind in KINDS for c in sorted(self.components[kind].values(), key=lambda c: c.name)]


def _distribution_of(ep: Any) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "?", "?"
    return dist.metadata["Name"], dist.version


EXTRA_PLUGINS: list[object] = []
"""Plugins registered in-process on top of entry points (``harness.testing.plugin_registered`` uses this)."""


def load_registry(extra_plugins: Iterable[ModuleType | object] = (), autoload: bool | None = None) -> Registry:
    """Discover plugins and collect their components.

    ``extra_plugins`` are registered in addition to entry points (tests use this). Autoloading is off when
    ``HARNESS_DISABLE_PLUGIN_AUTOLOAD`` is set, unless ``autoload`` says otherwise.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    registry = Registry(manager=pm)
    origin: dict[str, tuple[str, str]] = {}

    if autoload is None:
        autoload = not os.environ.get(AUTOLOAD_ENV)
    disabled = {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}
    allowed = {n.strip() for n in os.environ.get(ONLY_ENV, "").split(",") if n.strip()}
    if autoload:
        for ep in sorted(entry_points(group=hookspecs.PROJECT), key=lambda e: e.name):
            dist, version = _distribution_of(ep)
            if ep.name in disabled or dist in disabled or (allowed and not {ep.name, dist} & allowed):
                continue
            try:
                module = ep.load()
            except Exception as exc:  # a broken third-party plugin must not take the CLI down
                registry.problems.append(
                    f"plugin '{ep.name}' (distribution {dist} {version}) failed to load: "
                    f"{type(exc).__name__}: {exc}. Start without it with {DISABLE_ENV}={ep.name}"
                )
                continue
            if pm.is_registered(module):
                continue
            pm.register(module, name=ep.name)
            origin[ep.name] = (dist, version)
    for plugin in [*EXTRA_PLUGINS, *extra_plugins]:
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
        pm.register(plugin, name=name)
        origin[name] = ("(registered in-process)", "")

    for kind in KINDS:
        hook = getattr(pm.hook, _HOOKS[kind])
        for impl in hook.get_hookimpls():  # in registration order
            plugin_name = impl.plugin_name
            dist, version = origin.get(plugin_name, ("?", "?"))

            def register(name: str, factory: Any, *, _kind=kind, _plugin=plugin_name, _d=dist, _v=version) -> None:
                if not isinstance(name, str) or not name:
                    raise PluginError(f"register() needs a non-empty string name, got {name!r}")
                existing = registry.components[_kind].get(name)
                if existing is not None:
                    registry.problems.append(
                        f"{_kind} '{name}' is registered twice: by plugin '{existing.plugin}' "
                        f"({existing.distribution}) and by plugin '{_plugin}' ({_d}); the first one is used. "
                        f"Disable one with {DISABLE_ENV}=<plugin>"
                    )
                    return
                registry.components[_kind][name] = Component(_kind, name, factory, _plugin, _d, _v)

            try:
                impl.function(register=register)
            except Exception as exc:
                registry.problems.append(
                    f"plugin '{plugin_name}' ({dist}) failed in hook {_HOOKS[kind]}: {type(exc).__name__}: {exc}"
                )
    return registry
