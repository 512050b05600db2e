"""harness: distil chain-of-thought reasoning from teacher models into small students.

The names below are the public surface plugins may import; everything else is private.
"""

from harness.errors import BadInputError, DataError, HarnessError, PluginError, RecipeError, RunError
from harness import answers, cache, data, prompts
from harness.hookspecs import hookimpl
from harness.types import (
    AnswerSpec,
    Example,
    Generation,
    GradedGeneration,
    Sink,
    Strategy,
    Student,
    SubStep,
    Task,
    Teacher,
    TrainingExample,
    TrainingContext,
    TrainingSettings,
)

__version__ = "0.1.0"

PUBLIC_MODULES = ("harness", "harness.answers", "harness.cache", "harness.data", "harness.generation",
                  "harness.prompts", "harness.testing")
"""What plugins may import. Everything else (pipeline, recipe, cli, rundir, ...) is private and may change."""

__all__ = [
    "PUBLIC_MODULES",
    "AnswerSpec",
    "BadInputError",
    "DataError",
    "Example",
    "Generation",
    "GradedGeneration",
    "HarnessError",
    "PluginError",
    "RecipeError",
    "RunError",
    "Sink",
    "Strategy",
    "Student",
    "SubStep",
    "Task",
    "Teacher",
    "TrainingExample",
    "TrainingContext",
    "TrainingSettings",
    "answers",
    "cache",
    "data",
    "hookimpl",
    "prompts",
]
