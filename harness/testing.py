"""Helpers for testing harness plugins (public API).

``plugin_registered(module)`` registers a plugin for the duration of a ``with`` block, so ``harness`` commands run
in-process (``harness.cli.main([...])``) and pipelines see it without installing a package. ``FakeTeacher`` and
``tiny_recipe`` give a plugin's tests a real run in seconds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from harness.plugins import EXTRA_PLUGINS
from harness.types import Example, Generation


@contextlib.contextmanager
def plugin_registered(*plugins: Any) -> Iterator[None]:
    """Register plugin modules (or objects with ``@hookimpl`` methods) while the block runs."""
    EXTRA_PLUGINS.extend(plugins)
    try:
        yield
    finally:
        for plugin in plugins:
            EXTRA_PLUGINS.remove(plugin)


class FakeTeacher:
    """A teacher that answers every question with a fixed rationale and the gold answer (or a fixed one)."""

    def __init__(self, rationale: str = "Because.", answer: str | None = None, samples: int = 1):
        self.rationale, self.answer, self.samples = rationale, answer, samples

    def generate(self, examples: Sequence[Example], task: Any, progress) -> list[list[Generation]]:
        out = []
        for e in examples:
            out.append([Generation(e.id, i, self.rationale, self.answer if self.answer is not None else e.answer)
                        for i in range(self.samples)])
            progress(1)
        return out


def tiny_recipe(output_dir: str, strategy: str = 'kind = "fine_tune_cot"', steps: int = 20) -> str:
    """A recipe (TOML text) that runs end to end in seconds: 200 synthetic problems, a 1-layer GPT-2."""
    return f"""[run]
name = "tiny"
output_dir = "{output_dir}/runs"

[task]
kind = "synthetic_arithmetic"
train_size = 200
validation_size = 0
test_size = 8

[teacher]
kind = "program"
samples = 2
temperature = 0.7

[[strategy]]
{strategy}

[[student]]
kind = "transformers"
tokenizer = "word"
architecture = {{ model_type = "gpt2", n_layer = 1, n_embd = 32, n_head = 2, n_positions = 256 }}

[training]
max_steps = {steps}
batch_size = 16

[evaluation]
max_gen_toks = 24

[[sink]]
kind = "local"
dir = "{output_dir}/results"
"""
