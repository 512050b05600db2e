"""The hooks a harness plugin may implement.

A plugin is a module (found through the ``harness`` entry-point group) with functions decorated by
``harness.hookimpl``. Registration hooks take a ``register(name, factory)`` callback; recipes then name the
component (``kind = "name"``). Observer hooks are told about run and stage events and return nothing.
Every hook here has a section in ``docs/plugins/README.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from harness._run.recipe import Recipe

PROJECT = "harness"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[[str, Any], None]
"""``register(name, factory)``: ``factory(config)`` builds the component; ``factory.Config`` (optional) is the
dataclass the recipe section is validated against."""


@hookspec
def register_tasks(register: Register) -> None:
    """Register task factories (benchmarks): ``register("svamp", SvampTask)``."""


@hookspec
def register_teachers(register: Register) -> None:
    """Register teacher factories: ``register("openai", OpenAITeacher)``."""


@hookspec
def register_students(register: Register) -> None:
    """Register student factories: ``register("transformers", TransformersStudent)``."""


@hookspec
def register_strategies(register: Register) -> None:
    """Register distillation strategy factories: ``register("fine_tune_cot", FineTuneCoT)``."""


@hookspec
def register_sinks(register: Register) -> None:
    """Register result sink factories: ``register("local", LocalSink)``."""


@hookspec
def on_run_start(run_dir: Path, recipe: Recipe) -> None:
    """Called once when ``harness run`` starts, before any stage, with the run folder and the validated recipe
    (``harness.Recipe``: read it, never change it)."""


@hookspec
def on_stage_start(stage: str, key: str) -> None:
    """Called before a stage runs (not for stages skipped because their outputs are current)."""


@hookspec
def on_stage_end(stage: str, summary: str, seconds: float, skipped: bool) -> None:
    """Called after every stage, with its one-line summary; ``skipped`` is true when it reused finished work."""


@hookspec
def on_run_end(run_dir: Path, results: Mapping[str, Any]) -> None:
    """Called once after the last stage with the run's results table (``{run name: {metric: value}}``)."""
