"""Recipes: TOML files validated into frozen objects. Every problem is reported at once.

See docs/recipes.md for every key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import config as cfg
from harness._evaluation.backends import BACKENDS
from harness._run.registry import Registry
from harness.config import did_you_mean
from harness.deepspeed import load_config as load_deepspeed_config
from harness.errors import PluginError, RecipeError
from harness.models import DTYPES
from harness.serve import secret_problems
from harness.types import TrainingSettings

TOP_LEVEL = ("run", "task", "teacher", "strategy", "student", "training", "evaluation", "sink")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class RunSettings:
    name: str = ""
    """Run name; defaults to the recipe file's stem. Names the run directory and results."""
    seed: int = 0
    output_dir: str = "runs"
    """Where run directories go, relative to the current directory unless absolute."""
    workers: int = 0
    """Processes for the data stages of a large run (teach with a program teacher, build): 0, one per CPU; 1, the
    run's own process only. Components that talk to a server or a GPU always run in the run's own process."""

    def check(self) -> list[tuple[str, str]]:
        problems = []
        if self.name and not _NAME.match(self.name):
            problems.append(("name", f"'{self.name}' must be letters, digits, '_', '-', '.'"))
        if self.workers < 0:
            problems.append(("workers", "must be 0 (one per CPU) or more"))
        return problems


@dataclass(frozen=True)
class EvaluationSettings:
    split: str = "test"
    limit: int | None = None
    """Evaluate on the first N examples of the split only (quick checks); None for all."""
    batch_size: int = 64
    max_gen_toks: int = 128
    """Tokens the student may generate per test question (a strategy may change it: ``Strategy.max_gen_toks``)."""
    device: str = "auto"
    """Where the student is evaluated: ``auto`` (the GPU when there is one, else the CPU), ``cpu``, ``cuda``,
    ``cuda:1``. Model selection during training generates on the training device."""
    dtype: str = "auto"
    """The student's weights at evaluation: ``auto`` (bfloat16 on a GPU that supports it, else float32),
    ``float32``, ``bfloat16``, ``float16``. Recorded, with the device, in the results' provenance."""
    backend: str = "hf"
    """``hf``: lm-eval's transformers model in this process. ``vllm``: the student is served by vLLM (``serve``)
    on 127.0.0.1 and lm-eval evaluates it through its OpenAI-compatible completions model."""
    serve: str = ""
    """The command that serves a model for ``backend = "vllm"``, with ``{model}`` and ``{port}``; it may live in
    another virtualenv. Empty: ``vllm serve {model} --host 127.0.0.1 --port {port}``."""
    serve_timeout: float = 600.0
    """Seconds to wait for that server to answer before giving up."""
    samples: int = 1
    """Answers sampled per question. 1: greedy decoding (``temperature`` 0). n > 1 (with ``temperature`` > 0):
    lm-eval repeats every question n times and reports ``pass@1`` (accuracy averaged over the n samples, with
    its standard error over questions) and ``maj@n`` (majority vote over the n cleansed answers)."""
    temperature: float = 0.0
    top_p: float = 1.0

    def check(self) -> list[tuple[str, str]]:
        problems = []
        if self.max_gen_toks < 1:
            problems.append(("max_gen_toks", "must be at least 1"))
        if self.limit is not None and self.limit < 1:
            problems.append(("limit", "must be at least 1"))
        if self.batch_size < 1:
            problems.append(("batch_size", "must be at least 1"))
        if self.device != "auto" and not re.match(r"^(cpu|cuda(:\d+)?|mps)$", self.device):
            problems.append(("device", f"'{self.device}' is not a device; use auto, cpu, cuda, cuda:N or mps"))
        if self.dtype not in DTYPES:
            problems.append(("dtype", f"'{self.dtype}' is not a dtype; use {', '.join(DTYPES)}"))
        backend = BACKENDS.get(self.backend)
        if backend is None:
            problems.append(("backend", f"'{self.backend}' is not a backend; use {' or '.join(BACKENDS)}"))
        else:  # what only this backend asks of the other settings
            problems += backend.recipe_problems(self)
        problems += secret_problems(self.serve, "serve")
        if self.serve_timeout <= 0:
            problems.append(("serve_timeout", "must be positive (seconds)"))
        if self.samples < 1:
            problems.append(("samples", "must be at least 1"))
        elif self.samples > 1 and self.temperature <= 0:
            problems.append(("temperature", f"samples = {self.samples} draws several answers per question: set "
                                            f"a temperature above 0 (e.g. 0.7), or samples = 1 for greedy"))
        elif self.samples == 1 and self.temperature != 0:
            problems.append(("samples", "a temperature above 0 with one sample gives a noisy single score; set "
                                        "samples to several (e.g. 8) to report pass@1 over them, or temperature = 0"))
        if self.temperature < 0:
            problems.append(("temperature", "must be 0 (greedy) or more"))
        if not 0 < self.top_p <= 1:
            problems.append(("top_p", "must be in (0, 1]"))
        return problems



