"""harness: distil chain-of-thought reasoning from teacher models into small students.

This package only re-exports: the names below, and the modules in ``PUBLIC_MODULES``, are the public surface that
plugins (the built-in ones included) may import. Everything else is private and may change without notice.
"""

from harness import answers, cache, data, prompts
from harness._run.recipe import ComponentSpec, EvaluationSettings, Recipe, RunSettings
from harness.components import Objective, Sink, Strategy, Student, Task, Teacher, TeacherEstimate, TeacherUsage, conform
from harness.errors import BadInputError, DataError, HarnessError, PluginError, RecipeError, RunError
from harness.hookspecs import hookimpl
from harness.types import (
                                AnswerSpec,
                                Example,
                                Generation,
                                GradedGeneration,
                                SubStep,
                                TrainingContext,
                                TrainingExample,
                                TrainingSettings,
)

__version__ = "0.1.0"

PUBLIC_MODULES = (
    "harness",             # the names re-exported here: data types, base classes, errors, hookimpl
    "harness.alignment",   # a teacher's tokens and top-k, as text, carried onto another tokenizer's tokens
    "harness.answers",     # answer cleansing and comparison (extract, is_correct, normalise_question)
    "harness.cache",       # the content-keyed JSON Lines cache for expensive calls
    "harness.cli",         # main(argv): a harness command in-process, its exit code returned (for tests)
    "harness.components",  # the base classes with their declared defaults; TeacherUsage; conform
    "harness.config",      # turning TOML tables into checked dataclasses (build, as_plain)
    "harness.data",        # where local benchmark data lives (data_root, data_file, read_json, read_jsonl)
    "harness.deepspeed",   # DeepSpeed JSON built from or checked against the recipe's [training] table
    "harness.errors",      # the exceptions, and is_out_of_memory
    "harness.generation",  # greedy and staged (multi-call) decoding with a transformers model
    "harness.hookspecs",   # the hooks a plugin implements, with their arguments (hookimpl marks them)
    "harness.io",          # atomic writes, JSON Lines, the records stages exchange
    "harness.models",      # checks that a model, tokenizer or architecture loads (for preflight)
    "harness.prompts",     # teacher prompt formats shared by prompting teachers
    "harness.records",     # stage records on disk: Arrow files written in batches, read as sequences
    "harness.secrets",     # redaction of secrets the run knows of
    "harness.serve",       # an inference server (vLLM) started, waited for and always stopped by the harness
    "harness.testing",     # helpers for plugin tests (plugin_registered, tiny_recipe, FakeTeacher)
    "harness.types",       # the frozen records stages exchange (Example, Generation, TrainingExample, ...)
)
"""What plugins may import: every top-level module whose name does not start with ``_`` (a test keeps the two
equal). The engine lives in ``harness._run``, ``harness._evaluation``, ``harness._results`` and ``harness._scaffold``:
private, it may change in any release."""

__all__ = [
    "PUBLIC_MODULES",
    "AnswerSpec",
    "BadInputError",
    "ComponentSpec",
    "EvaluationSettings",
    "DataError",
    "Example",
    "Generation",
    "GradedGeneration",
    "HarnessError",
    "Objective",
    "PluginError",
    "Recipe",
    "RecipeError",
    "RunError",
    "RunSettings",
    "Sink",
    "Strategy",
    "Student",
    "SubStep",
    "Task",
    "Teacher",
    "TeacherEstimate",
    "TeacherUsage",
    "TrainingExample",
    "TrainingContext",
    "TrainingSettings",
    "answers",
    "cache",
    "conform",
    "data",
    "hookimpl",
    "prompts",
]
