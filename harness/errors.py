"""Errors the harness raises on purpose. The CLI turns them into a message and an exit code.

Exit codes: 2 for bad input (recipe, data, plugin configuration) or an environment that refuses (a server, a
disk), 1 for a failure while running.
A traceback reaching the user means a bug in the harness, never a user mistake.
"""

from __future__ import annotations


class HarnessError(Exception):
    """Base class: a problem the user can act on. ``exit_code`` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class BadInputError(HarnessError):
    """Input the user gave (files, options, data) is wrong. Exit code 2."""

    exit_code = 2


class RecipeError(BadInputError):
    """A recipe has one or more problems; every problem is listed, one ``FILE: key.path: message`` per line."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class PluginError(BadInputError):
    """A plugin failed to load or registered something invalid."""


class DataError(BadInputError):
    """A data file is missing or malformed."""


class RunError(HarnessError):
    """A stage failed while running. Exit code 1; finished stages are kept."""


class EnvironmentFailure(HarnessError):
    """The environment refused while running (a server that died or errs, a disk that is full): exit code 2, as
    the CLI's error boundary gives such failures; finished stages are kept."""

    exit_code = 2


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, the CPU allocator's failure, or Python's MemoryError."""
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or (
        isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text))