@dataclass(frozen=True)
class ComponentSpec:
    """A component as a recipe names it: its registered ``kind``, a unique ``name`` and its validated config."""

    kind: str
    name: str
    config: Any
    plugin: str
    code: Mapping[str, str] = field(default_factory=dict)
    """The plugin behind it (``Component.code``: plugin, distribution, version, source hash): part of the content
    key of every stage it runs in, and recorded with every result."""
    init_from: str = ""
    """Strategies only: the name of an earlier strategy of the recipe whose trained student this one starts from
    (GKD's recipe: supervised first, then on-policy); empty: the student's own initial model."""

    def plain(self) -> dict[str, Any]:
        return {"kind": self.kind, "config": cfg.as_plain(self.config),
                **({"init_from": self.init_from} if self.init_from else {})}


@dataclass(frozen=True)
class Recipe:
    path: Path
    run: RunSettings
    task: ComponentSpec
    teacher: ComponentSpec
    strategies: tuple[ComponentSpec, ...]
    students: tuple[ComponentSpec, ...]
    training: TrainingSettings
    evaluation: EvaluationSettings
    sinks: tuple[ComponentSpec, ...]

    @property
    def name(self) -> str:
        return self.run.name or self.path.stem

    def digest(self) -> str:
        return stable_hash(self.plain())

    def describe(self) -> str:
        """``synthetic_arithmetic task, program teacher, 2 strategies, 1 student: 2 training runs``."""
        s, n = len(self.strategies), len(self.students)
        return (f"{self.task.kind} task, {self.teacher.kind} teacher, {s} strateg{'y' if s == 1 else 'ies'}, "
                f"{n} student{'s' if n != 1 else ''}: {s * n} training run{'s' if s * n != 1 else ''}")

    def plain(self) -> dict[str, Any]:
        return {
            "run": cfg.as_plain(self.run),
            "task": self.task.plain(),
            "teacher": self.teacher.plain(),
            "strategy": [s.plain() | {"name": s.name} for s in self.strategies],
            "student": [s.plain() | {"name": s.name} for s in self.students],
            "training": cfg.as_plain(self.training),
            "evaluation": cfg.as_plain(self.evaluation),
            "sink": [s.plain() for s in self.sinks],
        }


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``key.path=value`` (value as TOML, else a plain string). An index into an array of tables is written
    ``strategy[1].kind`` or ``strategy.1.kind`` (0-based)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise RecipeError([f"--set {text}: expected key.path=value, e.g. --set training.max_steps=100"])
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    path = re.sub(r"\[(\d+)\]", r".\1", key.strip()).split(".")
    if any(not part for part in path):
        raise RecipeError([f"--set {text}: '{key.strip()}' is not a key path; write e.g. strategy[0].filter"])
    return path, value


