"""Plugin discovery (entry points, group ``harness``) and the registry of named components.

Built-in components load exactly like third-party ones. A plugin that fails to import or to register is
recorded as a problem naming it; the rest still load, so ``harness plugins`` always works.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import pluggy

from harness import hookspecs
from harness.components import conform
from harness.config import NoOptions, did_you_mean
from harness.config import build as build_config
from harness.errors import PluginError, RecipeError

KINDS = ("task", "teacher", "student", "strategy", "sink")
_HOOKS = {
    "task": "register_tasks",
    "teacher": "register_teachers",
    "student": "register_students",
    "strategy": "register_strategies",
    "sink": "register_sinks",
}

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
    module: Any = field(default=None, compare=False, repr=False)
    """The plugin's module (its entry point) or in-process object, whose source ``code`` hashes."""

    def code(self) -> dict[str, str]:
        """What identifies the code behind this component: its plugin, distribution and version, and a hash of the
        plugin's source (an editable install or a plugin registered in-process changes without a new version).
        Part of the content key of every stage the component runs in, and of every published result."""
        out = {"plugin": self.plugin, "distribution": self.distribution, "version": self.version}
        source = source_hash(self.module if self.module is not None else self.factory)
        if source:
            out["source"] = source
        return out


def source_hash(obj: Any) -> str:
    """A hash of a plugin's source files: every ``.py`` file of a package, the file of a module, or the module
    that defines an object; empty when there is no file to read. Read each time a recipe is loaded (a few files:
    an edited plugin counts at once)."""
    import hashlib
    import sys
    from pathlib import Path

    owner = getattr(obj, "__module__", None) or type(obj).__module__  # a class, a function, or an instance
    module = obj if isinstance(obj, ModuleType) else sys.modules.get(owner)
    path = getattr(module, "__file__", None)
    if not path:
        return ""
    folders = [Path(p) for p in getattr(module, "__path__", ())]  # a package: all of it
    files = sorted((str(f.relative_to(d)), f) for d in folders for f in d.rglob("*.py")) if folders else \
        [(Path(path).name, Path(path))]
    digest = hashlib.sha256()
    for name, f in files:
        try:
            digest.update(name.encode() + b"\0" + f.read_bytes() + b"\0")
        except OSError:
            continue
    return digest.hexdigest()[:16]


@dataclass
class Registry:
    """Every registered component by kind and name, plus the problems met while loading plugins.

    A name registered by two plugins is a collision, never a silent take-over: ``get`` refuses the bare name,
    naming both distributions, and each stays reachable as ``"distribution:name"`` (``"harness:vanilla"``)."""

    components: dict[str, dict[str, Component]] = field(default_factory=lambda: {k: {} for k in KINDS})
    """By kind, each name's first registration (what ``harness plugins`` lists first)."""
    collisions: dict[tuple[str, str], list[Component]] = field(default_factory=dict)
    """(kind, name) -> every registration of a name registered more than once."""
    problems: list[str] = field(default_factory=list)
    manager: pluggy.PluginManager | None = None

    def get(self, kind: str, name: str) -> Component:
        if ":" in name:  # "distribution:name", or "plugin:name" (the entry point's name)
            owner, _, bare = name.rpartition(":")
            found = [c for c in self.collisions.get((kind, bare), [self.components[kind].get(bare)])
                     if c is not None and owner in (c.distribution, c.plugin)]
            if len(found) == 1:
                return found[0]
            raise PluginError(self.collision_message(kind, bare) if found else self.unknown_message(kind, name))
        if (kind, name) in self.collisions:
            raise PluginError(self.collision_message(kind, name))
        known = self.components[kind]
        if name in known:
            return known[name]
        raise PluginError(self.unknown_message(kind, name))

    def qualified(self, c: Component) -> str:
        """The unambiguous name of a colliding registration: ``distribution:name`` (``plugin:name`` when one
        distribution registers the name twice)."""
        found = self.collisions.get((c.kind, c.name), [c])
        by_dist = len({x.distribution for x in found}) == len(found)
        return f"{c.distribution if by_dist else c.plugin}:{c.name}"

    def collision_message(self, kind: str, name: str) -> str:
        found = self.collisions[(kind, name)]
        which = " and ".join(f"plugin '{c.plugin}' of distribution {c.distribution}" for c in found)
        choices = " or ".join(f'kind = "{self.qualified(c)}"' for c in found)
        return (f"{kind} '{name}' is registered by {which}; the harness never picks one silently. Name one: "
                f"{choices} (or uninstall one, or start without it with {DISABLE_ENV}=<plugin>)")

    def unknown_message(self, kind: str, name: str) -> str:
        known = sorted(self.components[kind])
        available = ", ".join(known) if known else "none (is a plugin failing to load? run 'harness plugins')"
        return f"unknown {kind} '{name}'.{did_you_mean(name, known)} Available: {available}"

    def config(self, kind: str, name: str, options: Mapping[str, Any], where: str, problems: list[str],
               ignore: tuple[str, ...] = ()) -> Any:
        """The component's options checked against its ``Config`` dataclass (problems appended as
        ``where.key: message``)."""
        config_cls = getattr(self.get(kind, name).factory, "Config", NoOptions)
        return build_config(config_cls, options, where, problems, ignore=ignore)

    def build(self, kind: str, name: str, config: Any) -> Any:
        """The one place a component is made: its factory called with its checked config, and the declared
        defaults it lacks given to it (``harness.components.conform``)."""
        return conform(kind, self.get(kind, name).factory(config), name)

    def create(self, kind: str, name: str, options: Mapping[str, Any]) -> Any:
        """``config`` then ``build``; a ``RecipeError`` lists every problem with the options."""
        problems: list[str] = []
        config = self.config(kind, name, options, kind, problems)
        if problems:
            raise RecipeError(problems)
        return self.build(kind, name, config)

    def all(self) -> list[Component]:
        """Every registration, colliding ones included, by kind and name."""
        out = []
        for kind in KINDS:
            for name in sorted(self.components[kind]):
                out += self.collisions.get((kind, name), [self.components[kind][name]])
        return out


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
    origin: dict[str, tuple[str, str, Any]] = {}

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
            origin[ep.name] = (dist, version, module)
    for plugin in [*EXTRA_PLUGINS, *extra_plugins]:
        if pm.is_registered(plugin):  # also installed: its entry point registered the same module already
            continue
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
        pm.register(plugin, name=name)
        origin[name] = ("(registered in-process)", "", plugin)

    for kind in KINDS:
        hook = getattr(pm.hook, _HOOKS[kind])
        for impl in hook.get_hookimpls():  # in registration order
            plugin_name = impl.plugin_name
            dist, version, module = origin.get(plugin_name, ("?", "?", None))

            def register(name: str, factory: Any, *, _kind=kind, _plugin=plugin_name, _d=dist, _v=version,
                         _m=module) -> None:
                if not isinstance(name, str) or not name:
                    raise PluginError(f"register() needs a non-empty string name, got {name!r}")
                component = Component(_kind, name, factory, _plugin, _d, _v, _m)
                existing = registry.components[_kind].get(name)
                if existing is None:
                    registry.components[_kind][name] = component
                    return
                registry.collisions.setdefault((_kind, name), [existing]).append(component)
                registry.problems.append(registry.collision_message(_kind, name))

            try:
                impl.function(register=register)
            except Exception as exc:
                registry.problems.append(
                    f"plugin '{plugin_name}' ({dist}) failed in hook {_HOOKS[kind]}: {type(exc).__name__}: {exc}"
                )
    return registry
