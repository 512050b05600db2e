"""Turning TOML tables into typed, frozen dataclass instances, collecting every problem at once."""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from harness.secrets import SECRET_KEY

MISSING = dataclasses.MISSING


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return `` Did you mean 'x'?`` (with a leading space) or an empty string."""
    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "none"
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return {list: "array", tuple: "array", dict: "table"}.get(origin, str(origin))
    if dataclasses.is_dataclass(tp):
        return "table"
    return {int: "integer", float: "number", str: "string", bool: "boolean", dict: "table"}.get(tp, str(tp))


def _convert(value: Any, tp: Any, where: str, problems: list[str]) -> Any:
    """Check ``value`` against ``tp`` and convert it (lists to tuples, tables to dataclasses)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        for arg in args:
            trial: list[str] = []
            converted = _convert(value, arg, where, trial)
            if not trial:
                return converted
        problems.append(f"{where}: expected {_type_name(tp)}, got {_describe(value)}")
        return None
    if tp is type(None):
        if value is not None:
            problems.append(f"{where}: expected none, got {_describe(value)}")
        return None
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            problems.append(f"{where}: expected an array, got {_describe(value)}")
            return ()
        args = typing.get_args(tp)
        item_type = args[0] if args else Any
        return tuple(_convert(v, item_type, f"{where}[{i}]", problems) for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            problems.append(f"{where}: expected a table, got {_describe(value)}")
            return {}
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            problems.append(f"{where}: expected a table, got {_describe(value)}")
            return None
        return build(tp, value, where, problems)
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(f"{where}: expected a boolean (true or false), got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{where}: expected an integer, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{where}: expected a number, got {_describe(value)}")
            return value
        if not math.isfinite(value):
            problems.append(f"{where}: expected a finite number, got {value} (nan and inf are not settings)")
            return value
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            problems.append(f"{where}: expected a string, got {_describe(value)}")
        return value
    return value


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, (int, float)):
        return f"number {value}"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "an array"
    return type(value).__name__


def build(cls: type, table: Mapping[str, Any], where: str, problems: list[str], ignore: tuple[str, ...] = ()) -> Any:
    """Build dataclass ``cls`` from ``table``; append ``where.key: message`` problems instead of raising.

    Unknown keys are rejected with a suggestion; required fields (no default) must be present. A dataclass
    may define ``check(self) -> list[tuple[str, str]]`` returning ``(key, message)`` pairs for value rules.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    prefix = f"{where}." if where else ""
    kwargs: dict[str, Any] = {}
    bad: set[str] = set()
    count = len(problems)
    for key, value in table.items():
        if key in ignore:
            continue
        if key not in fields and SECRET_KEY.search(key):
            problems.append(f"{prefix}{key}: never put a secret in a recipe: export it as an environment variable "
                            f"and name that variable instead (e.g. api_key_env = \"OPENAI_API_KEY\")")
            continue
        if key not in fields:
            problems.append(f"{prefix}{key}: unknown key.{did_you_mean(key, fields)} Allowed: {', '.join(fields)}")
            continue
        before = len(problems)
        kwargs[key] = _convert(value, hints[key], f"{prefix}{key}", problems)
        if len(problems) > before:
            bad.add(key)
    missing = [name for name, f in fields.items()
               if name not in kwargs and f.default is MISSING and f.default_factory is MISSING]
    problems += [f"{prefix}{name}: required key is missing ({_type_name(hints[name])})" for name in missing]
    if missing:
        return None
    failed = len(problems) > count
    if any(fields[k].default is MISSING and fields[k].default_factory is MISSING for k in bad):
        return None  # a required key of the wrong type: nothing to check the rest against (its type error says it)
    # A wrongly typed key must not hide the table's other problems: check() runs with that key at its default,
    # and its findings about that key are left out (the type error already names it).
    instance = cls(**{k: v for k, v in kwargs.items() if k not in bad})
    check = getattr(instance, "check", None)
    if callable(check):
        for key, message in check():
            if key.split(".", 1)[0] not in bad:
                problems.append(f"{prefix}{key}: {message}")
    return None if failed else instance


def as_plain(instance: Any) -> Any:
    """A JSON-able form of a config instance (for hashing and manifests)."""
    if dataclasses.is_dataclass(instance):
        return {f.name: as_plain(getattr(instance, f.name)) for f in dataclasses.fields(instance)}
    if isinstance(instance, (list, tuple)):
        return [as_plain(v) for v in instance]
    if isinstance(instance, Mapping):
        return {str(k): as_plain(v) for k, v in instance.items()}
    return instance


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """Config of a component that takes no options."""