def _key_path(path: Sequence[str]) -> str:
    """``strategy.1.kind`` written as in recipe errors: ``strategy[1].kind``."""
    out = ""
    for part in path:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> None:
    """Apply ``--set`` overrides in place. A numeric segment indexes an array of tables (``strategy.1.kind``, or
    ``strategy[1].kind``; 0-based); for a one-element array it may be left out (``student.kind``)."""
    for text in overrides:
        path, value = parse_override(text)
        node: Any = data
        for i, part in enumerate(path):
            last = i == len(path) - 1
            here = _key_path(path[:i]) or "the recipe"
            if isinstance(node, list):
                if part.isdigit():
                    if int(part) >= len(node):
                        entries = f"{len(node)} entr{'y' if len(node) == 1 else 'ies'}"
                        raise RecipeError([f"--set {text}: {here} has {entries} (indices 0-{len(node) - 1})"])
                    if last:
                        node[int(part)] = value
                    node = node[int(part)]
                    continue
                if len(node) == 1:
                    node = node[0]
                else:
                    raise RecipeError([f"--set {text}: {here} has {len(node)} entries; name one by its 0-based "
                                       f"index, e.g. --set {_key_path([*path[:i], '0', *path[i:]])}=..."])
            if not isinstance(node, dict):
                raise RecipeError([f"--set {text}: {here} is a value, not a table; it has no key '{part}'"])
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})


def _tables(data: Mapping[str, Any], key: str, problems: list[str], where: str) -> list[tuple[str, Mapping]]:
    value = data.get(key)
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [(f"{key}", value)]
    if isinstance(value, list) and all(isinstance(v, Mapping) for v in value):
        return [(f"{key}[{i}]", v) for i, v in enumerate(value)]
    problems.append(f"{where}: {key}: expected a table ([{key}]) or an array of tables ([[{key}]])")
    return []


def _component(kind_name: str, key: str, table: Mapping[str, Any], registry: Registry, file: str,
               problems: list[str]) -> ComponentSpec | None:
    kind = table.get("kind")
    if not isinstance(kind, str):
        known = ", ".join(sorted(registry.components[kind_name]))
        problems.append(f"{file}: {key}.kind: required key is missing; choose a {kind_name}: {known}")
        return None
    try:
        component = registry.get(kind_name, kind)
    except PluginError as exc:
        problems.append(f"{file}: {key}.kind: {exc.message}")
        return None
    local: list[str] = []
    engine_keys = ("kind", "name", "init_from") if kind_name == "strategy" else ("kind", "name")
    config = registry.config(kind_name, kind, table, key, local, ignore=engine_keys)
    problems.extend(f"{file}: {p}" for p in local)
    bare = kind.rpartition(":")[2]  # kind = "distribution:name" picks one of two plugins with the same name
    name = table.get("name", bare)
    if not isinstance(name, str) or not _NAME.match(name):
        problems.append(f"{file}: {key}.name: must be a string of letters, digits, '_', '-', '.'")
        name = bare
    init_from = table.get("init_from", "") if kind_name == "strategy" else ""
    if not isinstance(init_from, str):
        problems.append(f"{file}: {key}.init_from: must be the name of an earlier strategy (a string)")
        init_from = ""
    return ComponentSpec(kind=kind, name=name, config=config, plugin=component.plugin, code=component.code(),
                         init_from=init_from)


def load_recipe(path: str | Path, registry: Registry, overrides: Sequence[str] = ()) -> Recipe:
    path = Path(path)
    file = str(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RecipeError([f"{file}: no such recipe file"]) from None
    except OSError as exc:
        raise RecipeError([f"{file}: cannot read: {exc.strerror}"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError([f"{file}: not valid TOML: {exc}"]) from None
    apply_overrides(data, overrides)
    return recipe_from_dict(data, path, registry)


def _key_shaped_values(value: Any, where: str) -> list[str]:
    """Paths of every string in the recipe shaped like a provider's API key, whatever key or table holds it."""
    from harness.secrets import looks_like_secret

    if isinstance(value, Mapping):
        return [p for k, v in value.items() for p in _key_shaped_values(v, f"{where}.{k}" if where else str(k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _key_shaped_values(v, f"{where}[{i}]")]
    return [where] if looks_like_secret(value) else []


def recipe_from_dict(data: Mapping[str, Any], path: Path, registry: Registry) -> Recipe:
    file = str(path)
    key_shaped = [f"{file}: {where}:" for where in _key_shaped_values(data, "")]
    problems: list[str] = [f"{where} looks like an API key or token; keys never go in a recipe (it would be "
                           f"recorded with the results): export it as an environment variable and name that "
                           f"variable (e.g. api_key_env = \"OPENAI_API_KEY\")" for where in key_shaped]
    for key in data:
        if key not in TOP_LEVEL:
            problems.append(f"{file}: {key}: unknown section.{did_you_mean(key, TOP_LEVEL)} "
                            f"Allowed: {', '.join(TOP_LEVEL)}")

    def settings(cls: type, key: str) -> Any:
        table = data.get(key, {})
        if not isinstance(table, Mapping):
            problems.append(f"{file}: {key}: expected a table ([{key}])")
            return cls()
        local: list[str] = []
        value = cfg.build(cls, table, key, local)
        problems.extend(f"{file}: {p}" for p in local)
        return value if value is not None else cls()

    run = settings(RunSettings, "run")
    training = settings(TrainingSettings, "training")
    if "seed" not in data.get("training", {}):
        training = dataclasses.replace(training, seed=run.seed)
    if training.deepspeed_config:  # relative to the recipe; checked against the recipe's knobs now
        ds_path = (path.parent / training.deepspeed_config).resolve()
        training = dataclasses.replace(training, deepspeed_config=str(ds_path))
        problems.extend(f"{file}: {p}" for p in load_deepspeed_config(ds_path, training)[1])
    evaluation = settings(EvaluationSettings, "evaluation")

    def one(kind_name: str, key: str) -> ComponentSpec | None:
        tables = _tables(data, key, problems, file)
        if not tables:
            if key not in data:
                problems.append(f"{file}: {key}: required section is missing ([{key}] with kind = ...)")
            return None
        if len(tables) > 1:
            problems.append(f"{file}: {key}: only one [{key}] is allowed")
        return _component(kind_name, tables[0][0], tables[0][1], registry, file, problems)

    def many(kind_name: str, key: str, default: list[dict] | None = None) -> tuple[ComponentSpec, ...]:
        tables = _tables(data, key, problems, file)
        if not tables and default is not None:
            tables = [(key, t) for t in default]
        if not tables and key not in data:
            problems.append(f"{file}: {key}: required section is missing ([[{key}]] with kind = ...)")
        specs = [_component(kind_name, k, t, registry, file, problems) for k, t in tables]
        seen: dict[str, str] = {}
        for (k, _), spec in zip(tables, specs):
            if spec is None:
                continue
            if spec.name in seen:
                problems.append(f"{file}: {k}.name: '{spec.name}' is used by {seen[spec.name]} too; "
                                f"give each a distinct name = \"...\"")
            seen[spec.name] = k
        return tuple(s for s in specs if s is not None)

    task = one("task", "task")
    teacher = one("teacher", "teacher")
    strategies = many("strategy", "strategy")
    for i, spec in enumerate(strategies):
        if not spec.init_from:
            continue
        earlier = [s.name for s in strategies[:i]]
        if spec.init_from not in earlier:
            choices = ", ".join(f"'{n}'" for n in earlier) or "none (it is the first)"
            problems.append(f"{file}: strategy[{i}].init_from: '{spec.init_from}' is not an earlier strategy of "
                            f"this recipe; it starts from another strategy's trained student, so name one listed "
                            f"above it: {choices}")
    students = many("student", "student")
    sinks = many("sink", "sink", default=[{"kind": "local"}])
    if problems:  # where a component's own check names the secret too, its words say more: once is enough
        said = [p for p in problems[len(key_shaped):] if any(p.startswith(where) and "secret" in p[len(where):]
                                                               for where in key_shaped)]
        raise RecipeError([p for p, where in zip(problems, key_shaped)
                           if not any(s.startswith(where) for s in said)] + problems[len(key_shaped):])
    assert task is not None and teacher is not None
    return Recipe(path=path, run=run, task=task, teacher=teacher, strategies=strategies, students=students,
                  training=training, evaluation=evaluation, sinks=sinks)
